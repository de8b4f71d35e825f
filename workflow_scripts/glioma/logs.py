"""Logging set-up shared by the rule adapters."""

import logging
import sys
from pathlib import Path


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send log records to ``log_path`` (created with its folder) and to stderr.

    Args:
        log_path: the rule's ``log:`` file, or None for stderr only.
        level: logging level of the root logger.

    Returns:
        The ``glioma`` logger.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    return logging.getLogger("glioma")


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb) -> None:
    """Log an uncaught exception with its traceback, so the error lands in the rule's log file.

    Python's own hook writes to stderr only, which Snakemake does not keep beside the job's log.
    """
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("glioma").critical(
        "%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb)
    )

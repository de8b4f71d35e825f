"""Train the classifier from the command line, in one process or as one rank under torchrun.

    python -m torch.distributed.run --standalone --nproc_per_node=4 -m glioma.model.train_cli \\
        --shards results/shards/SITE-A results/shards/SITE-B --splits results/splits.tsv \\
        --out results/model --config results/model/config.yaml \\
        --state results/model/resume_state.pt

``--config`` is a resolved workflow config (every default filled), such as the ``config.yaml``
that training saves beside the model. Without torchrun (``WORLD_SIZE`` unset) this trains in one
process, exactly as the ``train_classifier`` rule does with one GPU. The rule starts this module
itself when it has several GPUs (see :mod:`glioma.model.launch`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from glioma.logs import setup_logging
from glioma.model import distributed
from glioma.model.distributed import SINGLE, Ranks
from glioma.model.training import train_classifier

log = logging.getLogger("glioma.model.train_cli")  # __name__ is __main__ under -m


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m glioma.model.train_cli", description=__doc__)
    parser.add_argument(
        "--shards", nargs="+", required=True, help="results/shards/{cohort} folders"
    )
    parser.add_argument("--splits", required=True, help="results/splits.tsv")
    parser.add_argument("--out", required=True, help="output folder (best.pt, last.pt, ...)")
    parser.add_argument("--config", required=True, help="resolved workflow config (YAML)")
    parser.add_argument("--state", help="resumable state file (default OUT/last.pt)")
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process")
    parser.add_argument("--log", help="log file, written by rank 0 (default: stderr only)")
    return parser.parse_args(argv)


def configure_logging(ranks: Ranks, log_path: str | None) -> None:
    """Rank 0 logs everything (to ``log_path`` too); other ranks only warnings, to stderr."""
    if ranks.main:
        setup_logging(log_path)
    else:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
        logging.captureWarnings(True)
    if ranks.distributed:
        # Lines of several ranks meet in one stream: say whose each is.
        fmt = f"%(asctime)s [rank {ranks.rank}] %(levelname)s %(name)s: %(message)s"
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(fmt))


def main(argv: Sequence[str] | None = None) -> int:
    """Train; returns the exit status."""
    args = parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    if args.threads:
        torch.set_num_threads(args.threads)
    ranks, device = (
        distributed.start(args.device) if distributed.launched() else (SINGLE, args.device)
    )
    configure_logging(ranks, args.log)
    log.info("rank %d of %d, on %s", ranks.rank, ranks.world_size, device or "the default device")
    try:
        train_classifier(
            args.shards,
            args.splits,
            args.out,
            config,
            state_path=args.state,
            device=device,
            progress=ranks.main,
            ranks=ranks,
        )
    finally:
        distributed.stop(ranks)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m glioma.demo --out DIR --patients N --spacing MM --seed S``.

``--missing FRACTION`` (0-1, default 0) leaves one sequence out for that share of patients
(see ``glioma.demo.cohort.generate_cohort``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from glioma.demo.cohort import generate_cohort
from glioma.logs import setup_logging


def _fraction(text: str) -> float:
    """Parse a share from 0 to 1 (argparse type); refuse anything else, NaN included."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the generator's command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m glioma.demo",
        description="Generate the synthetic multi-site glioma MRI demo cohort and its sheet.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--patients", type=int, default=36, help="total patients (default 36)")
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--cohorts", type=int, default=3, help="number of sites (default 3)")
    parser.add_argument(
        "--missing",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="share of patients (0-1) lacking one sequence: T1c, FLAIR, T1w, T2w in turn; "
        "empty sheet cell, no file (default 0)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the generator; return the process exit status."""
    args = parse_args(argv)
    logger = setup_logging(None)
    start = time.perf_counter()
    try:
        sheet = generate_cohort(
            args.out, args.patients, args.spacing, args.seed, args.cohorts, missing=args.missing
        )
    except ValueError as err:
        logger.error("%s", err)
        return 2
    logging.getLogger("glioma.demo").info(
        "%d patients in %.1f s -> %s", len(sheet), time.perf_counter() - start, args.out
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

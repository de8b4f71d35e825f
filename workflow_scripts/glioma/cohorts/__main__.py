"""Command line: build a sample sheet from a downloaded cohort, or merge sheets.

``python -m glioma.cohorts {ucsf-pdgm,egd,brats-tcga} FOLDER [--labels FILE] [--cohort NAME]
-o samples.tsv`` writes the sheet and prints what it included and skipped, and why;
``python -m glioma.cohorts merge A.tsv B.tsv ... -o samples.tsv`` joins sheets into one.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from glioma.cohorts import BUILDERS, merge_sheets, write_sheet
from glioma.errors import InputError
from glioma.logs import setup_logging
from glioma.samples import molecular_class


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m glioma.cohorts",
        description="Write the workflow's sample sheet from a downloaded public glioma cohort.",
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    for kind, builder in BUILDERS.items():
        default = inspect.signature(builder).parameters["cohort"].default
        sub = kinds.add_parser(kind, help=(builder.__doc__ or "").splitlines()[0])
        sub.add_argument("folder", type=Path, help="the downloaded cohort's folder")
        sub.add_argument("--labels", type=Path, help="label / metadata table (see docs)")
        sub.add_argument("--cohort", default=default, help=f"cohort name (default {default})")
        sub.add_argument("-o", "--out", type=Path, required=True, help="sheet to write (TSV)")
    merge = kinds.add_parser("merge", help="join sample sheets into one")
    merge.add_argument("sheets", type=Path, nargs="+", help="sheets to join")
    merge.add_argument("-o", "--out", type=Path, required=True, help="sheet to write (TSV)")
    return parser.parse_args(argv)


def summary(sheet: pd.DataFrame, skipped: pd.DataFrame | None = None) -> str:
    """Describe a sheet: patients and classes per cohort, then each skipped patient and why."""
    lines = []
    classes = [
        molecular_class(i, c) or "unlabelled"
        for i, c in zip(sheet["idh"], sheet["codeletion"], strict=True)
    ]
    counts = sheet.assign(label=classes).groupby(["cohort", "label"]).size()
    for cohort in sorted(sheet["cohort"].unique()):
        detail = ", ".join(f"{label} {n}" for label, n in counts[cohort].items())
        lines.append(f"included {int(counts[cohort].sum())} patients of {cohort}: {detail}")
    if sheet.empty:
        lines.append("included 0 patients")
    if skipped is not None:
        lines.append(f"skipped {len(skipped)} patients")
        lines += [f"  {row.patient}: {row.reason}" for row in skipped.itertuples()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the exit status (2 for bad input)."""
    args = parse_args(argv)
    logger = setup_logging(None)
    try:
        if args.kind == "merge":
            sheet, skipped = merge_sheets(args.sheets), None
        else:
            builder = BUILDERS[args.kind]
            sheet, skipped = builder(args.folder, labels=args.labels, cohort=args.cohort)
        write_sheet(sheet, args.out)
    except InputError as err:
        logger.error("%s", err)
        return 2
    print(summary(sheet, skipped))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

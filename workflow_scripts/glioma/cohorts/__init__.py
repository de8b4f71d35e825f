"""Sample-sheet builders for the public glioma cohorts, and sheet writing and merging.

``build_<kind>(folder, labels=None, cohort=...) -> (sheet, skipped)`` reads one downloaded
cohort; :func:`write_sheet` writes a sheet that ``glioma.samples.validate_sheet`` accepts;
:func:`merge_sheets` joins the sheets of several cohorts into one for a combined run.
See ``docs/cohorts.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from glioma.cohorts.brats_tcga import build_brats_tcga
from glioma.cohorts.common import SHEET_COLUMNS, SKIPPED_COLUMNS, log
from glioma.cohorts.egd import build_egd
from glioma.cohorts.ucsf_pdgm import build_ucsf_pdgm
from glioma.errors import InputError
from glioma.io import atomic_path
from glioma.samples import IMAGE_COLUMNS, read_sheet

__all__ = [
    "BUILDERS",
    "SHEET_COLUMNS",
    "SKIPPED_COLUMNS",
    "build_brats_tcga",
    "build_egd",
    "build_ucsf_pdgm",
    "merge_sheets",
    "write_sheet",
]

#: Command-line kind -> builder.
BUILDERS = {
    "ucsf-pdgm": build_ucsf_pdgm,
    "egd": build_egd,
    "brats-tcga": build_brats_tcga,
}


def _relative(path: str, base: Path) -> str:
    """Return ``path`` relative to ``base`` when it lies below ``base``, else absolute."""
    if path == "":
        return ""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return str(absolute)


def write_sheet(sheet: pd.DataFrame, out: str | Path) -> None:
    """Write a built sheet atomically as TSV, image paths relative to the sheet's folder.

    A path below the sheet's folder is written relative to it, so the sheet and its images
    move together; any other path is written absolute (``../`` chains break when either side
    moves on its own).
    """
    out = Path(out)
    base = out.absolute().parent.resolve()
    frame = sheet.loc[:, list(SHEET_COLUMNS)].copy()
    for column in IMAGE_COLUMNS:
        frame[column] = [_relative(p, base) for p in frame[column].astype(str)]
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def merge_sheets(sheets: Sequence[str | Path]) -> pd.DataFrame:
    """Join sample sheets (e.g. one per cohort) into one with absolute image paths.

    Raises:
        InputError: a sheet cannot be read, or a (cohort, patient) pair appears twice.
    """
    frames = []
    for sheet in sheets:
        path = Path(sheet)
        try:
            frame = read_sheet(path)
        except ValueError as err:
            raise InputError(str(err), path=path) from err
        base = path.absolute().parent
        for column in IMAGE_COLUMNS:
            frame[column] = [str(base / p) if p else "" for p in frame[column]]
        frame["source"] = str(path)
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    twice = merged[merged.duplicated(["cohort", "patient"], keep=False)]
    if len(twice):
        first = twice.iloc[0]
        files = sorted(set(twice.loc[twice["patient"] == first["patient"], "source"]))
        raise InputError(
            f"in cohort {first['cohort']!r} appears in more than one row ({', '.join(files)})",
            patient=first["patient"],
        )
    shared = merged[merged.duplicated("patient", keep=False)]
    for patient, rows in shared.groupby("patient"):
        log.warning("%s is in several cohorts: %s", patient, ", ".join(rows["cohort"]))
    return merged.loc[:, list(SHEET_COLUMNS)]

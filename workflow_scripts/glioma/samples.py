"""Sample sheet: reading, validation, molecular class and inclusion/exclusion.

The sheet is a TSV with one row per patient. Image paths are relative to the sheet's folder or
absolute. Every problem is reported with its line in the file, its column and its value, and all
problems are reported at once so a user fixes the sheet in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from glioma.constants import CLASSES, SAFE_ID_RE, SEQUENCES
from glioma.io import atomic_path, is_image_path

IMAGE_COLUMNS: tuple[str, ...] = (*SEQUENCES, "roi")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient",
    "cohort",
    *IMAGE_COLUMNS,
    "idh",
    "codeletion",
    "grade",
    "age",
    "sex",
)
OPTIONAL_COLUMNS: dict[str, str] = {"roi_on": "flair"}
ALLOWED: dict[str, tuple[str, ...]] = {
    "idh": ("wildtype", "mutant", ""),
    "codeletion": ("codeleted", "intact", ""),
    "grade": ("2", "3", "4", ""),
    "sex": ("M", "F", ""),
    "roi_on": SEQUENCES,
}
EXCLUSION_COLUMNS: tuple[str, ...] = ("patient", "cohort", "scope", "reason")
#: ``inclusion.missing_sequences``: exclude a patient lacking a sequence (the study), or keep it
#: when it has the sequence its ROI was drawn on and at least one more.
MISSING_POLICIES: tuple[str, ...] = ("exclude", "allow")


class SampleSheetError(ValueError):
    """The sample sheet has problems; the message lists each with line, column and value."""

    def __init__(self, sheet: Path, problems: list[str]) -> None:
        self.sheet = sheet
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"sample sheet {str(sheet)!r} has {len(problems)} problem(s):\n{listing}")


@dataclass(frozen=True)
class SheetResult:
    """A validated sheet: patients to process, and patients excluded with their reasons."""

    included: pd.DataFrame
    exclusions: pd.DataFrame


def molecular_class(idh: str, codeletion: str) -> str:
    """Return the WHO-2021 class of an IDH / 1p19q pair, or "" when it cannot be told."""
    if idh == "wildtype":
        return CLASSES[0]
    if idh == "mutant" and codeletion == "codeleted":
        return CLASSES[1]
    if idh == "mutant" and codeletion == "intact":
        return CLASSES[2]
    return ""


def read_sheet(path: str | Path) -> pd.DataFrame:
    """Read a TSV sample sheet as strings (no NA guessing), whitespace stripped.

    Raises:
        SampleSheetError: the file is missing, unreadable, or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(path, ["file does not exist"])
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise SampleSheetError(path, [f"cannot be parsed as TSV: {err}"]) from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SampleSheetError(
            path, [f"missing column {c!r} (columns found: {list(df.columns)})" for c in missing]
        )
    for column, default in OPTIONAL_COLUMNS.items():
        if column not in df.columns:
            df[column] = default
    df = df.apply(lambda col: col.str.strip())
    df["roi_on"] = df["roi_on"].replace("", OPTIONAL_COLUMNS["roi_on"])
    for column in ("idh", "codeletion", "roi_on"):
        df[column] = df[column].str.lower()
    df["sex"] = df["sex"].str.upper()
    return df


def _line(index: int) -> str:
    """Line number of a data row in the file (the header is line 1)."""
    return f"line {index + 2}"


def _where(df: pd.DataFrame, index: int, column: str) -> str:
    """Where a value sits: line, patient (when its ID is usable), column and the value itself."""
    patient = df.at[index, "patient"]
    who = f", patient {patient!r}" if SAFE_ID_RE.fullmatch(patient) else ""
    return f"{_line(index)}{who}, column {column!r}, value {df.at[index, column]!r}"


def _check_ids(df: pd.DataFrame) -> list[str]:
    problems = []
    for index, row in df.iterrows():
        for column in ("patient", "cohort"):
            value = row[column]
            if not SAFE_ID_RE.fullmatch(value):
                problems.append(
                    f"{_line(index)}, column {column!r}, value {value!r}: not a safe ID "
                    "(letters, digits, '-' and '_' only, starting with a letter or digit)"
                )
    duplicated = df.duplicated(subset=["cohort", "patient"], keep="first")
    for index in df.index[duplicated]:
        first = df.index[
            (df["cohort"] == df.at[index, "cohort"]) & (df["patient"] == df.at[index, "patient"])
        ][0]
        problems.append(
            f"{_line(index)}, column 'patient', value {df.at[index, 'patient']!r}: duplicate ID "
            f"in cohort {df.at[index, 'cohort']!r} (first seen on {_line(first)})"
        )
    return problems


def _check_values(df: pd.DataFrame) -> list[str]:
    problems = []
    for column, allowed in ALLOWED.items():
        for index, value in df[column].items():
            if value not in allowed:
                choices = " | ".join(repr(a) for a in allowed if a) + (
                    " | empty" if "" in allowed else ""
                )
                problems.append(f"{_where(df, index, column)}: expected {choices}")
    for index, value in df["age"].items():
        if value == "":
            continue
        try:
            age = float(value)
        except ValueError:
            age = math.nan
        if not (math.isfinite(age) and 0 <= age <= 120):
            problems.append(f"{_where(df, index, 'age')}: expected years (0-120) or empty")
    return problems


def _check_paths(df: pd.DataFrame, base: Path) -> tuple[list[str], pd.DataFrame]:
    problems = []
    resolved = df.copy()
    for column in IMAGE_COLUMNS:
        for index, value in df[column].items():
            if value == "":
                continue
            path = Path(value) if Path(value).is_absolute() else base / value
            if not path.exists():
                # An error, not an exclusion: a path that leads nowhere is a typo or a share
                # that is not mounted, and excluding would shrink the cohort unnoticed. An
                # empty cell is how a sheet says an image does not exist (exclusions.tsv).
                problems.append(
                    f"{_where(df, index, column)}: file not found (looked for {str(path)!r}; "
                    "leave the cell empty if the image was not acquired)"
                )
            elif not is_image_path(path):
                problems.append(
                    f"{_where(df, index, column)}: not an image "
                    "(expected .nii, .nii.gz, .nrrd, .seg.nrrd or a DICOM series folder)"
                )
            resolved.at[index, column] = str(path.resolve())
    return problems, resolved


def missing_of(row: Mapping[str, str]) -> list[str]:
    """The sequences a sheet row lacks (empty cells), in channel order."""
    return [s for s in SEQUENCES if row[s] == ""]


def _check_roi_sequence(df: pd.DataFrame) -> list[str]:
    """Under ``missing_sequences: allow``: a patient must have the sequence its ROI was drawn on
    (the ROI is placed through that sequence's registration)."""
    problems = []
    for index, row in df.iterrows():
        sequence = row["roi_on"]
        if sequence in SEQUENCES and row[sequence] == "" and row["roi"] != "":
            problems.append(
                f"{_where(df, index, sequence)}: the ROI was drawn on {sequence} (column "
                f"'roi_on'), which is not given: add the {sequence} image, or set roi_on to the "
                "sequence whose grid the ROI lies on"
            )
    return problems


def _exclusions(df: pd.DataFrame, min_age_exclusive: float, missing_sequences: str) -> pd.DataFrame:
    rows = []
    for _, row in df.iterrows():
        missing = missing_of(row)
        reasons = []
        if row["roi"] == "":
            reasons.append("missing roi")
        if missing and missing_sequences == "exclude":
            reasons.append(f"missing {', '.join(missing)}")
        elif len(missing) >= len(SEQUENCES) - 1:
            present = [s for s in SEQUENCES if s not in missing]
            reasons.append(
                f"only {', '.join(present) or 'no sequence'}: needs the ROI's sequence "
                f"({row['roi_on']}) and at least one more"
            )
        if row["age"] != "" and float(row["age"]) <= min_age_exclusive:
            reasons.append(f"age {row['age']} <= {min_age_exclusive:g}")
        if reasons:
            rows.append((row["patient"], row["cohort"], "all", "; ".join(reasons)))
        elif row["class"] == "":
            reason = (
                f"label unknown (idh={row['idh'] or 'empty'}, "
                f"codeletion={row['codeletion'] or 'empty'}): predicted, never trained "
                "or evaluated on"
            )
            rows.append((row["patient"], row["cohort"], "training", reason))
    return pd.DataFrame(rows, columns=list(EXCLUSION_COLUMNS))


def validate_sheet(
    path: str | Path, *, min_age_exclusive: float = 18, missing_sequences: str = "exclude"
) -> SheetResult:
    """Validate a sample sheet and apply the study's inclusion criteria.

    An empty image cell means the image was not acquired; a named file that does not exist is
    an error.

    Args:
        path: the TSV sample sheet.
        min_age_exclusive: patients at or below this age are excluded.
        missing_sequences: ``exclude`` (the study): a patient lacking any sequence is excluded;
            ``allow``: it is kept when it has the sequence its ROI was drawn on (``roi_on``,
            else refused as a sheet problem) and at least one more. A patient without an ROI
            is always excluded.

    Returns:
        ``included``: patients to process (an ROI and the sequences the policy requires, age
        above the limit or unknown), with absolute image paths (empty where not acquired) and
        a ``class`` column ("" = unlabelled);
        ``exclusions``: one row per excluded patient with ``scope`` ``all`` (not processed) or
        ``training`` (processed and predicted, never trained or evaluated on) and a reason.

    Raises:
        SampleSheetError: listing every problem with its line, column and value.
    """
    if missing_sequences not in MISSING_POLICIES:
        raise ValueError(
            f"inclusion.missing_sequences: {missing_sequences!r}; expected one of "
            f"{list(MISSING_POLICIES)}"
        )
    path = Path(path)
    df = read_sheet(path)
    problems = _check_ids(df) + _check_values(df)
    if missing_sequences == "allow":
        problems += _check_roi_sequence(df)
    path_problems, resolved = _check_paths(df, path.resolve().parent)
    problems += path_problems
    if problems:
        raise SampleSheetError(path, problems)
    resolved["class"] = [
        molecular_class(i, c) for i, c in zip(resolved["idh"], resolved["codeletion"], strict=True)
    ]
    exclusions = _exclusions(resolved, min_age_exclusive, missing_sequences)
    dropped = exclusions.loc[exclusions["scope"] == "all", ["cohort", "patient"]]
    keys = pd.MultiIndex.from_frame(resolved[["cohort", "patient"]])
    keep = ~keys.isin(pd.MultiIndex.from_frame(dropped))
    columns = [*REQUIRED_COLUMNS, "roi_on", "class"]
    included = resolved.loc[keep, columns].reset_index(drop=True)
    return SheetResult(included=included, exclusions=exclusions)


def write_validated(
    result: SheetResult, samples_out: str | Path, exclusions_out: str | Path
) -> None:
    """Write the validated sheet and the exclusions table atomically as TSV."""
    for frame, out in ((result.included, samples_out), (result.exclusions, exclusions_out)):
        with atomic_path(out) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)

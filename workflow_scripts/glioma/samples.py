"""Sample sheet: reading, validation, molecular class and inclusion/exclusion.

The sheet is a TSV with one row per patient. Image paths are relative to the sheet's folder or
absolute. Every problem is reported with its line in the file, its column and its value, and all
problems are reported at once so a user fixes the sheet in one pass.
"""

from __future__ import annotations

import math
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
                    "leave the cell empty to exclude the patient instead)"
                )
            elif not is_image_path(path):
                problems.append(
                    f"{_where(df, index, column)}: not an image "
                    "(expected .nii, .nii.gz, .nrrd, .seg.nrrd or a DICOM series folder)"
                )
            resolved.at[index, column] = str(path.resolve())
    return problems, resolved


def _exclusions(df: pd.DataFrame, min_age_exclusive: float) -> pd.DataFrame:
    rows = []
    for _, row in df.iterrows():
        missing = [c for c in IMAGE_COLUMNS if row[c] == ""]
        reasons = []
        if missing:
            reasons.append(f"missing {', '.join(missing)}")
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


def validate_sheet(path: str | Path, *, min_age_exclusive: float = 18) -> SheetResult:
    """Validate a sample sheet and apply the study's inclusion criteria.

    Args:
        path: the TSV sample sheet.
        min_age_exclusive: patients at or below this age are excluded.

    Returns:
        ``included``: patients to process (all four sequences and an ROI present, age above the
        limit or unknown), with absolute image paths and a ``class`` column ("" = unlabelled);
        ``exclusions``: one row per excluded patient with ``scope`` ``all`` (not processed) or
        ``training`` (processed and predicted, never trained or evaluated on) and a reason.

    Raises:
        SampleSheetError: listing every problem with its line, column and value.
    """
    path = Path(path)
    df = read_sheet(path)
    problems = _check_ids(df) + _check_values(df)
    path_problems, resolved = _check_paths(df, path.resolve().parent)
    problems += path_problems
    if problems:
        raise SampleSheetError(path, problems)
    resolved["class"] = [
        molecular_class(i, c) for i, c in zip(resolved["idh"], resolved["codeletion"], strict=True)
    ]
    exclusions = _exclusions(resolved, min_age_exclusive)
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

"""Shared pieces of the cohort sheet builders: values, image look-up and label tables.

Each builder turns one public cohort's download into rows of the sample sheet that
``glioma.samples.validate_sheet`` accepts. A patient that cannot be used (a missing sequence, a
follow-up scan, two candidate files for one sequence) is never dropped silently: the builder
raises :class:`SkipPatient` for it and the reason lands in the ``skipped`` table.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from glioma.constants import SAFE_ID_RE
from glioma.errors import InputError
from glioma.samples import IMAGE_COLUMNS, REQUIRED_COLUMNS

log = logging.getLogger("glioma.cohorts")

#: Columns of a built sheet, in order (``roi_on`` last, as validate_sheet treats it as optional).
SHEET_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "roi_on")
SKIPPED_COLUMNS: tuple[str, ...] = ("patient", "reason")
LABEL_KEYS: tuple[str, ...] = ("idh", "codeletion", "grade", "age", "sex")

#: Cell values that mean "not known" in any of the cohorts' tables (compared lower-cased).
#: EGD codes unknown as -1; TCGA tables use NA and bracketed GDC tokens; UCSF uses "unknown".
UNKNOWN: frozenset[str] = frozenset(
    {"", "-1", "-1.0", "na", "nan", "n/a", "none", "null", "unknown", "not available"}
    | {"[unknown]", "[not available]", "[not applicable]", "[not evaluated]", "[discrepancy]"}
)
_GRADES = {"2": "2", "3": "3", "4": "4", "ii": "2", "iii": "3", "iv": "4"}
_SEXES = {"m": "M", "male": "M", "f": "F", "female": "F"}
_IMAGE_ENDINGS = (".nii.gz", ".nii")

Labels = dict[str, str]


class SkipPatient(Exception):
    """This patient cannot be used; ``reason`` goes to the skipped table."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def clean(value: object) -> str:
    """Return a cell as a stripped string, or "" when it means unknown (see ``UNKNOWN``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    return "" if text.lower() in UNKNOWN else text


def empty_labels() -> Labels:
    """Return labels with every field unknown."""
    return dict.fromkeys(LABEL_KEYS, "")


def merge_labels(base: Labels, override: Labels) -> Labels:
    """Return ``base`` with every known (non-empty) value of ``override`` put over it."""
    return {key: override.get(key) or base.get(key, "") for key in LABEL_KEYS}


def _number_text(value: str) -> str:
    """Turn "2.0" (a float column read back) into "2"; leave anything else as is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:g}" if math.isfinite(number) else value


def parse_grade(value: object, **where: object) -> str:
    """Return a WHO grade as "2", "3", "4" or "" (unknown); accepts 2, 2.0, G2, II, grade 2.

    Raises:
        InputError: any other value (``where`` names patient, column and path).
    """
    text = clean(value).lower()
    if text == "":
        return ""
    text = _number_text(re.sub(r"^(who\s*)?(cns\s*)?(grade\s*|g)?", "", text).strip())
    if text not in _GRADES:
        raise InputError(f"grade {clean(value)!r} is not 2, 3 or 4 (nor unknown)", **where)
    return _GRADES[text]


def parse_age(value: object, **where: object) -> str:
    """Return an age in years as text ("" when unknown).

    Raises:
        InputError: not a number between 0 and 120.
    """
    text = clean(value)
    if text == "":
        return ""
    try:
        age = float(text)
    except ValueError:
        age = math.nan
    if not (math.isfinite(age) and 0 <= age <= 120):
        raise InputError(f"age {text!r} is not a number of years (0-120)", **where)
    return f"{age:g}"


def parse_sex(value: object, **where: object) -> str:
    """Return "M", "F" or "" (unknown) from M/F/male/female in any case.

    Raises:
        InputError: any other value.
    """
    text = clean(value).lower()
    if text == "":
        return ""
    if text not in _SEXES:
        raise InputError(f"sex {clean(value)!r} is not M, F, male or female", **where)
    return _SEXES[text]


def check_folder(folder: Path, cohort: str) -> Path:
    """Check the download folder exists and the cohort name is a safe ID; return the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("download folder does not exist", path=folder)
    if not SAFE_ID_RE.fullmatch(cohort):
        raise InputError(f"cohort name {cohort!r} is not a safe ID (letters, digits, '-', '_')")
    return folder


def find_dirs(root: Path, pattern: re.Pattern[str]) -> dict[str, list[Path]]:
    """Find folders under ``root`` whose name fully matches ``pattern``, keyed by group 1.

    A matching folder is not searched further, so a patient's own sub-folders are never
    mistaken for patients.
    """
    found: dict[str, list[Path]] = {}
    for parent, dirs, _files in os.walk(root):
        keep = []
        for name in sorted(dirs):
            match = pattern.fullmatch(name)
            if match:
                found.setdefault(match.group(1), []).append(Path(parent) / name)
            else:
                keep.append(name)
        dirs[:] = keep
    return found


def _image_stem(name: str) -> str | None:
    """Return a NIfTI file name without its suffix, or None for other files."""
    lower = name.lower()
    for ending in _IMAGE_ENDINGS:
        if lower.endswith(ending):
            return lower[: -len(ending)]
    return None


def collect_images(
    folder: Path, wanted: Mapping[str, tuple[str, ...]], *, exact: bool = False
) -> tuple[dict[str, Path], dict[str, str]]:
    """Find one NIfTI file per sheet column in a patient folder.

    Args:
        folder: the patient's folder.
        wanted: sheet column -> name endings (or whole names when ``exact``) without
            ``.nii[.gz]``, in order of preference; matching ignores case.
        exact: match whole names instead of endings.

    Returns:
        The file per column, and per column the ending that matched it.

    Raises:
        SkipPatient: a column has no file, or two files for its best ending (``.nii.gz`` is
            preferred over ``.nii`` of the same name).
    """
    stems = {}
    for path in sorted(folder.iterdir()):
        stem = _image_stem(path.name)
        if stem is not None and path.is_file():
            stems.setdefault(stem, []).append(path)
    found: dict[str, Path] = {}
    tags: dict[str, str] = {}
    missing = []
    for column, endings in wanted.items():
        for ending in endings:
            key = ending.lower()
            hits = [s for s in stems if (s == key if exact else s.endswith(key))]
            if len(hits) > 1:
                names = ", ".join(sorted(p.name for s in hits for p in stems[s]))
                raise SkipPatient(f"{column}: more than one candidate file ({names})")
            if hits:
                paths = sorted(stems[hits[0]], key=lambda p: not p.name.endswith(".gz"))
                found[column], tags[column] = paths[0], ending
                break
        else:
            missing.append(f"{column} (no {' or '.join(repr(e) for e in endings)})")
    if missing:
        raise SkipPatient(f"missing {', '.join(missing)} in {folder.name}")
    return found, tags


def sheet_row(
    patient: str, cohort: str, images: Mapping[str, Path], roi_on: str, labels: Labels
) -> dict[str, str]:
    """Return one sheet row with absolute image paths."""
    row = {"patient": patient, "cohort": cohort, "roi_on": roi_on}
    row |= {column: str(Path(images[column]).absolute()) for column in IMAGE_COLUMNS}
    row |= {key: labels.get(key, "") for key in LABEL_KEYS}
    return row


def frames(
    rows: Iterable[Mapping[str, str]], skipped: Iterable[tuple[str, str]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the sheet and the skipped table as frames with their fixed columns, sorted."""
    sheet = pd.DataFrame(list(rows), columns=list(SHEET_COLUMNS), dtype=str)
    sheet = sheet.sort_values(["cohort", "patient"], kind="stable").reset_index(drop=True)
    skip = pd.DataFrame(list(skipped), columns=list(SKIPPED_COLUMNS), dtype=str)
    return sheet, skip.sort_values("patient", kind="stable").reset_index(drop=True)


def column_key(name: object) -> str:
    """Reduce a column name to lower-case letters and digits, so R's ``make.names`` spellings
    (``X1p.19q.codeletion``, ``Age..years.at.diagnosis.``), GDC's ``paper_`` prefix and the
    original headers (``1p/19q codeletion``, ``Age (years at diagnosis)``) all agree."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower()).removeprefix("paper")
    return key[1:] if re.fullmatch(r"x\d.*", key) else key


def _read_raw(path: Path) -> list[pd.DataFrame]:
    """Read every sheet of a table file as strings with no header and no NA guessing."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xls"):
        try:
            book = pd.read_excel(path, header=None, dtype=str, sheet_name=None)
        except ImportError as err:
            raise InputError(
                f"reading {suffix} needs openpyxl ({err}); install it or save the table as CSV",
                path=path,
            ) from err
        return [frame.fillna("") for frame in book.values()]
    with path.open(encoding="utf-8-sig", newline="") as handle:
        text = handle.read()
    first = text.split("\n", 1)[0]
    tabbed = suffix in (".tsv", ".txt") or first.count("\t") > first.count(",")
    # csv rather than pandas: a title row above the header may have fewer fields.
    rows = list(csv.reader(io.StringIO(text), delimiter="\t" if tabbed else ","))
    width = max((len(r) for r in rows), default=0)
    return [pd.DataFrame([r + [""] * (width - len(r)) for r in rows], dtype=str)]


def read_table(path: str | Path, id_keys: Iterable[str]) -> pd.DataFrame:
    """Read a CSV, TSV or Excel table whose header row holds one of ``id_keys``.

    The header may follow title rows (as in supplementary tables); its column names are
    reduced with :func:`column_key`. Cells are stripped strings.

    Raises:
        InputError: missing, unreadable, or no header row with an ID column in the first rows.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("label table does not exist", path=path)
    keys = set(id_keys)
    try:
        raws = _read_raw(path)
    except (csv.Error, UnicodeDecodeError, ValueError, OSError) as err:
        raise InputError(f"cannot be read as a table ({err})", path=path) from err
    for raw in raws:
        for index in range(min(10, len(raw))):
            header = [column_key(c) for c in raw.iloc[index]]
            if keys & set(header):
                body = raw.iloc[index + 1 :].apply(lambda col: col.astype(str).str.strip())
                body.columns = header
                return body.loc[:, ~pd.Index(header).duplicated()].reset_index(drop=True)
    raise InputError(f"no header row with an ID column ({' or '.join(sorted(keys))})", path=path)


def find_column(table: pd.DataFrame, keys: Iterable[str]) -> str | None:
    """Return the first of ``keys`` (see :func:`column_key`) that is a column of ``table``."""
    return next((k for k in keys if k in table.columns), None)

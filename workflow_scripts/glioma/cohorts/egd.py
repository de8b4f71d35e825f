"""EGD (Erasmus Glioma Database): ``SUBJECTS/EGD-0001/{T1,T1GD,T2,FLAIR,MASK}.nii.gz``.

Labels come from three places, later ones overriding earlier ones wherever they are known:

1. the tables in ``METADATA/`` (``Genetic_and_Histological_labels`` with ``Subject, IDH, 1p19q,
   Grade``; ``Clinical_data`` with ``Subject, Age, Sex``; ``.csv``, ``.tsv`` or ``.xlsx``),
2. each subject's ``metadata.json`` (``Genetic_and_Histological_labels`` {``IDH``, ``1p19q``,
   ``Grade``} and ``Clinical_data`` {``Age``, ``Sex``}),
3. the table given with ``--labels`` (a ``Subject`` column and any of those columns).

Codes: IDH 0 = wildtype, 1 = mutant; 1p19q 0 = intact, 1 = codeleted; -1 (and blank) = unknown,
which leaves the patient unlabelled. Images are registered to MNI152 2009a (197x233x189, 1 mm)
and ``MASK`` is on that grid, so ``roi_on`` is ``t1c``. The download ships one atlas-space
brain mask for all subjects (``METADATA/Brain_mask.nii.gz``) rather than skull-stripped scans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from glioma.cohorts.common import (
    Labels,
    SkipPatient,
    check_folder,
    clean,
    collect_images,
    empty_labels,
    find_column,
    find_dirs,
    frames,
    merge_labels,
    parse_age,
    parse_grade,
    parse_sex,
    read_table,
    sheet_row,
)
from glioma.errors import InputError

DEFAULT_COHORT = "EGD"
ROI_ON = "t1c"
FILES: dict[str, tuple[str, ...]] = {
    "t1w": ("T1",),
    "t1c": ("T1GD",),
    "t2w": ("T2",),
    "flair": ("FLAIR",),
    "roi": ("MASK",),
}
SUBJECT_RE = re.compile(r"(EGD-\d+)", re.IGNORECASE)
TABLES = ("Genetic_and_Histological_labels", "Clinical_data")
_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx")
_IDH = {"0": "wildtype", "1": "mutant", "wildtype": "wildtype", "mutant": "mutant"}
_IDH |= {"wild-type": "wildtype", "wt": "wildtype", "mutated": "mutant"}
_CODEL = {"0": "intact", "1": "codeleted", "intact": "intact", "codeleted": "codeleted"}
_CODEL |= {"co-deleted": "codeleted", "non-codeleted": "intact"}
#: label -> (metadata.json section, key); table columns use the same keys (see column_key).
FIELDS: dict[str, tuple[str, str]] = {
    "idh": ("Genetic_and_Histological_labels", "IDH"),
    "codeletion": ("Genetic_and_Histological_labels", "1p19q"),
    "grade": ("Genetic_and_Histological_labels", "Grade"),
    "age": ("Clinical_data", "Age"),
    "sex": ("Clinical_data", "Sex"),
}


def _coded(mapping: dict[str, str], what: str) -> Callable[..., str]:
    """Return a parser of a 0 / 1 / -1 coded column (also accepting the words)."""

    def parse(value: object, **where: object) -> str:
        text = clean(value).lower()
        text = text[:-2] if text.endswith(".0") else text  # 1.0 from a float column
        if text == "":
            return ""
        if text not in mapping:
            raise InputError(f"{what} value {clean(value)!r} is not 0, 1 or -1", **where)
        return mapping[text]

    return parse


PARSERS = {
    "idh": _coded(_IDH, "IDH"),
    "codeletion": _coded(_CODEL, "1p19q"),
    "grade": parse_grade,
    "age": parse_age,
    "sex": parse_sex,
}


def parse_labels(values: dict[str, object], *, patient: str, path: Path) -> Labels:
    """Parse raw values keyed like ``FIELDS`` (missing keys are unknown) into sheet labels."""
    labels = empty_labels()
    for key, raw in values.items():
        labels[key] = PARSERS[key](raw, patient=patient, column=FIELDS[key][1], path=path)
    return labels


def read_subject_json(path: Path, patient: str) -> Labels:
    """Read one subject's ``metadata.json`` into labels.

    Raises:
        InputError: not valid JSON, not an object, or a value that cannot be mapped.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"is not valid JSON ({err})", patient=patient, path=path) from err
    if not isinstance(data, dict):
        raise InputError("is not a JSON object", patient=patient, path=path)
    values = {}
    for key, (section, name) in FIELDS.items():
        block = data.get(section)
        if isinstance(block, dict) and name in block:
            values[key] = block[name]
    return parse_labels(values, patient=patient, path=path)


def read_labels_table(path: Path) -> dict[str, Labels]:
    """Read an EGD table (``Subject`` plus any of IDH, 1p19q, Grade, Age, Sex) into labels.

    Raises:
        InputError: no ``Subject`` column, a repeated subject, or a value that cannot be mapped.
    """
    table = read_table(path, id_keys=["subject"])
    columns = {key: find_column(table, [name.lower()]) for key, (_, name) in FIELDS.items()}
    if not any(columns.values()):
        raise InputError(
            f"no label column (IDH, 1p19q, Grade, Age, Sex) in {list(table.columns)}", path=path
        )
    labels: dict[str, Labels] = {}
    for _, row in table.iterrows():
        match = SUBJECT_RE.fullmatch(row["subject"])
        if not match:
            continue  # blank or note lines below the table
        patient = match.group(1).upper()
        if patient in labels:
            raise InputError("subject listed twice", patient=patient, path=path)
        values = {key: row[column] for key, column in columns.items() if column}
        labels[patient] = parse_labels(values, patient=patient, path=path)
    return labels


def _metadata_tables(folder: Path) -> list[Path]:
    """Return the label tables in the download's ``METADATA`` folder (beside ``SUBJECTS``)."""
    top = folder.parent if folder.name.upper() == "SUBJECTS" else folder
    found = []
    for stem in TABLES:
        for suffix in _TABLE_SUFFIXES:
            path = top / "METADATA" / f"{stem}{suffix}"
            if path.is_file():
                found.append(path)
                break
    return found


def _labels_of(patient: str, folder: Path, tables: list[dict[str, Labels]]) -> Labels:
    """Merge the labels of one subject: METADATA tables, then metadata.json, then --labels."""
    *defaults, explicit = tables
    labels = empty_labels()
    for table in defaults:
        labels = merge_labels(labels, table.get(patient, {}))
    if (folder / "metadata.json").is_file():
        labels = merge_labels(labels, read_subject_json(folder / "metadata.json", patient))
    return merge_labels(labels, explicit.get(patient, {}))


def build_egd(
    folder: Path, labels: Path | None = None, cohort: str = DEFAULT_COHORT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build sample-sheet rows for an EGD download.

    Args:
        folder: the download (holding ``SUBJECTS/`` and ``METADATA/``), or its ``SUBJECTS``.
        labels: an optional table overriding the per-subject labels.
        cohort: the cohort name written in the sheet.

    Returns:
        ``(sheet, skipped)`` data frames.

    Raises:
        InputError: no subject folder, or labels that cannot be read.
    """
    folder = check_folder(folder, cohort)
    subjects = folder / "SUBJECTS" if (folder / "SUBJECTS").is_dir() else folder
    found = find_dirs(subjects, SUBJECT_RE)
    if not found:
        raise InputError("no EGD-NNNN subject folder found", path=subjects)
    tables = [read_labels_table(p) for p in _metadata_tables(folder)]
    tables.append(read_labels_table(Path(labels)) if labels is not None else {})
    rows, skipped = [], []
    for name, dirs in sorted(found.items()):
        patient = name.upper()
        try:
            if len(dirs) > 1:
                raise SkipPatient(f"found in {len(dirs)} folders: {', '.join(map(str, dirs))}")
            images, _ = collect_images(dirs[0], FILES, exact=True)
        except SkipPatient as skip:
            skipped.append((patient, skip.reason))
            continue
        merged = _labels_of(patient, dirs[0], tables)
        rows.append(sheet_row(patient, cohort, images, ROI_ON, merged))
    return frames(rows, skipped)

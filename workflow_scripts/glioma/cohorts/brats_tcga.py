"""TCGA-LGG and TCGA-GBM as segmented by BraTS-TCGA (Bakas 2017), labelled by Ceccarelli 2016.

Images: ``TCGA-02-0006/TCGA-02-0006_1996.08.23_{t1,t1Gd,t2,flair,GlistrBoost,
GlistrBoost_ManuallyCorrected}.nii.gz`` in the ``Pre-operative_TCGA_{LGG,GBM}_NIfTI_and_
Segmentations`` folders. The manually corrected segmentation is preferred; the automatic
``GlistrBoost`` one is used where no corrected one exists (logged). Skull-stripped and
co-registered (SRI24, 240x240x155, 1 mm); ``roi_on`` is ``flair``.

Labels: the TCGA pan-glioma table (Ceccarelli et al. 2016, Cell, Table S1), either as
published (``Case``, ``IDH status``, ``1p/19q codeletion``, ``IDH/codel subtype``, ``Grade``,
``Age (years at diagnosis)``, ``Gender``, ``Study``) or as exported from R / TCGAbiolinks
(``patient``, ``IDH.status``, ``X1p.19q.codeletion``, ``IDH.codel.subtype``,
``Age..years.at.diagnosis.``, optionally ``paper_``-prefixed). Values: IDH ``Mutant`` / ``WT``;
1p/19q ``codel`` / ``non-codel``; subtype ``IDHwt`` / ``IDHmut-codel`` / ``IDHmut-non-codel``;
grade ``G2``-``G4``; gender ``male`` / ``female``; ``NA`` = unknown. The status columns win
where known, the subtype fills gaps; where they disagree the patient is left unlabelled.
"""

from __future__ import annotations

import re
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
    log,
    parse_age,
    parse_grade,
    parse_sex,
    read_table,
    sheet_row,
)
from glioma.errors import InputError

DEFAULT_COHORT = "TCGA-{collection}"
ROI_ON = "flair"
PATIENT_RE = re.compile(r"(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})", re.IGNORECASE)
_FILE_RE = re.compile(r"(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})_([^_]+)_.+\.nii(\.gz)?", re.IGNORECASE)
_COLLECTION_RE = re.compile(r"TCGA[_-](LGG|GBM)(?![A-Za-z])", re.IGNORECASE)
FILES: dict[str, tuple[str, ...]] = {
    "t1w": ("_t1",),
    "t1c": ("_t1Gd",),
    "t2w": ("_t2",),
    "flair": ("_flair",),
    "roi": ("_GlistrBoost_ManuallyCorrected", "_GlistrBoost"),
}
_COLUMNS = {
    "id": ("case", "patient", "bcrpatientbarcode", "casesubmitterid", "submitterid", "sample"),
    "idh": ("idhstatus",),
    "codeletion": ("1p19qcodeletion",),
    "subtype": ("idhcodelsubtype",),
    "grade": ("grade",),
    "age": ("ageyearsatdiagnosis", "ageatdiagnosis", "age"),
    "sex": ("gender", "sex"),
    "study": ("study",),
}
_IDH = {"mutant": "mutant", "mut": "mutant", "wt": "wildtype", "wildtype": "wildtype"}
_CODEL = {"codel": "codeleted", "non-codel": "intact", "noncodel": "intact"}
_SUBTYPE = {
    "idhwt": ("wildtype", ""),
    "idhmut-codel": ("mutant", "codeleted"),
    "idhmut-non-codel": ("mutant", "intact"),
}
_STUDY = {"brain lower grade glioma": "LGG", "glioblastoma multiforme": "GBM"}


def _lookup(mapping: dict[str, object], value: object, what: str, **where: object) -> object:
    """Map a cell through ``mapping`` ("" when unknown); an unlisted value is an error."""
    text = clean(value).lower()
    if text == "":
        return mapping.get("", "")
    if text not in mapping:
        raise InputError(f"{what} value {clean(value)!r} is not one of {sorted(mapping)}", **where)
    return mapping[text]


def _row_labels(row: pd.Series, columns: dict[str, str | None], **where: object) -> Labels:
    """Turn one table row into labels; status columns first, the subtype filling gaps."""
    cell = {key: row[column] if column else "" for key, column in columns.items()}
    at = {key: {**where, "column": column} for key, column in columns.items()}
    idh = _lookup(_IDH, cell["idh"], "IDH.status", **at["idh"])
    codel = _lookup(_CODEL, cell["codeletion"], "X1p.19q.codeletion", **at["codeletion"])
    subtypes = {**_SUBTYPE, "": ("", "")}
    sub_idh, sub_codel = _lookup(subtypes, cell["subtype"], "IDH.codel.subtype", **at["subtype"])
    if (idh and sub_idh and idh != sub_idh) or (codel and sub_codel and codel != sub_codel):
        log.warning(
            "%s: IDH/1p19q status (%s, %s) disagrees with subtype %r; left unlabelled",
            where.get("patient"),
            idh or "NA",
            codel or "NA",
            cell["subtype"],
        )
        idh = codel = sub_idh = sub_codel = ""
    labels = empty_labels()
    labels.update(idh=idh or sub_idh, codeletion=codel or sub_codel)
    labels["grade"] = parse_grade(cell["grade"], **at["grade"])
    labels["age"] = parse_age(cell["age"], **at["age"])
    labels["sex"] = parse_sex(cell["sex"], **at["sex"])
    return labels


def read_pan_glioma(path: Path) -> tuple[dict[str, Labels], dict[str, str]]:
    """Read the pan-glioma table into labels and collection (LGG/GBM) per 12-character case.

    Raises:
        InputError: no case or IDH column, or a value that cannot be mapped.
    """
    table = read_table(path, id_keys=_COLUMNS["id"])
    columns = {key: find_column(table, names) for key, names in _COLUMNS.items()}
    if not (columns["idh"] or columns["subtype"]):
        raise InputError(
            f"no IDH.status or IDH.codel.subtype column in {list(table.columns)}", path=path
        )
    labels: dict[str, Labels] = {}
    studies: dict[str, str] = {}
    for _, row in table.iterrows():
        match = PATIENT_RE.match(row[columns["id"]])
        if not match:
            continue  # blank or note lines
        patient = match.group(1).upper()
        parsed = _row_labels(row, columns, patient=patient, path=path)
        if patient in labels and labels[patient] != parsed:
            log.warning("%s: conflicting rows in %s; left unlabelled", patient, path.name)
            parsed = empty_labels()
        labels[patient] = parsed
        study = _STUDY.get(clean(row[columns["study"]]).lower()) if columns["study"] else None
        if study:
            studies[patient] = study
    return labels, studies


def _check_one_scan(folder: Path, patient: str) -> None:
    """Check the folder holds the files of one scan date (BraTS-TCGA has one per patient).

    Raises:
        SkipPatient: no ``<patient>_<date>_<sequence>.nii.gz`` file, or several dates.
    """
    dates = sorted({m.group(2) for p in folder.iterdir() if (m := _FILE_RE.fullmatch(p.name))})
    if not dates:
        raise SkipPatient(f"no {patient}_<date>_<sequence>.nii.gz file in {folder.name}")
    if len(dates) > 1:
        raise SkipPatient(f"several scan dates {dates} in {folder.name}; keep one per patient")


def _collection(path: Path, patient: str, studies: dict[str, str]) -> str | None:
    """Return LGG or GBM from the folder path (``..._TCGA_LGG_...``) or the table's Study."""
    for part in reversed(path.absolute().parts):
        match = _COLLECTION_RE.search(part)
        if match:
            return match.group(1).upper()
    return studies.get(patient)


def build_brats_tcga(
    folder: Path, labels: Path | None = None, cohort: str = DEFAULT_COHORT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build sample-sheet rows for BraTS-TCGA downloads (LGG, GBM or both below ``folder``).

    Args:
        folder: the download; patient folders ``TCGA-XX-XXXX`` anywhere below it.
        labels: the pan-glioma table (CSV, TSV or XLSX); without it every patient is
            unlabelled (predicted, never trained or evaluated on).
        cohort: the cohort name; ``{collection}`` is replaced by LGG or GBM, told from the
            folder path (``Pre-operative_TCGA_LGG_...``) or else the table's ``Study``.

    Returns:
        ``(sheet, skipped)`` data frames.

    Raises:
        InputError: no patient folder, a bad cohort name, or a table that cannot be read.
    """
    folder = check_folder(folder, cohort.replace("{collection}", "LGG"))
    found = find_dirs(folder, PATIENT_RE)
    if not found:
        raise InputError("no TCGA-XX-XXXX patient folder found below", path=folder)
    table, studies = read_pan_glioma(Path(labels)) if labels is not None else ({}, {})
    if labels is None:
        log.warning("no pan-glioma table given: every TCGA patient is unlabelled")
    rows, skipped = [], []
    for name, dirs in sorted(found.items()):
        patient = name.upper()
        try:
            if len(dirs) > 1:
                raise SkipPatient(f"found in {len(dirs)} folders: {', '.join(map(str, dirs))}")
            _check_one_scan(dirs[0], patient)
            images, tags = collect_images(dirs[0], FILES)
            collection = _collection(dirs[0], patient, studies)
            if "{collection}" in cohort and collection is None:
                raise SkipPatient("cannot tell TCGA-LGG from TCGA-GBM: pass --cohort NAME")
        except SkipPatient as skip:
            skipped.append((patient, skip.reason))
            continue
        if tags["roi"] != FILES["roi"][0]:
            log.info("%s: automatic GlistrBoost segmentation (no corrected one)", patient)
        if labels is not None and patient not in table:
            log.warning("%s: not in %s; included unlabelled", patient, Path(labels).name)
        cohort_name = cohort.replace("{collection}", collection or "")
        rows.append(sheet_row(patient, cohort_name, images, ROI_ON, table.get(patient, {})))
    return frames(rows, skipped)

"""UCSF-PDGM (TCIA): ``UCSF-PDGM-0004_nifti/`` folders and ``UCSF-PDGM-metadata_v*.csv``.

Hazards handled here:

* The metadata's IDs have 3 digits (``UCSF-PDGM-004``), the folders 4 (``UCSF-PDGM-0004``):
  both are reduced to 4 digits.
* ``IDH`` holds ``wildtype`` or a mutation (``mutated (NOS)``, ``IDH1 p.R132H``,
  ``IDH2 p.R172K``, ``IDH1 p.Arg132His``...): every recognised mutation is ``mutant``;
  blank or ``unknown`` is unknown; any other text is an error, never a guess.
* ``1p/19q`` holds ``intact``, ``co-deletion``, ``relative co-deletion``, ``unknown`` or blank.
  Only ``co-deletion`` is codeleted. ``relative co-deletion`` (a relative loss, e.g. from
  polysomy, not the whole-arm codeletion WHO 2021 requires for oligodendroglioma) is left
  unknown, so such a patient is predicted but never trained or evaluated on.
* Follow-up scans ``UCSF-PDGM-0391_FU016d`` repeat a patient: skipped, the pre-operative scan
  is kept. Releases before v3 gave these six scans their own IDs (``LEGACY_FOLLOW_UPS``); they
  are skipped too, so no patient enters a split twice.
* Images are co-registered (240x240x155, 1 mm) and skull-stripped; the tumour segmentation is
  on that same grid, so ``roi_on`` is ``t1c`` (the workflow's reference): no registration
  estimate ever moves the ROI. The ``*_bias``, SWI, DWI, ASL and other files are ignored.
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

DEFAULT_COHORT = "UCSF-PDGM"
ROI_ON = "t1c"
FILES: dict[str, tuple[str, ...]] = {
    "t1w": ("_T1",),
    "t1c": ("_T1c",),
    "t2w": ("_T2",),
    "flair": ("_FLAIR",),
    "roi": ("_tumor_segmentation",),
}
FOLDER_RE = re.compile(r"(UCSF-PDGM-\d+(?:_FU[0-9A-Za-z]+)?)(?:_nifti)?", re.IGNORECASE)
_ID_RE = re.compile(r"UCSF-PDGM-(\d+)(_FU[0-9A-Za-z]+)?", re.IGNORECASE)
#: Pre-v3 IDs of the six follow-up scans -> the patient they follow (TCIA version notes: v3
#: renamed e.g. UCSF-PDGM-0315 to UCSF-PDGM-0433_FU007d).
LEGACY_FOLLOW_UPS: dict[str, str] = {
    "UCSF-PDGM-0315": "UCSF-PDGM-0433",
    "UCSF-PDGM-0278": "UCSF-PDGM-0431",
    "UCSF-PDGM-0175": "UCSF-PDGM-0396",
    "UCSF-PDGM-0138": "UCSF-PDGM-0429",
    "UCSF-PDGM-0181": "UCSF-PDGM-0409",
    "UCSF-PDGM-0289": "UCSF-PDGM-0391",
}
_MUTATION_RE = re.compile(r"mutat|mutant|idh[12]|p\.\w*\d|r1[37]\d", re.IGNORECASE)
_NEGATION_RE = re.compile(r"\b(not|non|no|negative)\b", re.IGNORECASE)
_CODELETION = {"intact": "intact", "co-deletion": "codeleted", "relative co-deletion": ""}
_COLUMNS = {
    "sex": ("sex",),
    "age": ("ageatmri", "age"),
    "grade": ("whocnsgrade", "grade"),
    "codeletion": ("1p19q",),
    "idh": ("idh",),
}


def normalise_id(raw: str) -> str | None:
    """Return a UCSF-PDGM ID with 4 digits (``UCSF-PDGM-004`` -> ``UCSF-PDGM-0004``), keeping a
    follow-up suffix (``UCSF-PDGM-0391_FU016d``); None when ``raw`` is not such an ID."""
    match = _ID_RE.fullmatch(raw.strip())
    if not match:
        return None
    return f"UCSF-PDGM-{int(match.group(1)):04d}{match.group(2) or ''}"


def parse_idh(value: object, **where: object) -> str:
    """Map the metadata's ``IDH`` text to wildtype / mutant / "" (unknown)."""
    text = clean(value)
    if text == "":
        return ""
    if text.lower().replace("-", "").replace(" ", "") in ("wildtype", "wt"):
        return "wildtype"
    if _MUTATION_RE.search(text) and not _NEGATION_RE.search(text):
        return "mutant"
    raise InputError(f"IDH value {text!r} is neither wildtype nor a mutation", **where)


def parse_codeletion(value: object, **where: object) -> str:
    """Map the metadata's ``1p/19q`` text to codeleted / intact / "" (unknown or relative)."""
    text = " ".join(clean(value).lower().split())
    if text == "":
        return ""
    if text not in _CODELETION:
        raise InputError(f"1p/19q value {text!r} is not one of {sorted(_CODELETION)}", **where)
    return _CODELETION[text]


def find_metadata(folder: Path) -> Path:
    """Return the newest ``UCSF-PDGM-metadata*.csv`` in ``folder`` or one level below.

    Raises:
        InputError: none found.
    """
    found = sorted(folder.glob("UCSF-PDGM-metadata*.csv")) + sorted(
        folder.glob("*/UCSF-PDGM-metadata*.csv")
    )
    if not found:
        raise InputError(
            "no UCSF-PDGM-metadata_v*.csv here or one folder below; pass it with --labels",
            path=folder,
        )
    version = lambda p: [int(n) for n in re.findall(r"\d+", p.name)] or [0]  # noqa: E731
    return max(found, key=version)


def read_metadata(path: Path) -> dict[str, Labels]:
    """Read the metadata CSV into labels per 4-digit patient ID.

    Raises:
        InputError: a missing column, an ID that is not a UCSF-PDGM ID, a repeated ID, or a
            value that cannot be mapped (naming patient, column and file).
    """
    table = read_table(path, id_keys=["id"])
    columns = {key: find_column(table, names) for key, names in _COLUMNS.items()}
    missing = [names[0] for key, names in _COLUMNS.items() if columns[key] is None]
    if missing:
        raise InputError(f"missing column(s) {missing}; found {list(table.columns)}", path=path)
    parsers = {
        "idh": parse_idh,
        "codeletion": parse_codeletion,
        "grade": parse_grade,
        "age": parse_age,
        "sex": parse_sex,
    }
    labels: dict[str, Labels] = {}
    for index, row in table.iterrows():
        patient = normalise_id(row["id"])
        if patient is None:
            if row["id"] == "":
                continue  # trailing blank lines
            raise InputError(f"ID {row['id']!r} is not UCSF-PDGM-NNN", path=path, row=index + 2)
        if patient in labels:
            raise InputError("patient listed twice", patient=patient, path=path)
        labels[patient] = {
            key: parse(row[columns[key]], patient=patient, column=columns[key], path=path)
            for key, parse in parsers.items()
        }
    return labels


def _skip_reason(patient: str, present: set[str]) -> str | None:
    """Return why a scan is a follow-up to skip, or None for a pre-operative scan."""
    match = _ID_RE.fullmatch(patient)
    if match and match.group(2):
        base = f"UCSF-PDGM-{int(match.group(1)):04d}"
        kept = "kept" if base in present else "not in this download"
        return f"follow-up scan ({match.group(2)[1:]}) of {base}; pre-operative scan {kept}"
    if patient in LEGACY_FOLLOW_UPS:
        base = LEGACY_FOLLOW_UPS[patient]
        return f"pre-v3 ID of a follow-up scan of {base} (renamed {base}_FU... in v3)"
    return None


def build_ucsf_pdgm(
    folder: Path, labels: Path | None = None, cohort: str = DEFAULT_COHORT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build sample-sheet rows for a UCSF-PDGM download.

    Args:
        folder: the download (patient folders anywhere below it).
        labels: the metadata CSV; by default the newest ``UCSF-PDGM-metadata*.csv`` in
            ``folder`` or one level below.
        cohort: the cohort name written in the sheet.

    Returns:
        ``(sheet, skipped)`` data frames: sheet rows with absolute paths, and the patients
        left out with the reason (follow-ups, missing files, metadata rows with no images).

    Raises:
        InputError: no patient folder, no or malformed metadata.
    """
    folder = check_folder(folder, cohort)
    metadata_path = Path(labels) if labels is not None else find_metadata(folder)
    metadata = read_metadata(metadata_path)
    found = {normalise_id(k): v for k, v in find_dirs(folder, FOLDER_RE).items()}
    if not found:
        raise InputError("no UCSF-PDGM-NNNN_nifti patient folder found below", path=folder)
    rows, skipped = [], []
    for patient, dirs in sorted(found.items()):
        try:
            reason = _skip_reason(patient, set(found))
            if reason:
                raise SkipPatient(reason)
            if len(dirs) > 1:
                raise SkipPatient(f"found in {len(dirs)} folders: {', '.join(map(str, dirs))}")
            images, _ = collect_images(dirs[0], FILES)
        except SkipPatient as skip:
            skipped.append((patient, skip.reason))
            continue
        if patient not in metadata:
            log.warning("%s: no row in %s; included unlabelled", patient, metadata_path.name)
        rows.append(sheet_row(patient, cohort, images, ROI_ON, metadata.get(patient, {})))
    for patient in sorted(set(metadata) - set(found)):
        reason = _skip_reason(patient, set(found)) or "in the metadata but no image folder found"
        skipped.append((patient, reason))
    return frames(rows, skipped)

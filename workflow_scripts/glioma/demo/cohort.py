"""Demo cohorts: demographics per class, per-site scanners, and the files and sheet they write."""

from __future__ import annotations

import dataclasses
import json
import logging
import string
from pathlib import Path

import numpy as np
import pandas as pd

from glioma.constants import CLASSES, SEQUENCES
from glioma.demo import acquisition as acq
from glioma.demo.anatomy import Atlas, load_atlas
from glioma.demo.patient import Patient, make_patient
from glioma.io import atomic_path, write_image

log = logging.getLogger(__name__)

#: Sample sheet columns, in order (paths relative to the sheet's folder).
SHEET_COLUMNS: tuple[str, ...] = (
    "patient",
    "cohort",
    *SEQUENCES,
    "roi",
    "roi_on",
    "idh",
    "codeletion",
    "grade",
    "age",
    "sex",
)

# Table 1 of the reproduced study: class mix, age (mean, SD) per class, share of men.
CLASS_MIX: dict[str, float] = {"IDHwt": 0.62, "IDHmut-codel": 0.13, "IDHmut-intact": 0.25}
AGE: dict[str, tuple[float, float]] = {
    "IDHwt": (60.2, 12.9),
    "IDHmut-codel": (48.3, 13.0),
    "IDHmut-intact": (38.5, 11.4),
}
MIN_AGE = 19.0
MALE_SHARE = 0.415
# WHO CNS5 grades: IDH-wildtype glioblastoma is grade 4 (a few older grade 2-3 diagnoses
# remain in retrospective cohorts); oligodendroglioma 2-3; IDH-mutant astrocytoma 2-4.
GRADES: dict[str, dict[int, float]] = {
    "IDHwt": {2: 0.04, 3: 0.08, 4: 0.88},
    "IDHmut-codel": {2: 0.55, 3: 0.45},
    "IDHmut-intact": {2: 0.4, 3: 0.4, 4: 0.2},
}
LABELS: dict[str, tuple[str, str]] = {
    "IDHwt": ("wildtype", ""),
    "IDHmut-codel": ("mutant", "codeleted"),
    "IDHmut-intact": ("mutant", "intact"),
}

# Seed roles, so streams for different purposes never share random numbers.
_CLASSES_STREAM, _SCANNER_STREAM, _PATIENT_STREAM = 1, 2, 3


def allocate_classes(rng: np.random.Generator, n: int) -> list[str]:
    """Draw the classes of a cohort of ``n`` patients, close to ``CLASS_MIX``.

    Counts follow the mix by largest remainder (ties broken at random); every class appears
    at least once when ``n >= 3``, so each cohort can contribute to every class.
    """
    shares = np.array([CLASS_MIX[c] for c in CLASSES]) * n
    counts = np.floor(shares).astype(int)
    order = np.lexsort((rng.random(len(CLASSES)), -(shares - counts)))
    counts[order[: n - counts.sum()]] += 1
    if n >= len(CLASSES):
        for index in np.flatnonzero(counts == 0):
            counts[counts.argmax()] -= 1
            counts[index] += 1
    classes = [c for c, k in zip(CLASSES, counts, strict=True) for _ in range(k)]
    return [classes[i] for i in rng.permutation(n)]


def demographics(rng: np.random.Generator, cls: str) -> dict[str, object]:
    """Draw labels, grade, age (years, one decimal) and sex of one patient of class ``cls``."""
    idh, codeletion = LABELS[cls]
    grades = GRADES[cls]
    grade = int(rng.choice(list(grades), p=list(grades.values())))
    mean, sd = AGE[cls]
    age = round(max(MIN_AGE, float(rng.normal(mean, sd))), 1)
    sex = "M" if rng.random() < MALE_SHARE else "F"
    return {"idh": idh, "codeletion": codeletion, "grade": grade, "age": age, "sex": sex}


def cohort_scanner(seed: int, index: int) -> acq.Scanner:
    """Return the scanner of cohort ``index``: the three sites, then jittered copies of them."""
    base = acq.SCANNERS[index % len(acq.SCANNERS)]
    if index < len(acq.SCANNERS):
        return base
    rng = np.random.default_rng([seed, _SCANNER_STREAM, index])
    return dataclasses.replace(
        base,
        gain=base.gain * float(rng.uniform(0.7, 1.3)),
        noise=base.noise * float(rng.uniform(0.7, 1.3)),
        bias=base.bias * float(rng.uniform(0.8, 1.2)),
    )


def _matrix(m: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in m]


def truth_record(patient: Patient, cls: str) -> dict[str, object]:
    """Ground truth of one patient as JSON-ready data (see the package docstring)."""
    centre = np.append(patient.centre_world, 1)
    return {
        "class": cls,
        "world_from_scanner": {s: _matrix(m) for s, m in patient.world_from_scanner.items()},
        "atlas_from_world": _matrix(patient.atlas_from_world),
        "tumour": {
            "centre_world": [round(float(v), 3) for v in patient.centre_world],
            "centre_scanner": {
                s: [round(float(v), 3) for v in (np.linalg.inv(m) @ centre)[:3]]
                for s, m in patient.world_from_scanner.items()
            },
            "radius_mm": round(patient.tumour.radius, 3),
            "signs": {
                k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in patient.tumour.signs.items()
            },
        },
    }


def write_patient(
    patient: Patient, scanner: acq.Scanner, cls: str, image_dir: Path, truth_dir: Path
) -> dict[str, str]:
    """Write one patient's images, ROI and truth files; return the image paths by column."""
    paths = {}
    for seq in SEQUENCES:
        paths[seq] = image_dir / f"{seq}{scanner.suffix}"
        write_image(acq.to_image(patient.images[seq], patient.grids[seq]), paths[seq])
        write_image(
            acq.to_image(patient.wm_masks[seq], patient.grids[seq]),
            truth_dir / f"wm_mask_{seq}.nii.gz",
        )
        # Rounded to steps of 1/512 (0.2%), exact in binary, so the smooth field compresses
        # well and writes fast; far finer than any bias correction recovers.
        bias = np.round(patient.bias[seq] * 512) / 512
        write_image(acq.to_image(bias, patient.grids[seq]), truth_dir / f"bias_{seq}.nii.gz")
    paths["roi"] = image_dir / f"roi{scanner.roi_suffix}"
    write_image(acq.to_image(patient.roi, patient.grids["flair"]), paths["roi"])
    write_image(
        acq.to_image(patient.brain_mask_t1c, patient.grids["t1c"]),
        truth_dir / "brain_mask_t1c.nii.gz",
    )
    with atomic_path(truth_dir / "truth.json") as tmp:
        tmp.write_text(json.dumps(truth_record(patient, cls), indent=1) + "\n")
    return {k: str(v) for k, v in paths.items()}


def _split(n_patients: int, n_cohorts: int) -> list[int]:
    """Spread patients over cohorts as evenly as possible (earlier cohorts get the extra)."""
    base, extra = divmod(n_patients, n_cohorts)
    return [base + (i < extra) for i in range(n_cohorts)]


def _write_cohort(out: Path, atlas: Atlas, seed: int, k: int, size: int) -> list[dict]:
    """Generate and write cohort number ``k`` of ``size`` patients; return its sheet rows."""
    letter = string.ascii_uppercase[k]
    cohort, scanner = f"SITE-{letter}", cohort_scanner(seed, k)
    classes = allocate_classes(np.random.default_rng([seed, _CLASSES_STREAM, k]), size)
    rows = []
    for i, cls in enumerate(classes):
        patient_id = f"DEMO-{letter}-{i + 1:03d}"
        # One stream per patient, so its draws do not depend on how its neighbours drew.
        rng = np.random.default_rng([seed, _PATIENT_STREAM, k, i])
        info = demographics(rng, cls)
        patient = make_patient(rng, atlas, scanner, cls, atlas.spacing)
        image_dir, truth_dir = out / cohort / patient_id, out / "truth" / cohort / patient_id
        paths = write_patient(patient, scanner, cls, image_dir, truth_dir)
        relative = {c: Path(p).relative_to(out).as_posix() for c, p in paths.items()}
        rows.append({"patient": patient_id, "cohort": cohort, **relative, "roi_on": "flair"})
        rows[-1].update(info)
        log.info("wrote %s/%s (%s)", cohort, patient_id, cls)
    return rows


def generate_cohort(
    out: Path, n_patients: int, spacing: float = 2.0, seed: int = 0, n_cohorts: int = 3
) -> pd.DataFrame:
    """Generate the demo cohorts under ``out`` and write ``out/samples.tsv``.

    Args:
        out: output folder (created); images go to ``out/<cohort>/<patient>/``, ground truth
            to ``out/truth/<cohort>/<patient>/``.
        n_patients: total number of patients, spread evenly over the cohorts.
        spacing: base voxel size in mm (2 for the demo, 4 for fast tests).
        seed: seed of every random draw; the same arguments give byte-identical files.
        n_cohorts: number of sites (at most 26), named ``SITE-A``, ``SITE-B``, ...

    Returns:
        The sample sheet as written (paths relative to ``out``).

    Raises:
        ValueError: on a count or spacing out of range.
    """
    if not 1 <= n_cohorts <= len(string.ascii_uppercase):
        raise ValueError(f"n_cohorts must be 1-26, got {n_cohorts}")
    if n_patients < n_cohorts:
        raise ValueError(f"need at least one patient per cohort: {n_patients} < {n_cohorts}")
    if not 0.5 <= spacing <= 8.0:
        raise ValueError(f"spacing must be 0.5-8 mm, got {spacing}")
    out = Path(out)
    atlas = load_atlas(float(spacing))
    rows = []
    for k, size in enumerate(_split(n_patients, n_cohorts)):
        rows += _write_cohort(out, atlas, seed, k, size)
    sheet = pd.DataFrame(rows, columns=list(SHEET_COLUMNS))
    with atomic_path(out / "samples.tsv") as tmp:
        sheet.to_csv(tmp, sep="\t", index=False)
    return sheet

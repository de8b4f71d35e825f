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

#: The sequence each patient chosen to lack one loses, cycling over them in patient order.
MISSING_ORDER: tuple[str, ...] = ("t1c", "flair", "t1w", "t2w")
#: Where the ROI is drawn when FLAIR was not acquired: T2w, acquired much like FLAIR.
ROI_FALLBACK = "t2w"

# Seed roles, so streams for different purposes never share random numbers.
_CLASSES_STREAM, _SCANNER_STREAM, _PATIENT_STREAM, _MISSING_STREAM = 1, 2, 3, 4


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


def choose_missing(seed: int, sizes: list[int], fraction: float) -> dict[tuple[int, int], str]:
    """Choose the patients that lack a sequence, and the sequence each lacks.

    ``round(fraction * sum(sizes))`` patients are chosen, spread over the cohorts as evenly as
    their sizes allow (a seeded draw picks which patients, and which cohorts take one more).
    The draw has its own random stream, so the rest of the cohort does not depend on it. Each
    chosen patient lacks exactly one sequence, cycling through ``MISSING_ORDER`` over them in
    patient order (cohort, then number): any three lack T1c, FLAIR and T1w respectively.

    Args:
        seed: the cohort's seed.
        sizes: patients per cohort, in cohort order.
        fraction: share of patients that lack a sequence, 0-1.

    Returns:
        ``(cohort index, patient index) -> lost sequence``, for the chosen patients only.
    """
    count = round(fraction * sum(sizes))
    if count == 0:
        return {}
    rng = np.random.default_rng([seed, _MISSING_STREAM])
    orders = [rng.permutation(size) for size in sizes]
    cohorts = rng.permutation(len(sizes))
    # Round robin over the cohorts (in a drawn order), each giving its next drawn patient.
    picks = [
        (int(k), int(orders[k][r])) for r in range(max(sizes)) for k in cohorts if r < sizes[k]
    ]
    chosen = sorted(picks[:count])
    return {key: MISSING_ORDER[j % len(MISSING_ORDER)] for j, key in enumerate(chosen)}


def _matrix(m: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in m]


def truth_record(patient: Patient, cls: str, missing: tuple[str, ...] = ()) -> dict[str, object]:
    """Ground truth of one patient as JSON-ready data (see the package docstring).

    Args:
        patient: the rendered patient.
        cls: its molecular class.
        missing: sequences not acquired; listed under ``"missing"`` when there are any (the
            key is absent otherwise, so complete patients' records are as they always were).

    Returns:
        The record; poses and tumour centres cover all four sequences even when one is missing
        (``brain_mask_t1c`` stays placed by the T1c pose).
    """
    centre = np.append(patient.centre_world, 1)
    record: dict[str, object] = {
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
    if missing:
        record["missing"] = [s for s in SEQUENCES if s in missing]
    return record


def write_patient(
    patient: Patient,
    scanner: acq.Scanner,
    cls: str,
    image_dir: Path,
    truth_dir: Path,
    missing: tuple[str, ...] = (),
) -> dict[str, str]:
    """Write one patient's images, ROI and truth files.

    Args:
        patient: the rendered patient (its ROI on the ``patient.roi_on`` grid).
        scanner: the site's conventions (file suffixes).
        cls: its molecular class.
        image_dir: folder of the images and the ROI.
        truth_dir: folder of the ground truth.
        missing: sequences not acquired: no image, white matter mask or bias field is
            written for them.

    Returns:
        Image paths by sheet column; an empty string for a sequence in ``missing``.

    Raises:
        ValueError: the ROI's sequence is missing, or fewer than two sequences remain.
    """
    if patient.roi_on in missing or len(SEQUENCES) - len(set(missing)) < 2:
        raise ValueError(f"cannot leave out {list(missing)} with the ROI on {patient.roi_on}")
    paths = {}
    for seq in SEQUENCES:
        if seq in missing:
            # Nothing for it on disk, not even a file left by an earlier run into ``out``.
            for stale in (
                image_dir / f"{seq}{scanner.suffix}",
                truth_dir / f"wm_mask_{seq}.nii.gz",
                truth_dir / f"bias_{seq}.nii.gz",
            ):
                stale.unlink(missing_ok=True)
            paths[seq] = ""
            continue
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
    write_image(acq.to_image(patient.roi, patient.grids[patient.roi_on]), paths["roi"])
    write_image(
        acq.to_image(patient.brain_mask_t1c, patient.grids["t1c"]),
        truth_dir / "brain_mask_t1c.nii.gz",
    )
    with atomic_path(truth_dir / "truth.json") as tmp:
        tmp.write_text(json.dumps(truth_record(patient, cls, missing), indent=1) + "\n")
    return {k: str(v) for k, v in paths.items()}


def _split(n_patients: int, n_cohorts: int) -> list[int]:
    """Spread patients over cohorts as evenly as possible (earlier cohorts get the extra)."""
    base, extra = divmod(n_patients, n_cohorts)
    return [base + (i < extra) for i in range(n_cohorts)]


def _write_cohort(
    out: Path, atlas: Atlas, seed: int, k: int, size: int, lost: dict[tuple[int, int], str]
) -> list[dict]:
    """Generate and write cohort number ``k`` of ``size`` patients; return its sheet rows.

    ``lost`` is ``choose_missing``'s answer: the sequence a patient lacks, by (cohort, index).
    """
    letter = string.ascii_uppercase[k]
    cohort, scanner = f"SITE-{letter}", cohort_scanner(seed, k)
    classes = allocate_classes(np.random.default_rng([seed, _CLASSES_STREAM, k]), size)
    rows = []
    for i, cls in enumerate(classes):
        patient_id = f"DEMO-{letter}-{i + 1:03d}"
        # One stream per patient, so its draws do not depend on how its neighbours drew.
        rng = np.random.default_rng([seed, _PATIENT_STREAM, k, i])
        info = demographics(rng, cls)
        missing = (lost[k, i],) if (k, i) in lost else ()
        roi_on = ROI_FALLBACK if "flair" in missing else "flair"
        patient = make_patient(rng, atlas, scanner, cls, atlas.spacing, roi_on=roi_on)
        image_dir, truth_dir = out / cohort / patient_id, out / "truth" / cohort / patient_id
        paths = write_patient(patient, scanner, cls, image_dir, truth_dir, missing)
        relative = {c: Path(p).relative_to(out).as_posix() if p else "" for c, p in paths.items()}
        rows.append({"patient": patient_id, "cohort": cohort, **relative, "roi_on": roi_on})
        rows[-1].update(info)
        lacking = f", no {missing[0]}" if missing else ""
        log.info("wrote %s/%s (%s%s)", cohort, patient_id, cls, lacking)
    return rows


def generate_cohort(
    out: Path,
    n_patients: int,
    spacing: float = 2.0,
    seed: int = 0,
    n_cohorts: int = 3,
    missing: float = 0.0,
) -> pd.DataFrame:
    """Generate the demo cohorts under ``out`` and write ``out/samples.tsv``.

    Args:
        out: output folder (created); images go to ``out/<cohort>/<patient>/``, ground truth
            to ``out/truth/<cohort>/<patient>/``.
        n_patients: total number of patients, spread evenly over the cohorts.
        spacing: base voxel size in mm (2 for the demo, 4 for fast tests).
        seed: seed of every random draw; the same arguments give byte-identical files.
        n_cohorts: number of sites (at most 26), named ``SITE-A``, ``SITE-B``, ...
        missing: share of patients (0-1) that lack one sequence: ``round(missing *
            n_patients)`` of them, chosen by ``choose_missing``, get an empty sheet cell and
            no image for it; one lacking FLAIR has its ROI on the T2w grid (``roi_on`` t2w)
            and every other patient on FLAIR. Its own random stream: with 0 the output is
            byte-identical to a cohort generated without missing sequences, and the images a
            patient keeps are the same whatever ``missing`` is.

    Returns:
        The sample sheet as written (paths relative to ``out``; "" for a missing sequence).

    Raises:
        ValueError: on a count, spacing or share out of range.
    """
    if not 1 <= n_cohorts <= len(string.ascii_uppercase):
        raise ValueError(f"n_cohorts must be 1-26, got {n_cohorts}")
    if n_patients < n_cohorts:
        raise ValueError(f"need at least one patient per cohort: {n_patients} < {n_cohorts}")
    if not 0.5 <= spacing <= 8.0:
        raise ValueError(f"spacing must be 0.5-8 mm, got {spacing}")
    if not 0.0 <= missing <= 1.0:
        raise ValueError(f"missing must be a share of patients from 0 to 1, got {missing}")
    out = Path(out)
    atlas = load_atlas(float(spacing))
    sizes = _split(n_patients, n_cohorts)
    lost = choose_missing(seed, sizes, missing)
    rows = []
    for k, size in enumerate(sizes):
        rows += _write_cohort(out, atlas, seed, k, size, lost)
    sheet = pd.DataFrame(rows, columns=list(SHEET_COLUMNS))
    with atomic_path(out / "samples.tsv") as tmp:
        sheet.to_csv(tmp, sep="\t", index=False)
    return sheet

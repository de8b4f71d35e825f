"""One cohort's patient pages from the run's outputs (:mod:`glioma.report.patient_page`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from glioma.constants import SAFE_ID_RE, SEQUENCES
from glioma.dataset.splits import read_splits
from glioma.dataset.writer import atomic_dir
from glioma.errors import InputError
from glioma.model.explain import read_index
from glioma.report.explained import read_bundle
from glioma.report.patient_page import PatientPage, write_patient_page
from glioma.report.tables import not_acquired, read_table

#: The bundle fields a page shows.
BUNDLE_FIELDS = ("id", "created", "models", "classes", "training_cohort", "temperature")


def bundle_identity(bundle_dir: str | Path) -> dict:
    """The bundle's identity as a page shows it."""
    import glioma

    bundle = read_bundle(bundle_dir)
    identity = {key: bundle.get(key) for key in BUNDLE_FIELDS}
    identity["model_name"] = bundle.get("settings", {}).get("model.name", "")
    identity["workflow_version"] = bundle.get("packages", {}).get("glioma", glioma.__version__)
    return identity


def sequences_not_acquired(sheet_path: str | Path, cohort: str) -> dict[str, list[str]]:
    """Patient -> the sequences it lacks (empty cells of the validated sheet), for one cohort.

    Raises:
        InputError: the sheet is missing, or lacks a sequence's column.
    """
    sheet = read_table(sheet_path, ("patient", "cohort", *SEQUENCES))
    rows = sheet[sheet["cohort"] == cohort].to_dict("records")
    return {str(row["patient"]): not_acquired(row) for row in rows}


def write_cohort_pages(
    cohort: str,
    predictions_path: str | Path,
    out_dir: str | Path,
    *,
    splits_path: str | Path,
    qc: Sequence[str | Path],
    saliency_dir: str | Path,
    bundle_dir: str | Path,
    review_threshold: float,
    sheet_path: str | Path | None = None,
) -> list[Path]:
    """Write ``out_dir/{patient}.html`` for every predicted patient of ``cohort`` (atomically).

    Args:
        cohort: the cohort.
        predictions_path: ``results/predictions/predictions.csv``.
        splits_path: ``results/splits.tsv`` (each patient's true class, "" when unknown).
        out_dir: ``results/patients/{cohort}``.
        qc: the cohort's ``results/qc/{cohort}/{patient}.png``.
        saliency_dir: ``results/saliency/{cohort}`` (pictures and index.json).
        bundle_dir: the model bundle that made the predictions.
        review_threshold: ``evaluate.review_entropy``.
        sheet_path: ``results/cohort/samples.tsv``, which says the sequences each patient lacks
            (None, or a patient it does not list: the page says it is not recorded).

    Returns:
        The pages written (under their final paths).

    Raises:
        InputError: a patient ID is unsafe, or a patient's QC or saliency picture is missing
            (naming the patient and the file); no page of the cohort is written then.
    """
    predictions = pd.read_csv(predictions_path, dtype={"cohort": str, "patient": str})
    predictions = predictions[predictions["cohort"] == cohort]
    splits = read_splits(splits_path)
    truth = dict(
        zip(
            splits["patient"][splits["cohort"] == cohort],
            splits["class"][splits["cohort"] == cohort],
            strict=True,
        )
    )
    qc_of = {Path(p).stem: Path(p) for p in qc}
    index = read_index(saliency_dir)["patients"]
    identity = bundle_identity(bundle_dir)
    lacking = sequences_not_acquired(sheet_path, cohort) if sheet_path is not None else {}
    written = []
    with atomic_dir(out_dir) as tmp:
        for row in predictions.to_dict("records"):
            patient = str(row["patient"])
            if not SAFE_ID_RE.fullmatch(patient):
                raise InputError(f"{patient!r} is not a safe ID", column="patient",
                                 path=predictions_path)  # fmt: skip
            if patient not in qc_of:
                raise InputError("no QC picture among the inputs", patient=patient, path=out_dir)
            row["class"] = truth.get(patient, "")
            entry = index.get(patient)
            page = PatientPage(
                cohort=cohort,
                patient=patient,
                prediction=row,
                qc_png=qc_of[patient],
                saliency_png=Path(saliency_dir) / f"{patient}.png" if entry else None,
                saliency_method=entry["method"] if entry else "",
                slices=entry["slices"] if entry else [],
                shown_slices=entry["shown"] if entry else [],
                bundle=identity,
                review_threshold=review_threshold,
                not_acquired=lacking.get(patient),
            )
            write_patient_page(page, tmp / f"{patient}.html")
            written.append(Path(out_dir) / f"{patient}.html")
    return written

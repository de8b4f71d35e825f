"""One self-contained HTML page per predicted patient, ``results/patients/{cohort}/{patient}.html``.

A page is for a clinician-researcher looking at one case: the predicted class and its
probabilities, the sequences it was predicted with and those not acquired, how uncertain the
prediction is and whether it is flagged for review, the true class where known, whether the
patient was in the model's training data, the preprocessing QC mosaic, the saliency map and the
identity of the model bundle that made the prediction.

Like the run report (:mod:`glioma.report.html`), the page embeds its images as ``data:`` URIs and
its CSS inline, holds no script, and its Content-Security-Policy allows nothing else, so opening
it makes no request at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glioma.constants import CLASSES, SEQUENCES
from glioma.errors import InputError
from glioma.io import atomic_path
from glioma.report import figures
from glioma.report.html import render_template
from glioma.report.tables import SEQUENCE_LABELS

DISCLAIMER = (
    "Research tool: not a medical device. This page shows the output of an experimental model "
    "for research use only. It is not a diagnosis, and its predictions must not be used to "
    "guide the care of any patient."
)
#: Shown for an ensemble measure (SD, mutual information) that one model cannot define.
ONE_MODEL = "n/a (one model)"
#: Splits whose patients the model trained or early-stopped on (``slice``: split by slice).
TRAINING_SPLITS = ("train", "val", "slice")
SPLIT_NOTES = {
    "train": "In the training data: the model was trained on this patient, so its prediction "
    "is not an independent test (it is optimistic).",
    "val": "In the training data: this patient was in the validation set that chose when to "
    "stop training, so its prediction is not an independent test.",
    "slice": "In the training data: the split was by slice (split.level: slice), so this "
    "patient's slices sat in training, validation and test sets at once; its prediction is not "
    "an independent test.",
    "cv": "Out-of-fold: predicted by the fold model that never trained or early-stopped on this "
    "patient.",
    "test": "Held-out test patient: no model trained or early-stopped on this patient.",
    "external": "External patient of a prediction-only run: the frozen model never saw this "
    "patient.",
    "unlabelled": "Unlabelled: no true class is known; never trained or evaluated on.",
    "excluded": "Not in the split table: excluded from training and evaluation.",
}


@dataclass(frozen=True)
class PatientPage:
    """Everything one patient's page shows.

    Attributes:
        cohort: the patient's cohort.
        patient: the patient ID.
        prediction: the patient's row of predictions.csv (``PREDICTION_COLUMNS``), with its
            true ``class`` ("" when unknown) where known.
        qc_png: the preprocessing QC mosaic, ``results/qc/{cohort}/{patient}.png``.
        saliency_png: the saliency picture, ``results/saliency/{cohort}/{patient}.png``, or None.
        saliency_method: how the saliency map was computed (``grad-cam``, ``occlusion``).
        slices: slice indices (z) the model used for this patient.
        shown_slices: those shown in the saliency picture.
        bundle: the model bundle's identity (id, created, models, model_name, classes,
            workflow_version, training_cohort, temperature).
        review_threshold: ``evaluate.review_entropy``.
        not_acquired: the sequences the patient lacks (``t1w`` ...; empty cells of the
            validated sheet), or None when the sheet does not say (the page says so).
    """

    cohort: str
    patient: str
    prediction: Mapping[str, Any]
    qc_png: Path
    saliency_png: Path | None
    saliency_method: str
    slices: Sequence[int]
    shown_slices: Sequence[int]
    bundle: Mapping[str, Any]
    review_threshold: float
    not_acquired: Sequence[str] | None = None


def _text(value: Any) -> str:
    """A cell as text: "" for a missing value (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _number(value: Any) -> float:
    """A cell as a float: NaN when missing or not a number."""
    try:
        return float(_text(value) or "nan")
    except ValueError:
        return math.nan


def _flag(value: Any) -> bool:
    """A review cell as a bool (``True``, ``true``, ``1``, ``REVIEW``, ``yes`` are true)."""
    return _text(value).lower() in {"true", "1", "1.0", "yes", "review"}


def _fmt(value: float, digits: int = 3, missing: str = "n/a") -> str:
    """A number with ``digits`` decimals, or ``missing`` for NaN."""
    return missing if math.isnan(value) else f"{value:.{digits}f}"


def _ranges(indices: Sequence[int]) -> str:
    """Sorted slice indices with runs collapsed: ``40-43, 47``."""
    values = sorted({int(i) for i in indices})
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _classes(page: PatientPage) -> list[str]:
    """The model's classes, in output order: the bundle's, else the workflow's."""
    return [str(c) for c in page.bundle.get("classes") or CLASSES]


def probabilities(page: PatientPage) -> list[dict[str, Any]]:
    """One row per class: name, probability, bar width in percent, whether it is predicted.

    Raises:
        InputError: the prediction lacks a class's probability, or it is not a number.
    """
    predicted = _text(page.prediction.get("predicted_class"))
    rows = []
    for name in _classes(page):
        column = f"p_{name}"
        value = _number(page.prediction.get(column))
        if math.isnan(value):
            raise InputError("prediction has no probability", patient=page.patient, column=column)
        width = min(max(value, 0.0), 1.0) * 100
        rows.append(
            {
                "name": name,
                "value": _fmt(value),
                "width": f"{width:.1f}",
                "predicted": name == predicted,
            }
        )
    return rows


def model_label(model: str, n_models: float) -> str:
    """What made the prediction: one model, a fold model out-of-fold, or an ensemble."""
    if model == "single":
        return "single model (one training run)"
    if model.startswith("fold-"):
        return f"{model}: out-of-fold, the fold model that never trained on this patient"
    if model == "ensemble":
        count = "" if math.isnan(n_models) else f" of {int(n_models)} models"
        return f"ensemble{count} (mean of the fold models' probabilities)"
    return model or "not recorded"


def uncertainty(page: PatientPage) -> dict[str, Any]:
    """Uncertainty rows (name, value, meaning) and the review flag (None when not flagged)."""
    row = page.prediction
    n_models = _number(row.get("n_models"))
    several = not math.isnan(n_models) and n_models > 1
    ensemble_missing = "n/a" if several else ONE_MODEL
    entropy = _number(row.get("normalised_entropy"))
    rows = [
        ("normalised entropy", _fmt(entropy), "0 certain, 1 a uniform guess"),
        ("entropy (nats)", _fmt(_number(row.get("entropy"))), "of the mean probabilities"),
        (
            "SD across models",
            _fmt(_number(row.get("sd")), missing=ensemble_missing),
            "of the predicted class's probability",
        ),
        (
            "mutual information",
            _fmt(_number(row.get("mutual_information")), missing=ensemble_missing),
            "the models' disagreement",
        ),
    ]
    review = None
    if _flag(row.get("review")):
        review = {"entropy": _fmt(entropy), "threshold": _fmt(float(page.review_threshold))}
    return {
        "rows": rows,
        "review": review,
        "threshold": _fmt(float(page.review_threshold)),
        "model": model_label(_text(row.get("model")), n_models),
    }


def split_context(page: PatientPage) -> dict[str, Any]:
    """The patient's split, the plain note on what it means, and the true class if known."""
    split = _text(page.prediction.get("split"))
    truth = _text(page.prediction.get("class"))
    predicted = _text(page.prediction.get("predicted_class"))
    return {
        "name": split or "not recorded",
        "note": SPLIT_NOTES.get(split, "Split not recorded."),
        "in_training": split in TRAINING_SPLITS,
        "truth": truth,
        "matches": bool(truth) and truth == predicted,
    }


def sequences_context(page: PatientPage) -> dict[str, Any]:
    """The sequences the patient was predicted with and those not acquired, as display names.

    Returns:
        ``known`` (False when the sheet did not say: both texts are then ``not recorded``),
        ``used`` and ``missing`` (comma-separated, ``none`` when nothing is missing), and
        ``any_missing``.
    """
    if page.not_acquired is None:
        return {"known": False, "used": "not recorded", "missing": "not recorded",
                "any_missing": False}  # fmt: skip
    lacking = {str(s).lower() for s in page.not_acquired}
    missing = [SEQUENCE_LABELS[s] for s in SEQUENCES if s in lacking]
    used = [SEQUENCE_LABELS[s] for s in SEQUENCES if s not in lacking]
    return {
        "known": True,
        "used": ", ".join(used) or "none",
        "missing": ", ".join(missing) or "none",
        "any_missing": bool(missing),
    }


def _image(path: Path, page: PatientPage) -> str:
    """An image as a data URI; InputError naming the patient and the path when missing."""
    try:
        return figures.image_uri(path)
    except InputError as err:
        raise err.with_context(patient=page.patient) from err


def pictures(page: PatientPage) -> dict[str, Any]:
    """The QC mosaic, the saliency picture (None without one) and the slices used.

    Raises:
        InputError: the QC or saliency PNG is missing or not an image.
    """
    saliency = None
    if page.saliency_png is not None:
        saliency = {
            "uri": _image(Path(page.saliency_png), page),
            "method": page.saliency_method or "not recorded",
            "shown": _ranges(page.shown_slices) or "not recorded",
        }
    n_slices = _number(page.prediction.get("n_slices"))
    return {
        "qc": _image(Path(page.qc_png), page),
        "saliency": saliency,
        "slices": _ranges(page.slices),
        "n_slices": len(set(page.slices)) if page.slices else _fmt(n_slices, 0, "not recorded"),
    }


def _cohort_table(bundle: Mapping[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """The bundle's training cohort as columns and rows: (split,) cohort, a count per class.

    ``training_cohort`` is ``{split: {cohort: {class: n}}}`` (as the bundle writes it) or
    ``{cohort: {class: n}}``.
    """
    summary = bundle.get("training_cohort") or {}
    by_split = all(
        isinstance(v, Mapping) and all(isinstance(c, Mapping) for c in v.values())
        for v in summary.values()
    )
    nested = summary if by_split else {"": summary}
    names = list(classes) + sorted(
        {n for cohorts in nested.values() for c in cohorts.values() for n in c} - set(classes)
    )
    rows = []
    for split, cohorts in sorted(nested.items()):
        for cohort, counts in sorted(cohorts.items()):
            cells = [str(int(counts.get(n, 0))) for n in names]
            total = str(sum(int(v) for v in counts.values()))
            rows.append(([split] if by_split else []) + [str(cohort), *cells, total])
    columns = (["split"] if by_split else []) + ["cohort", *names, "total"]
    return {"columns": columns, "rows": rows}


def bundle_context(page: PatientPage) -> dict[str, Any]:
    """The model bundle's identity as the page shows it."""
    bundle = page.bundle
    identity = _text(bundle.get("id"))
    temperature = _number(bundle.get("temperature"))
    return {
        "id": identity or "unknown",
        "short_id": identity[:12] or "unknown",
        "created": _text(bundle.get("created")) or "unknown",
        "models": ", ".join(str(m) for m in bundle.get("models") or []) or "unknown",
        "n_models": len(bundle.get("models") or []),
        "model_name": _text(bundle.get("model_name")) or "unknown",
        "workflow_version": _text(bundle.get("workflow_version")) or "unknown",
        "temperature": _fmt(temperature, 3, "none (raw probabilities)"),
        "scaled": not math.isnan(temperature),
        "cohort": _cohort_table(bundle, _classes(page)),
    }


def page_context(page: PatientPage) -> dict[str, Any]:
    """Everything the template shows (InputError when a picture or probability is missing)."""
    return {
        "disclaimer": DISCLAIMER,
        "cohort": page.cohort,
        "patient": page.patient,
        "predicted_class": _text(page.prediction.get("predicted_class")) or "not recorded",
        "probabilities": probabilities(page),
        "sequences": sequences_context(page),
        "uncertainty": uncertainty(page),
        "split": split_context(page),
        **pictures(page),
        "bundle": bundle_context(page),
    }


def render_patient_page(page: PatientPage) -> str:
    """Render one patient's page (every value escaped by Jinja2's autoescape)."""
    return render_template("patient.html.j2", page_context(page))


def write_patient_page(page: PatientPage, path: str | Path) -> None:
    """Render ``page`` and write it to ``path`` atomically (nothing is written on error)."""
    html = render_patient_page(page)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")

"""Sections of metrics.json beyond discrimination: cross-validation folds, calibration, uncertainty.

All work on the patient-level table of :func:`glioma.model.evaluate.patient_level` (one row per
patient and split: ``split``, ``key``, ``label`` and the class probabilities), joined with the
manifest's folds and the predictions' uncertainty.

- :func:`fold_section`: each fold model scored on its own held-out patients (out-of-fold), with
  the mean and SD across folds; under leave-one-cohort-out one fold is one held-out cohort.
- :func:`calibration_section`: the expected calibration error (ECE) per class, before and after
  temperature scaling fitted on the validation patients (single split) or the out-of-fold
  patients (cross-validation), never on test.
- :func:`uncertainty_section`: accuracy of the patients flagged for review against the others,
  and the area under the risk-coverage curve.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from glioma.constants import CLASSES, CV_SPLIT, EXTERNAL_SPLIT
from glioma.dataset.folds import fold_ids
from glioma.model.calibration import apply_temperature, class_ece, fit_temperature, nll
from glioma.model.metrics import classification_metrics
from glioma.model.predict import PROB_COLUMNS
from glioma.model.uncertainty import area_under_risk_coverage, flagged_accuracy, review_flags

log = logging.getLogger(__name__)

#: metrics.json ``cv.scheme`` values.
KFOLD, LOCO = "k-fold", "leave-one-cohort-out"
FOLD_METRICS = ("n", "accuracy", "macro_auc", *(f"auc_{name}" for name in CLASSES))


def fold_rows(patients: pd.DataFrame, folds: Mapping[str, str], order: Sequence[str]) -> list[dict]:
    """Per-fold metrics of the out-of-fold (``cv``) patients, one dict per fold in ``order``.

    Args:
        patients: patient-level rows (``split``, ``key``, ``label``, probabilities).
        folds: patient key (``cohort/patient``) -> fold ID.
        order: the fold IDs, in report order.
    """
    development = patients[patients["split"] == CV_SPLIT]
    fold_of = development["key"].map(folds)
    rows = []
    for fold in order:
        part = development[fold_of == fold]
        metrics = classification_metrics(
            part["label"].to_numpy(), part[list(PROB_COLUMNS)].to_numpy(), part["key"].to_numpy(),
            n_boot=0, seed=0,
        )  # fmt: skip
        row = {"fold": fold, "n": metrics["n"], "accuracy": metrics["accuracy"]}
        row["macro_auc"] = metrics["macro_auc"]
        for name in CLASSES:
            row[f"auc_{name}"] = metrics["classes"][name]["auc"]
        rows.append(row)
    return rows


def _mean_sd(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample SD of the defined values, with how many there were."""
    defined = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not defined:
        return {"mean": None, "sd": None, "n_folds": 0}
    sd = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
    return {"mean": float(np.mean(defined)), "sd": sd, "n_folds": len(defined)}


def fold_section(
    patients: pd.DataFrame, splits: pd.DataFrame, *, scheme: str
) -> dict[str, Any] | None:
    """The ``cv`` section: per-fold held-out metrics and their mean and SD; None without folds.

    A fold whose held-out patients lack a class has that class's AUC (and the macro AUC)
    undefined; the mean and SD are over the folds where it is defined (``n_folds``).
    """
    development = splits[splits["split"] == CV_SPLIT]
    if development.empty:
        return None
    order = fold_ids(splits)
    keys = development["cohort"] + "/" + development["patient"]
    rows = fold_rows(patients, dict(zip(keys, development["fold"], strict=True)), order)
    for row in rows:
        row["held_out"] = row["fold"] if scheme == LOCO else None
    summary = {metric: _mean_sd([row[metric] for row in rows]) for metric in FOLD_METRICS[1:]}
    return {"scheme": scheme, "n_folds": len(order), "folds": rows, "summary": summary}


def _split_arrays(patients: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of one split's patients."""
    part = patients[patients["split"] == split]
    return part["label"].to_numpy(np.int64), part[list(PROB_COLUMNS)].to_numpy(np.float64)


def calibration_section(
    patients: pd.DataFrame,
    splits_shown: Sequence[str],
    *,
    fit_on: str,
    n_bins: int,
    temperature: float | None = None,
) -> dict[str, Any]:
    """ECE per class and NLL of every split, raw and temperature-scaled, and the temperature.

    Args:
        patients: patient-level rows.
        splits_shown: the splits to report.
        fit_on: the split the temperature is fitted on (``val`` or ``cv``; never ``test`` or
            ``external``), or ``bundle`` with ``temperature`` given.
        n_bins: reliability bins.
        temperature: a temperature fitted elsewhere (a model bundle's), used as it is.
    """
    if fit_on in ("test", EXTERNAL_SPLIT):
        raise ValueError(f"the temperature must not be fitted on the {fit_on} patients")
    if temperature is None:
        labels, probs = _split_arrays(patients, fit_on)
        temperature = fit_temperature(probs, labels)
    section: dict[str, Any] = {
        "fitted_on": fit_on,
        "temperature": float(temperature),
        "bins": int(n_bins),
        "splits": {},
    }
    for split in splits_shown:
        labels, probs = _split_arrays(patients, split)
        scaled = apply_temperature(probs, temperature) if len(probs) else probs
        section["splits"][split] = {
            "n": len(labels),
            "in_sample": split == fit_on,
            "raw": _calibration(labels, probs, n_bins),
            "scaled": _calibration(labels, scaled, n_bins),
        }
    log.info("temperature %.3f fitted on the %s patients", temperature, fit_on)
    return section


def _calibration(labels: np.ndarray, probs: np.ndarray, n_bins: int) -> dict[str, float | None]:
    """ECE of every class and of the top label, and the NLL, of one set of predictions."""
    if len(labels) == 0:
        return {**dict.fromkeys(CLASSES), "top_label": None, "nll": None}
    values = {**class_ece(labels, probs, n_bins), "nll": nll(probs, labels)}
    return {
        key: float(value) if value is not None and math.isfinite(value) else None
        for key, value in values.items()
    }


def uncertainty_section(
    patients: pd.DataFrame,
    uncertainty: Mapping[str, float],
    splits_shown: Sequence[str],
    *,
    threshold: float,
) -> dict[str, Any]:
    """Accuracy of flagged vs unflagged patients and the risk-coverage area, per split.

    Args:
        patients: patient-level rows.
        uncertainty: patient key -> normalised predictive entropy (predictions.csv).
        splits_shown: the splits to report.
        threshold: ``evaluate.review_entropy``.
    """
    section: dict[str, Any] = {
        "measure": "normalised_entropy",
        "threshold": float(threshold),
        "splits": {},
    }
    for split in splits_shown:
        part = patients[patients["split"] == split]
        values = part["key"].map(uncertainty).to_numpy(np.float64)
        correct = part[list(PROB_COLUMNS)].to_numpy().argmax(axis=1) == part["label"].to_numpy()
        flags = review_flags(values, threshold)
        aurc = area_under_risk_coverage(correct, values) if len(part) else None
        section["splits"][split] = {
            "n": len(part),
            **flagged_accuracy(correct, flags),
            "aurc": None if aurc is None or not math.isfinite(aurc) else float(aurc),
        }
    return section

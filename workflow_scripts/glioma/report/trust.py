"""Report tables of cross-validation, calibration and uncertainty, read from metrics.json.

Each returns a DataFrame of display strings, empty when metrics.json lacks the section (a run
from before these sections existed still renders).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from glioma.constants import CLASSES, CV_SPLIT

#: What the patients of each split are, for figure captions.
SPLIT_PATIENTS = {
    "train": "training patients (the data the model was fitted on: optimistic)",
    "val": "validation patients (used for early stopping)",
    CV_SPLIT: (
        "out-of-fold patients: each predicted by the fold model that never trained or "
        "early-stopped on it"
    ),
    "test": "held-out test patients",
}


def _num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``n/a`` when missing."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}"


def split_patients(split: str, metrics: dict[str, Any]) -> str:
    """Who a split's figures are about (the test split of a fold ensemble says so)."""
    text = SPLIT_PATIENTS.get(split, split)
    folds = (metrics.get("cv") or {}).get("n_folds")
    if split == "test" and folds:
        text += f", predicted by the mean of the {folds} fold models"
    return text


def cv_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per fold (held-out cohort under leave-one-cohort-out), then mean and SD."""
    cv = metrics.get("cv") or {}
    if not cv.get("folds"):
        return pd.DataFrame()
    first = "held-out cohort" if cv.get("scheme") == "leave-one-cohort-out" else "fold"
    keys = ["n", "accuracy", "macro_auc", *(f"auc_{name}" for name in CLASSES)]
    names = ["n", "accuracy", "macro AUC", *(f"AUC {name}" for name in CLASSES)]
    rows = [
        [
            str(fold.get("fold")),
            *(_num(fold.get(k)) if k != "n" else str(fold.get(k)) for k in keys),
        ]
        for fold in cv["folds"]
    ]
    summary = cv.get("summary") or {}
    for statistic in ("mean", "sd"):
        values = [_num((summary.get(k) or {}).get(statistic)) for k in keys[1:]]
        rows.append([statistic.upper() if statistic == "sd" else statistic, "", *values])
    return pd.DataFrame(rows, columns=[first, *names])


def calibration_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """ECE per split and class (and top label, NLL), raw and after temperature scaling."""
    calibration = metrics.get("calibration") or {}
    rows = []
    for split, values in (calibration.get("splits") or {}).items():
        label = split + (" (temperature fitted here: in-sample)" if values.get("in_sample") else "")
        for name in (*CLASSES, "top_label", "nll"):
            shown = {"top_label": "top label", "nll": "NLL"}.get(name, name)
            raw, scaled = (values.get(kind) or {} for kind in ("raw", "scaled"))
            rows.append(
                [label, str(values.get("n")), shown, _num(raw.get(name)), _num(scaled.get(name))]
            )
    columns = ["split", "n", "class", "ECE raw", "ECE scaled"]
    return pd.DataFrame(rows, columns=columns)


def uncertainty_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per split: patients flagged for review, accuracy flagged vs kept, risk-coverage area."""
    section = metrics.get("uncertainty") or {}
    rows = [
        [
            split,
            str(values.get("n")),
            str(values.get("n_flagged")),
            _num(values.get("accuracy_flagged")),
            _num(values.get("accuracy_unflagged")),
            _num(values.get("aurc")),
        ]
        for split, values in (section.get("splits") or {}).items()
    ]
    columns = ["split", "n", "flagged", "accuracy flagged", "accuracy not flagged", "AURC"]
    return pd.DataFrame(rows, columns=columns)

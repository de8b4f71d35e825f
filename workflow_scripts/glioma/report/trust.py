"""Report tables of cross-validation, calibration and uncertainty, and who each figure shows.

Read from metrics.json (and ``results/splits.tsv`` for the patients per fold); each table is a
DataFrame of display strings, empty when metrics.json lacks the section, so a run from before
these sections existed still renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from glioma.constants import CLASSES, CV_SPLIT, EVAL_SPLITS
from glioma.errors import InputError
from glioma.report.tables import num, read_table, split_label

LOCO = "leave-one-cohort-out"
#: Columns of ``results/metrics/table_folds.tsv`` (glioma.model.evaluate.fold_table).
FOLD_COLUMNS = (
    "fold",
    "held_out",
    "n",
    "accuracy",
    "macro_auc",
    *(f"auc_{name}" for name in CLASSES),
)
#: What the patients of each split are, for figure captions.
SPLIT_PATIENTS = {
    "train": "training patients (the data the model was fitted on: optimistic)",
    "val": "validation patients (used for early stopping)",
    CV_SPLIT: (
        "out-of-fold patients: each predicted by the fold model that never trained or "
        "early-stopped on it"
    ),
    "test": "held-out test patients, never trained, early-stopped or calibrated on",
}
#: What each kind of per-split figure shows.
FIGURE_KINDS = {
    "roc": "ROC curves, one-vs-rest per class (patient level left, slice level right)",
    "confusion": "Confusion matrices (patient level left, slice level right)",
    "calibration": (
        "Reliability diagrams per class: observed fraction against mean predicted probability "
        "per bin, raw and temperature-scaled"
    ),
    "uncertainty": (
        "Risk-coverage curve: accuracy of the patients kept, most certain first, against the "
        "fraction kept; dashed line: the review threshold"
    ),
}


def split_patients(split: str, metrics: dict[str, Any]) -> str:
    """Who a split's figures are about (the test split of a fold ensemble says so)."""
    text = SPLIT_PATIENTS.get(split, split)
    folds = (metrics.get("cv") or {}).get("n_folds")
    if split == "test" and folds:
        text += f", predicted by the mean of the {folds} fold models"
    return text


def _in_sample(split: str, metrics: dict[str, Any]) -> bool:
    """True for the split the temperature was fitted on."""
    return (metrics.get("calibration") or {}).get("fitted_on") == split


def caption(kind: str, split: str, metrics: dict[str, Any]) -> str:
    """Figure caption: what a ``<kind>_<split>.png`` shows, and on which patients."""
    text = f"{FIGURE_KINDS.get(kind, kind)}. {split_label(split)}: {split_patients(split, metrics)}"
    if kind == "calibration" and _in_sample(split, metrics):
        text += " (the temperature is fitted here: in-sample)"
    return text + "."


def fold_sizes(splits: pd.DataFrame) -> pd.DataFrame:
    """Out-of-fold (``cv``) patients per fold (rows) and class (columns), with totals.

    Empty without cross-validation. Under leave-one-cohort-out a fold is a held-out cohort.
    """
    development = splits[splits["split"] == CV_SPLIT]
    if development.empty:
        return pd.DataFrame()
    counts = pd.crosstab(development["fold"], development["class"])
    order = sorted(counts.index, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
    counts = counts.reindex(index=order, columns=list(CLASSES)).fillna(0).astype(int)
    counts.loc["Total"] = counts.sum()
    counts["Total"] = counts.sum(axis=1)
    return counts.rename_axis(index="fold", columns=None).reset_index()


def check_fold_table(path: str | Path | None, metrics: dict[str, Any]) -> None:
    """Check ``table_folds.tsv`` has its columns and the folds of metrics.json's ``cv``.

    Raises:
        InputError: a column is missing, or its fold rows differ from metrics.json's (a stale
            file from another run).
    """
    if path is None:
        return
    table = read_table(path, FOLD_COLUMNS)
    found = [f for f in table["fold"] if f not in ("mean", "sd")]
    expected = [str(f.get("fold")) for f in (metrics.get("cv") or {}).get("folds") or []]
    if found != expected:
        raise InputError(
            f"folds {found} differ from metrics.json's cv folds {expected}",
            column="fold",
            path=path,
        )


def cv_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per fold (held-out cohort under leave-one-cohort-out), then mean and SD.

    A fold whose held-out patients lack a class has that AUC undefined (n/a); the mean and SD
    are over the folds where it is defined, and say so when that is not all of them.
    """
    cv = metrics.get("cv") or {}
    if not cv.get("folds"):
        return pd.DataFrame()
    first = "held-out cohort" if cv.get("scheme") == LOCO else "fold"
    keys = FOLD_COLUMNS[3:]
    names = ["n", "accuracy", "macro AUC", *(f"AUC {name}" for name in CLASSES)]
    rows = [
        [str(fold.get("fold")), str(fold.get("n")), *(num(fold.get(k)) for k in keys)]
        for fold in cv["folds"]
    ]
    summary = cv.get("summary") or {}
    total = len(cv["folds"])
    means = []
    for key in keys:
        entry = summary.get(key) or {}
        defined = entry.get("n_folds", total)
        part = f" ({defined} of {total} folds)" if defined != total else ""
        means.append(num(entry.get("mean")) + part)
    rows.append(["mean", "", *means])
    rows.append(["SD", "", *(num((summary.get(k) or {}).get("sd")) for k in keys)])
    return pd.DataFrame(rows, columns=[first, *names])


def _ordered(section: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A section's ``splits`` entries in report order (train, val, cv, test)."""
    entries = section.get("splits") or {}
    rank = {name: i for i, name in enumerate(EVAL_SPLITS)}
    return sorted(entries.items(), key=lambda item: rank.get(item[0], len(rank)))


def calibration_info(metrics: dict[str, Any]) -> dict[str, str]:
    """Temperature, the split it was fitted on and the bins, for display ({} without)."""
    section = metrics.get("calibration") or {}
    if not section:
        return {}
    fitted = str(section.get("fitted_on", ""))
    return {
        "temperature": num(section.get("temperature")),
        "fitted_on": split_label(fitted),
        "bins": str(section.get("bins", "n/a")),
        "on_test": "test" if fitted == "test" else "",
    }


def calibration_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per split: ECE of each class and of the top label, and NLL, raw and temperature-scaled."""
    measures = {**{c: f"ECE {c}" for c in CLASSES}, "top_label": "ECE top label", "nll": "NLL"}
    rows = []
    for split, values in _ordered(metrics.get("calibration") or {}):
        label = split_label(split)
        if values.get("in_sample"):
            label += ", in-sample (the temperature is fitted here)"
        raw, scaled = (values.get(kind) or {} for kind in ("raw", "scaled"))
        for key, shown in measures.items():
            rows.append(
                [label, str(values.get("n")), shown, num(raw.get(key)), num(scaled.get(key))]
            )
    columns = ["split", "n", "measure", "raw", "temperature-scaled"]
    return pd.DataFrame(rows, columns=columns)


def uncertainty_info(metrics: dict[str, Any]) -> dict[str, str]:
    """Review threshold and the measure it applies to, for display ({} without)."""
    section = metrics.get("uncertainty") or {}
    if not section:
        return {}
    measure = str(section.get("measure", "normalised_entropy"))
    threshold = section.get("threshold")
    shown = f"{threshold:g}" if isinstance(threshold, int | float) else "n/a"
    return {"measure": measure.replace("_", " "), "threshold": shown}


def uncertainty_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per split: patients flagged for review and not, the accuracy of each, and the AURC."""
    rows = [
        [
            split_label(split),
            str(values.get("n")),
            str(values.get("n_flagged")),
            str(values.get("n_unflagged")),
            num(values.get("accuracy_flagged")),
            num(values.get("accuracy_unflagged")),
            num(values.get("aurc")),
        ]
        for split, values in _ordered(metrics.get("uncertainty") or {})
    ]
    columns = [
        "split",
        "n",
        "flagged",
        "not flagged",
        "accuracy flagged",
        "accuracy not flagged",
        "AURC",
    ]
    return pd.DataFrame(rows, columns=columns)

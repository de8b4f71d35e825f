"""ROC curves and confusion matrices per split, at patient and slice level, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

# The object API renders with Agg without touching pyplot's global state or a display.
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from glioma.constants import CLASSES
from glioma.io import atomic_path
from glioma.model.predict import PROB_COLUMNS

LEVELS = ("patient", "slice")


def _save(figure: Figure, path: str | Path) -> None:
    """Write a figure atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def _roc_panel(axis: Axes, frame: pd.DataFrame, level: str) -> None:
    """One-vs-rest ROC curve of each class whose AUC is defined, with the chance line."""
    labels = frame["label"].to_numpy()
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    drawn = 0
    for k, name in enumerate(CLASSES):
        positive = labels == k
        if not 0 < positive.sum() < len(labels):
            continue
        fpr, tpr, _ = roc_curve(positive, frame[PROB_COLUMNS[k]].to_numpy())
        auc = roc_auc_score(positive, frame[PROB_COLUMNS[k]].to_numpy())
        axis.plot(fpr, tpr, label=f"{name}: AUC {auc:.3f} (n+={int(positive.sum())})")
        drawn += 1
    if drawn:
        axis.legend(loc="lower right", fontsize=8)
    else:
        axis.text(0.5, 0.5, "no ROC defined\n(fewer than two classes)", ha="center", va="center")
    axis.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"{level} level (n={len(labels)})",
    )
    axis.set_aspect("equal")


def plot_roc(frames: dict[str, pd.DataFrame], path: str | Path, *, title: str) -> None:
    """Write ROC curves of one split: patient level left, slice level right.

    Args:
        frames: ``{"patient": rows, "slice": rows}`` with ``label`` and probability columns.
        path: the PNG to write.
        title: figure title (names the split and whether it is training data).
    """
    figure = Figure(figsize=(11, 5.5), layout="constrained")
    axes = figure.subplots(1, 2)
    for axis, level in zip(axes, LEVELS, strict=True):
        _roc_panel(axis, frames[level], level)
    figure.suptitle(title)
    _save(figure, path)


def _confusion_panel(axis: Axes, matrix: list[list[int]] | None, level: str) -> None:
    """A count heat map, true class down, predicted class across."""
    counts = (
        np.zeros((len(CLASSES), len(CLASSES)), dtype=int) if matrix is None else np.array(matrix)
    )
    axis.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        colour = "white" if value > counts.max() / 2 else "black"
        axis.text(j, i, str(value), ha="center", va="center", color=colour)
    ticks = range(len(CLASSES))
    axis.set_xticks(ticks, CLASSES, rotation=30)
    axis.set_yticks(ticks, CLASSES)
    axis.set(xlabel="predicted", ylabel="true", title=f"{level} level")


def plot_confusion(document: dict[str, Any], split: str, path: str | Path, *, title: str) -> None:
    """Write the confusion matrices of one split (patient left, slice right) from metrics.json."""
    figure = Figure(figsize=(12, 5), layout="constrained")
    axes = figure.subplots(1, 2)
    for axis, level in zip(axes, LEVELS, strict=True):
        _confusion_panel(axis, document[level][split]["confusion_matrix"], level)
    figure.suptitle(title)
    _save(figure, path)


def plot_folds(cv: dict[str, Any], out: str | Path) -> None:
    """Held-out AUC of every fold model (macro and per class), with the mean and SD across folds.

    Args:
        cv: the ``cv`` section of metrics.json (:func:`glioma.model.assessment.fold_section`).
        out: PNG path.
    """
    folds = cv["folds"]
    metrics = ["macro_auc", *(f"auc_{name}" for name in CLASSES)]
    labels = ["macro", *CLASSES]
    figure = Figure(figsize=(max(6.0, 1.2 * len(folds) + 3), 4.2), layout="constrained")
    axis = figure.subplots()
    x = np.arange(len(metrics))
    width = 0.8 / max(len(folds), 1)
    for i, row in enumerate(folds):
        values = [np.nan if row[m] is None else row[m] for m in metrics]
        name = f"{row['fold']} (n={row['n']})"
        axis.bar(x - 0.4 + width * (i + 0.5), values, width, label=name, alpha=0.8)
    for j, metric in enumerate(metrics):
        summary = cv["summary"][metric]
        if summary["mean"] is None:
            continue
        sd = summary["sd"] or 0.0
        axis.errorbar(x[j] + 0.45, summary["mean"], yerr=sd, fmt="o", color="black", capsize=4)
    axis.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    axis.set_xticks(x, labels)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("held-out AUC (patient level)")
    scheme = "held-out cohort" if cv["scheme"] == "leave-one-cohort-out" else "fold"
    macro = cv["summary"]["macro_auc"]
    mean = "n/a" if macro["mean"] is None else f"{macro['mean']:.3f}"
    sd = "n/a" if macro["sd"] is None else f"{macro['sd']:.3f}"
    axis.set_title(
        f"{cv['scheme']}: each {scheme}'s model on its own held-out patients; "
        f"black: mean ± SD across {scheme}s (macro {mean} ± {sd})",
        fontsize=9,
    )
    axis.legend(fontsize=7, title=scheme, title_fontsize=7, loc="lower right")
    _save(figure, out)

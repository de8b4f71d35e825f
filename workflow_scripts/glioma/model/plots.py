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

"""Reliability diagrams and risk-coverage curves at patient level, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

# The object API renders with Agg without touching pyplot's global state or a display.
from matplotlib.figure import Figure

from glioma.constants import CLASSES
from glioma.io import atomic_path
from glioma.model.calibration import expected_calibration_error, reliability_bins
from glioma.model.uncertainty import flagged_accuracy, review_flags, risk_coverage

#: Marker area (points²) of the fullest bin of a reliability curve; empty bins are not drawn.
MAX_MARKER = 220.0


def _save(figure: Figure, path: str | Path) -> None:
    """Write a figure atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def _fmt(value: float | None) -> str:
    """Three decimals, or ``n/a`` for a missing or non-finite value (0.0 is a value)."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _reliability_curve(
    axis: Axes, positive: np.ndarray, score: np.ndarray, n_bins: int, label: str, colour: str
) -> None:
    """Observed fraction against mean score per non-empty bin; marker area follows the count."""
    bins = reliability_bins(positive, score, n_bins)
    full = bins[bins["count"] > 0]
    ece = expected_calibration_error(positive, score, n_bins)
    sizes = 15 + MAX_MARKER * full["count"] / full["count"].max()
    axis.plot(full["mean_confidence"], full["observed"], color=colour, linewidth=1)
    axis.scatter(
        full["mean_confidence"],
        full["observed"],
        s=sizes,
        color=colour,
        alpha=0.7,
        label=f"{label}: ECE {_fmt(ece)}",
    )


def plot_reliability(
    labels: np.ndarray,
    probs_raw: np.ndarray,
    probs_scaled: np.ndarray,
    out: str | Path,
    *,
    title: str,
    n_bins: int = 10,
    temperature: float,
) -> None:
    """One panel per class: observed fraction against mean predicted probability per bin.

    Args:
        labels: int class indices (N,).
        probs_raw: class probabilities before scaling (N, K).
        probs_scaled: the same after temperature scaling (N, K).
        out: PNG path.
        title: figure title.
        n_bins: equal-width bins on [0, 1].
        temperature: the T that produced ``probs_scaled`` (named in the legend).

    Raw and scaled curves share each panel, marker area follows the bin count and the legend
    gives each curve's one-vs-rest ECE. Without patients every panel says so; a class without
    patients keeps its curves (every observed fraction is 0) and a note.
    """
    labels = np.asarray(labels, dtype=np.int64)
    figure = Figure(figsize=(12, 4.6), layout="constrained")
    axes = figure.subplots(1, len(CLASSES))
    for k, (axis, name) in enumerate(zip(axes, CLASSES, strict=True)):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=f"mean predicted p({name})", title=name)
        if not len(labels):
            axis.text(0.5, 0.5, "no patients", ha="center", va="center", color="grey")
            continue
        positive = labels == k
        for probs, label, colour in (
            (probs_raw, "raw", "tab:blue"),
            (probs_scaled, f"T={temperature:.2f}", "tab:orange"),
        ):
            score = np.asarray(probs, dtype=np.float64)[:, k]
            _reliability_curve(axis, positive, score, n_bins, label, colour)
        if not positive.any():
            axis.text(0.65, 0.3, f"no {name} patients", ha="center", color="grey")
        axis.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("observed fraction of the class")
    figure.suptitle(title, fontsize=10)
    _save(figure, out)


def _flag_text(summary: dict[str, int | float | None], threshold: float) -> str:
    """Legend entry of the review cut: counts and accuracy of flagged and kept patients."""
    return (
        f"review above {threshold:g}: {summary['n_flagged']} flagged "
        f"(accuracy {_fmt(summary['accuracy_flagged'])}), "
        f"{summary['n_unflagged']} kept (accuracy {_fmt(summary['accuracy_unflagged'])})"
    )


def plot_risk_coverage(
    correct: np.ndarray,
    uncertainty: np.ndarray,
    out: str | Path,
    *,
    title: str,
    threshold: float | None,
    label: str,
) -> None:
    """Accuracy of the most certain patients against the fraction kept (coverage).

    Args:
        correct: whether each patient's prediction is right (N,).
        uncertainty: each patient's uncertainty (N,); NaN ranks last and is flagged.
        out: PNG path.
        title: figure title.
        threshold: the review threshold, marked where it cuts the curve; None for no mark.
        label: name of the uncertainty measure (legend).
    """
    correct = np.asarray(correct, dtype=bool)
    values = np.asarray(uncertainty, dtype=np.float64)
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axis = figure.subplots()
    axis.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="coverage (fraction of patients kept)")
    axis.set_ylabel("accuracy of the patients kept")
    axis.set_title(title, fontsize=9)
    if not len(correct):
        axis.text(0.5, 0.5, "no patients", ha="center", va="center", color="grey")
        _save(figure, out)
        return
    curve = risk_coverage(correct, values)
    axis.plot(curve["coverage"], curve["accuracy"], marker=".", label=f"ranked by {label}")
    overall = float(correct.mean())
    axis.axhline(overall, color="grey", linestyle=":", label=f"all patients ({overall:.3f})")
    if threshold is not None:
        summary = flagged_accuracy(correct, review_flags(values, threshold))
        kept = summary["n_unflagged"] / len(correct)
        axis.axvline(kept, color="tab:red", linestyle="--", label=_flag_text(summary, threshold))
        if summary["n_unflagged"]:
            axis.plot([kept], [summary["accuracy_unflagged"]], "o", color="tab:red")
    axis.legend(fontsize=7, loc="lower left")
    _save(figure, out)

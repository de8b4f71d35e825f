"""Reliability diagrams and risk-coverage curves at patient level, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The object API renders with Agg without touching pyplot's global state or a display.
from matplotlib.figure import Figure

from glioma.constants import CLASSES
from glioma.io import atomic_path
from glioma.model.calibration import expected_calibration_error, reliability_bins
from glioma.model.uncertainty import flagged_accuracy, review_flags, risk_coverage


def _save(figure: Figure, path: str | Path) -> None:
    """Write a figure atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.3f}"


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

    Raw and temperature-scaled probabilities side by side; marker area follows the bin count.
    """
    labels = np.asarray(labels, dtype=np.int64)
    figure = Figure(figsize=(12, 4.2), layout="constrained")
    axes = figure.subplots(1, len(CLASSES))
    for k, (axis, name) in enumerate(zip(axes, CLASSES, strict=True)):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"predicted p({name})", title=name)
        positive = labels == k
        if not len(labels):
            axis.text(0.5, 0.5, "no patients", ha="center", va="center", color="grey")
            continue
        for probs, label, colour in (
            (probs_raw, "raw", "tab:blue"),
            (probs_scaled, f"T={temperature:.2f}", "tab:orange"),
        ):
            score = np.asarray(probs, dtype=np.float64)[:, k]
            bins = reliability_bins(positive, score, n_bins)
            full = bins[bins["count"] > 0]
            ece = expected_calibration_error(positive, score, n_bins)
            axis.plot(full["mean_confidence"], full["observed"], color=colour, linewidth=1)
            axis.scatter(
                full["mean_confidence"], full["observed"], s=20 + 12 * full["count"],
                color=colour, alpha=0.7, label=f"{label}: ECE {_fmt(ece)}",
            )  # fmt: skip
        if not positive.any():
            axis.text(0.5, 0.9, f"no {name} patient", ha="center", color="grey")
        axis.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("observed fraction of the class")
    figure.suptitle(title, fontsize=10)
    _save(figure, out)


def plot_risk_coverage(
    correct: np.ndarray,
    uncertainty: np.ndarray,
    out: str | Path,
    *,
    title: str,
    threshold: float | None,
    label: str,
) -> None:
    """Accuracy of the most certain patients against the fraction kept (coverage)."""
    correct = np.asarray(correct, dtype=bool)
    values = np.asarray(uncertainty, dtype=np.float64)
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axis = figure.subplots()
    axis.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="coverage (fraction of patients kept)")
    axis.set_ylabel("accuracy of the patients kept")
    if len(correct):
        curve = risk_coverage(correct, values)
        axis.plot(curve["coverage"], curve["accuracy"], marker=".", label=f"ranked by {label}")
        axis.axhline(correct.mean(), color="grey", linestyle=":", label="all patients")
        if threshold is not None:
            flags = review_flags(values, threshold)
            summary = flagged_accuracy(correct, flags)
            kept = summary["n_unflagged"] / len(correct)
            text = (
                f"review above {threshold:g}: {summary['n_flagged']} flagged "
                f"(accuracy {_fmt(summary['accuracy_flagged'] or np.nan)}), "
                f"{summary['n_unflagged']} kept ({_fmt(summary['accuracy_unflagged'] or np.nan)})"
            )
            axis.axvline(kept, color="tab:red", linestyle="--", label=text)
        axis.legend(fontsize=7, loc="lower left")
    else:
        axis.text(0.5, 0.5, "no patients", ha="center", va="center", color="grey")
    axis.set_title(title, fontsize=9)
    _save(figure, out)

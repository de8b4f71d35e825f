"""Patient-level calibration: reliability bins, expected calibration error, temperature scaling.

The temperature must be fitted on validation or out-of-fold predictions, never on test: fitted on
the patients it is then scored on, it flatters the calibration it reports.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from glioma.constants import CLASSES

log = logging.getLogger(__name__)

EPS = 1e-12


def reliability_bins(positive: np.ndarray, score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width bins of ``score`` on [0, 1] (the last includes 1) with what they hold.

    Args:
        positive: whether each row belongs to the class (N,), bool or 0/1.
        score: predicted probability of the class (N,); values outside [0, 1] fall in the
            first or last bin.
        n_bins: number of bins.

    Returns:
        One row per bin: ``lower``, ``upper``, ``count``, ``mean_confidence`` (mean score) and
        ``observed`` (fraction positive); NaN means in empty bins.

    Raises:
        ValueError: ``positive`` and ``score`` differ in length, or ``n_bins`` < 1.
    """
    positive = np.asarray(positive, dtype=np.float64).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if positive.size != score.size:
        raise ValueError(f"positive has {positive.size} rows, score {score.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(score, edges[1:-1], right=False), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = index == b
        count = int(inside.sum())
        rows.append(
            {
                "lower": edges[b],
                "upper": edges[b + 1],
                "count": count,
                "mean_confidence": float(score[inside].mean()) if count else math.nan,
                "observed": float(positive[inside].mean()) if count else math.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(positive: np.ndarray, score: np.ndarray, n_bins: int = 10) -> float:
    """Sum over non-empty bins of (count / N) * |observed - mean score|; NaN for no rows."""
    bins = reliability_bins(positive, score, n_bins)
    total = bins["count"].sum()
    if total == 0:
        return math.nan
    full = bins[bins["count"] > 0]
    gaps = (full["observed"] - full["mean_confidence"]).abs()
    return float((full["count"] / total * gaps).sum())


def class_ece(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """One-vs-rest ECE of every class, and ``top_label``: the ECE of the top probability."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    out = {
        name: expected_calibration_error(labels == k, probs[:, k], n_bins)
        for k, name in enumerate(CLASSES)
    }
    if len(labels):
        correct = probs.argmax(axis=1) == labels
        out["top_label"] = expected_calibration_error(correct, probs.max(axis=1), n_bins)
    else:
        out["top_label"] = math.nan
    return out


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities: softmax(log(p) / T) per row.

    Log-probabilities are the logits up to a per-row constant, which softmax ignores, so this
    equals dividing the logits by T. T > 1 flattens the rows, T < 1 sharpens them, T = 1 returns
    the input renormalised. Probabilities are clipped at 1e-12 before the log.

    Args:
        probs: class probabilities (N, K).
        temperature: T > 0.

    Raises:
        ValueError: ``temperature`` is not a positive finite number.
    """
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive and finite; got {temperature}")
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, None))
    return softmax(logits / temperature, axis=1)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` (probabilities clipped at 1e-12)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return math.nan
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, None)).mean())


def fit_temperature(
    probs: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature minimising the mean NLL of ``labels`` under :func:`apply_temperature`.

    Fit it on validation or out-of-fold predictions only, never on the test patients: a
    temperature fitted on the patients it is then scored on flatters the calibration reported.

    Args:
        probs: class probabilities (N, K) of the fitting patients.
        labels: their int class indices (N,).
        bounds: search interval of T (bounded scalar search on log T).

    Returns:
        The fitted T; 1.0 (no scaling, with a logged warning) with fewer than two patients or
        only one class among the labels.

    Raises:
        ValueError: ``probs`` and ``labels`` differ in length.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(probs) != len(labels):
        raise ValueError(f"probs has {len(probs)} rows, labels {len(labels)}")
    if len(labels) < 2 or np.unique(labels).size < 2:
        log.warning(
            "temperature not fitted (%d patients, %d classes): T = 1",
            len(labels),
            np.unique(labels).size,
        )
        return 1.0
    logits = np.log(np.clip(probs, EPS, None))
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=1)[rows, labels].mean())

    low, high = (math.log(b) for b in bounds)
    result = minimize_scalar(loss, bounds=(low, high), method="bounded")
    temperature = float(math.exp(result.x))
    if min(abs(result.x - low), abs(result.x - high)) < 1e-3:
        # With every fitting patient classified right, the NLL falls as T -> 0: no optimum.
        log.warning(
            "temperature %.3g is at its search bound %s (%d fitting patients): they are too "
            "few or perfectly separated, and the scaled calibration figures mean little",
            temperature,
            bounds,
            len(labels),
        )
    return temperature

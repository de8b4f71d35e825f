"""Classification metrics on arrays, with bootstrap confidence intervals over patients.

A metric that is undefined for a set of predictions (an AUC when a class is absent, a precision
when a class is never predicted) is returned as None, never as an exception.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from glioma.constants import CLASSES

CLASS_KEYS = ("auc", "auc_ci_low", "auc_ci_high", "precision", "recall", "f1", "average_precision")


def _finite_or_none(value: float | None) -> float | None:
    """Return ``value`` as a float, or None when it is missing or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Return the ROC AUC of ``score`` for boolean ``positive`` (ties count half), NaN if undefined.

    The Mann-Whitney form equals scikit-learn's trapezoidal AUC and is fast enough for
    thousands of bootstrap resamples.
    """
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def class_aucs(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Return the one-vs-rest AUC of every class (NaN where the class is absent or alone)."""
    return np.array([rank_auc(labels == k, probs[:, k]) for k in range(probs.shape[1])])


def macro_auc(labels: np.ndarray, probs: np.ndarray, *, strict: bool = True) -> float:
    """Return the mean one-vs-rest AUC over classes.

    Args:
        labels: int class indices (N,).
        probs: class probabilities (N, K).
        strict: NaN unless every class's AUC is defined (the published macro AUC); when False,
            the mean over the classes whose AUC is defined (used to monitor small validation
            sets that lack a class), NaN when none is.
    """
    aucs = class_aucs(labels, probs)
    if strict:
        return float(aucs.mean()) if np.isfinite(aucs).all() else math.nan
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else math.nan


def bootstrap_auc_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    level: float = 0.95,
) -> np.ndarray:
    """Percentile bootstrap CI of each class's AUC, resampling groups (patients) with replacement.

    Args:
        labels: int class indices (N,).
        probs: class probabilities (N, K).
        groups: the patient of each row (N,); all rows of a drawn patient enter the resample.
        n_boot: number of resamples; 0 gives NaN intervals.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        (K, 2) array of low and high bounds, NaN where no resample had the AUC defined.
    """
    n_classes = probs.shape[1]
    out = np.full((n_classes, 2), np.nan)
    if n_boot <= 0 or labels.size == 0:
        return out
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    draws = np.full((n_boot, n_classes), np.nan)
    for b in range(n_boot):
        picked = rng.integers(0, len(members), size=len(members))
        rows = np.concatenate([members[g] for g in picked])
        draws[b] = class_aucs(labels[rows], probs[rows])
    alpha = (1 - level) / 2
    for k in range(n_classes):
        valid = draws[np.isfinite(draws[:, k]), k]
        if valid.size:
            out[k] = np.quantile(valid, [alpha, 1 - alpha])
    return out


def _average_precision(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Average precision of one class, None when the class has no positive example."""
    if not positive.any():
        return None
    return _finite_or_none(average_precision_score(positive, score))


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Every metric of one split at one level, shaped as in ``metrics.json``.

    Args:
        labels: int class indices in ``CLASSES`` order (N,); only labelled rows.
        probs: class probabilities (N, 3), rows summing to 1.
        groups: the patient of each row, for the bootstrap.
        n_boot: bootstrap resamples for the AUC CIs.
        seed: bootstrap seed.

    Returns:
        ``{"n", "accuracy", "macro_auc", "confusion_matrix", "classes": {class: {...}}}`` with
        None for every undefined value.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = int(labels.size)
    k_all = list(range(len(CLASSES)))
    result: dict[str, Any] = {"n": n, "accuracy": None, "macro_auc": None}
    if n == 0:
        result["confusion_matrix"] = None
        result["classes"] = {name: dict.fromkeys(CLASS_KEYS) for name in CLASSES}
        return result
    predicted = probs.argmax(axis=1)
    result["accuracy"] = float(accuracy_score(labels, predicted))
    result["macro_auc"] = _finite_or_none(macro_auc(labels, probs, strict=True))
    result["confusion_matrix"] = confusion_matrix(labels, predicted, labels=k_all).tolist()
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=k_all, zero_division=np.nan
    )
    ci = bootstrap_auc_ci(labels, probs, groups, n_boot=n_boot, seed=seed)
    classes = {}
    for k, name in enumerate(CLASSES):
        positive = labels == k
        auc = roc_auc_score(positive, probs[:, k]) if 0 < positive.sum() < n else None
        classes[name] = {
            "auc": _finite_or_none(auc),
            "auc_ci_low": _finite_or_none(ci[k, 0]),
            "auc_ci_high": _finite_or_none(ci[k, 1]),
            "precision": _finite_or_none(precision[k]),
            "recall": _finite_or_none(recall[k]),
            "f1": _finite_or_none(f1[k]),
            "average_precision": _average_precision(positive, probs[:, k]),
        }
    result["classes"] = classes
    return result

"""Uncertainty of an ensemble's prediction per patient, and whether it singles out the errors.

Measures, from M member models' class probabilities of N patients (M, N, K):

- ``sd``: the SD across members of the probability of the ensemble's predicted class;
- ``entropy``: the predictive entropy H[mean] (nats), ``normalised_entropy`` = H / log K in [0, 1];
- ``expected_entropy``: the members' mean entropy (what each model itself is unsure of);
- ``mutual_information``: H[mean] - mean H[member], the members' disagreement (0 for one model).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import entr


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) along the last axis."""
    return entr(np.clip(probs, 0.0, 1.0)).sum(axis=-1)


def ensemble_uncertainty(member_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Mean probabilities and uncertainty measures of an ensemble (see the module docstring).

    Args:
        member_probs: (M, N, K) probabilities of M members for N patients.

    Returns:
        ``mean`` (N, K) and, each (N,), ``sd`` (population SD, ddof 0), ``entropy``,
        ``expected_entropy``, ``mutual_information``, ``normalised_entropy``; with one member
        ``sd`` and ``mutual_information`` are 0.

    Raises:
        ValueError: ``member_probs`` is not (M, N, K) with M >= 1 and K >= 2.
    """
    member_probs = np.asarray(member_probs, dtype=np.float64)
    if member_probs.ndim != 3 or member_probs.shape[0] < 1 or member_probs.shape[2] < 2:
        raise ValueError(
            f"member_probs must be (M, N, K) with M >= 1, K >= 2; got {member_probs.shape}"
        )
    mean = member_probs.mean(axis=0)
    n_classes = member_probs.shape[2]
    predicted = mean.argmax(axis=1) if mean.size else np.zeros(0, int)
    chosen = np.take_along_axis(member_probs, predicted[None, :, None], axis=2)[..., 0]
    entropy = _entropy(mean)
    expected = _entropy(member_probs).mean(axis=0)
    return {
        "mean": mean,
        "sd": chosen.std(axis=0, ddof=0),
        "entropy": entropy,
        "expected_entropy": expected,
        "mutual_information": np.clip(entropy - expected, 0.0, None),
        "normalised_entropy": entropy / math.log(n_classes),
    }


def review_flags(uncertainty: np.ndarray, threshold: float) -> np.ndarray:
    """True where ``uncertainty`` is above ``threshold`` or undefined (NaN)."""
    values = np.asarray(uncertainty, dtype=np.float64)
    return ~(values <= threshold)


def risk_coverage(correct: np.ndarray, uncertainty: np.ndarray) -> pd.DataFrame:
    """Accuracy of the k most certain patients for every coverage k / N.

    Patients are ranked by ascending uncertainty (stable on ties, NaN last).

    Returns:
        Columns ``coverage``, ``accuracy`` and ``threshold`` (the k-th patient's uncertainty).
    """
    correct = np.asarray(correct, dtype=bool)
    values = np.asarray(uncertainty, dtype=np.float64)
    order = np.argsort(np.nan_to_num(values, nan=np.inf), kind="stable")
    hits = np.cumsum(correct[order])
    k = np.arange(1, len(order) + 1)
    return pd.DataFrame(
        {"coverage": k / max(len(order), 1), "accuracy": hits / k, "threshold": values[order]}
    )


def area_under_risk_coverage(correct: np.ndarray, uncertainty: np.ndarray) -> float:
    """Mean risk (1 - accuracy) over the coverages k / N; NaN without patients."""
    curve = risk_coverage(correct, uncertainty)
    return float((1 - curve["accuracy"]).mean()) if len(curve) else math.nan


def flagged_accuracy(correct: np.ndarray, flags: np.ndarray) -> dict[str, int | float | None]:
    """Counts and accuracy of the flagged and the unflagged patients (None for an empty group)."""
    correct = np.asarray(correct, dtype=bool)
    flags = np.asarray(flags, dtype=bool)

    def accuracy(group: np.ndarray) -> float | None:
        return float(group.mean()) if group.size else None

    return {
        "n_flagged": int(flags.sum()),
        "n_unflagged": int((~flags).sum()),
        "accuracy_flagged": accuracy(correct[flags]),
        "accuracy_unflagged": accuracy(correct[~flags]),
    }

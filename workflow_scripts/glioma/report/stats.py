"""Table 1's tests across molecular classes, Bonferroni post-hoc pairs, and the p-value format.

Choices (repeated in Table 1's footnote):

- Age: Kruskal-Wallis H test, because age in glioma cohorts is not normal (IDH-wildtype patients
  are older, with a long left tail). Post-hoc: two-sided Mann-Whitney U test on each pair of
  classes, the pairwise rank test that Kruskal-Wallis generalises. Dunn's test is the other usual
  choice but is not in SciPy; Mann-Whitney is, and is easier to check by hand.
- Sex and grade: Pearson chi-square test of independence on the class x level table, dropping
  levels (and classes) that no patient has, since they add only zero cells. Post-hoc: on each
  pair of classes, Fisher's exact test when the pair's table is 2x2 (exact whatever the counts,
  which are small for rare classes), else chi-square on the 2 x k table.
- Bonferroni: each pairwise p is multiplied by the number of pairs whose test is defined, capped
  at 1. Pairs are reported whatever the omnibus p, so the reader sees every comparison.
- A test that cannot be computed (fewer than two groups with data, no variation) gives None,
  printed "n/a", rather than an error: a small cohort should still get its Table 1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: Bonferroni-corrected p-values of each pair of groups, keyed by (group a, group b).
PairwiseP = dict[tuple[str, str], float | None]


def format_p(p: float | None) -> str:
    """Format a p-value as papers do.

    ``< 0.001`` below 0.001; otherwise two significant digits with at most three decimals
    (0.0042 -> ``0.004``, 0.0123 -> ``0.012``, 0.456 -> ``0.46``); ``> 0.99`` above 0.99;
    ``n/a`` when undefined.
    """
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    if p > 0.99:
        return "> 0.99"
    rounded = float(f"{p:.2g}")  # round first so 0.0996 prints as 0.10, not 0.100
    decimals = 3 if rounded < 0.1 else 2
    return f"{rounded:.{decimals}f}"


def kruskal_p(groups: Sequence[np.ndarray]) -> float | None:
    """Return the Kruskal-Wallis p across the non-empty ``groups``, or None when undefined."""
    present = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(present) < 2:
        return None
    try:
        return float(stats.kruskal(*present).pvalue)
    except ValueError:  # every value identical: no ranks to compare
        return None


def _trim(table: np.ndarray) -> np.ndarray:
    """Drop the rows and columns of a contingency table that hold no patient."""
    table = np.asarray(table, dtype=float)
    return table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]


def chi2_p(table: np.ndarray) -> float | None:
    """Return the chi-square test of independence p of a contingency table, None if undefined."""
    table = _trim(table)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None
    return float(stats.chi2_contingency(table).pvalue)


def pair_table_p(table: np.ndarray) -> float | None:
    """Return Fisher's exact p of a 2x2 table, else the chi-square p (None if undefined)."""
    table = _trim(table)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None
    if table.shape == (2, 2):
        return float(stats.fisher_exact(table).pvalue)
    return float(stats.chi2_contingency(table).pvalue)


def mannwhitney_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Return the two-sided Mann-Whitney U p of two samples, None if either is empty."""
    if len(a) == 0 or len(b) == 0:
        return None
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def bonferroni(raw: Mapping[tuple[str, str], float | None]) -> PairwiseP:
    """Multiply each defined p by the number of defined p-values, capped at 1."""
    m = sum(p is not None for p in raw.values())
    return {pair: None if p is None else min(1.0, p * m) for pair, p in raw.items()}


def pairwise_numeric(groups: Mapping[str, np.ndarray]) -> PairwiseP:
    """Bonferroni-corrected Mann-Whitney U p of every pair of groups, in the mapping's order."""
    raw = {
        (a, b): mannwhitney_p(groups[a], groups[b]) for a, b in itertools.combinations(groups, 2)
    }
    return bonferroni(raw)


def pairwise_categorical(counts: pd.DataFrame) -> PairwiseP:
    """Bonferroni-corrected p of every pair of groups (rows of ``counts``, levels as columns)."""
    raw = {
        (a, b): pair_table_p(counts.loc[[a, b]].to_numpy())
        for a, b in itertools.combinations(counts.index, 2)
    }
    return bonferroni(raw)

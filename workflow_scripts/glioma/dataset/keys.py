"""Row filters of the shard loader: which (cohort, patient, slice) rows belong to a split."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from glioma.constants import SPLITS, UNLABELLED_SPLIT, class_index
from glioma.dataset.rowgroups import KeyFilter
from glioma.dataset.splits import SLICE_SPLIT, check_ratios, slice_split

log = logging.getLogger(__name__)

LOADER_SPLITS = (*SPLITS, UNLABELLED_SPLIT, "all")


@dataclass(frozen=True)
class SplitKeys:
    """Row filter for one split: patients of the split, plus slices of ``slice``-level patients.

    A plain class (not a closure) so that DataLoader workers started with spawn can pickle it.
    """

    patients: frozenset[tuple[str, str]]
    slice_patients: frozenset[tuple[str, str]]
    split: str
    ratios: Mapping[str, float]
    seed: int

    def __call__(self, cohort: str, patient: str, slice_index: int) -> bool:
        key = (cohort, patient)
        if key in self.patients:
            return True
        return key in self.slice_patients and (
            slice_split(self.seed, cohort, patient, slice_index, self.ratios) == self.split
        )


def split_keys(
    splits: pd.DataFrame,
    split: str,
    *,
    ratios: Mapping[str, float] | None = None,
    split_seed: int | None = None,
) -> KeyFilter:
    """Return the row filter of ``split``: train, val, test, unlabelled or all.

    Under ``split.level: slice`` (split column ``slice``) a labelled slice's split is drawn at
    load time from (``split_seed``, cohort, patient, slice_index) with ``ratios`` (then required).
    """
    if split not in LOADER_SPLITS:
        raise ValueError(f"split must be one of {', '.join(LOADER_SPLITS)}; got {split!r}")
    if split == "all":
        return None
    chosen = splits[splits["split"] == split]
    patients = frozenset(zip(chosen["cohort"], chosen["patient"], strict=True))
    by_slice = splits[splits["split"] == SLICE_SPLIT]
    if split == UNLABELLED_SPLIT or by_slice.empty:
        return patients
    if ratios is None or split_seed is None:
        raise ValueError("the splits are slice-level: make_loader needs ratios and split_seed")
    log.warning(
        "SLICE-LEVEL SPLIT (the study's protocol): slices of one patient are in train, val "
        "and test; scores are inflated by patient leakage."
    )
    slice_patients = frozenset(zip(by_slice["cohort"], by_slice["patient"], strict=True))
    return SplitKeys(patients, slice_patients, split, check_ratios(ratios), int(split_seed))


def manifest_labels(splits: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Return (cohort, patient) -> class index (-1 unlabelled) of a split manifest."""
    rows = zip(splits["cohort"], splits["patient"], splits["class"], strict=True)
    return {(cohort, patient): class_index(name) for cohort, patient, name in rows}

"""Cross-validation folds of the development patients, and each fold's training manifest.

Two schemes share one representation: the manifest's development patients get split ``cv`` and
a ``fold`` ID, and every fold has its own manifest (``results/model/folds/{fold}/splits.tsv``)
in which that fold's patients are ``test`` (held out of its model) and the other development
patients are ``train`` or ``val`` (the inner validation set of its early stopping). Test and
unlabelled patients are in no fold manifest: no fold model ever trains or stops on them.

- **k-fold** (``split.folds: K``): the labelled patients the split does not put in test are dealt
  to folds ``0..K-1`` within each stratum (cohort x class, or class with ``strata: class``),
  ranked by a SHA-256 of (seed, "fold", cohort, patient) and dealt round-robin from an offset
  drawn per stratum. Every fold holds its share of each stratum; a stratum lies within one
  cohort, so adding a cohort moves nobody between folds (adding patients to a cohort can move
  the patients of its strata ranked after them).
- **leave-one-cohort-out** (``split.level: cohort`` with no ``test_cohorts``): each cohort with
  labelled patients is a fold, named by the cohort, so that each model is tested on a hospital it
  never saw.

The inner validation split of fold ``f`` ranks the remaining patients by a hash salted with
``f`` and uses ``split.method`` with the train:val ratio, so that each development patient is
trained on by most fold models rather than being validation data in all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from glioma.constants import CV_SPLIT
from glioma.dataset.hashing import stable_fraction
from glioma.io import atomic_path

log = logging.getLogger(__name__)

#: Fold value of patients outside cross-validation (test, unlabelled, or no folds).
NO_FOLD = ""


def deal_folds(
    table: pd.DataFrame, *, folds: int, seed: int, strata: str = "cohort_class"
) -> list[str]:
    """Return the fold ID ("0".."K-1") of every row of ``table`` (columns cohort, patient, class).

    Rows are dealt round-robin within each stratum, in the order of their hash, starting from
    a fold drawn per stratum (so that the strata's remainders do not all land in fold 0).
    """
    if folds < 2:
        raise ValueError(f"split.folds must be 0 (off) or at least 2; got {folds}")
    out = [NO_FOLD] * len(table)
    frame = table.reset_index(drop=True).assign(
        _fraction=[
            stable_fraction(seed, "fold", c, p)
            for c, p in zip(table["cohort"], table["patient"], strict=True)
        ],
        _row=range(len(table)),
        _stratum="*" if strata == "class" else table["cohort"].to_numpy(),
    )
    for (stratum, label), group in frame.groupby(["_stratum", "class"], sort=True):
        offset = int(stable_fraction(seed, "fold-offset", stratum, label) * folds)
        ranked = group.sort_values(["_fraction", "patient"], kind="stable")["_row"]
        for position, row in enumerate(ranked):
            out[row] = str((position + offset) % folds)
    return out


def fold_ids(splits: pd.DataFrame) -> list[str]:
    """The folds of a manifest, sorted (numerically for k-fold, by name for cohorts)."""
    if "fold" not in splits.columns:
        return []
    ids = sorted(set(splits["fold"]) - {NO_FOLD})
    return sorted(ids, key=lambda fold: (0, int(fold), "") if fold.isdigit() else (1, 0, fold))


def fold_manifest(
    splits: pd.DataFrame,
    fold: str,
    *,
    ratios: Mapping[str, float],
    seed: int,
    method: str = "hash",
    strata: str = "cohort_class",
) -> pd.DataFrame:
    """Return fold ``fold``'s training manifest: its patients ``test``, the others train/val.

    Args:
        splits: the run's manifest, with ``fold`` (from :func:`glioma.dataset.splits.read_splits`).
        fold: a fold ID of the manifest.
        ratios: the split ratios; train:val sets the inner validation share.
        seed: the split seed.
        method, strata: how the inner validation split is drawn (as ``split.method`` and
            ``split.strata``).

    Raises:
        ValueError: ``fold`` is not a fold of the manifest.
    """
    # Imported here: splits imports this module to assign folds.
    from glioma.dataset.splits import SPLIT_COLUMNS, _within

    if not (splits["split"] == CV_SPLIT).any():
        raise ValueError("the manifest has no cross-validated (cv) patients: it has no folds")
    development = splits[splits["split"] == CV_SPLIT].reset_index(drop=True)
    held_out = development["fold"] == fold
    rest = development[~held_out].reset_index(drop=True)
    train_share = ratios["train"] / (ratios["train"] + ratios["val"])
    inner = {"train": train_share, "val": 1 - train_share, "test": 0.0}
    fractions = [
        stable_fraction(seed, "inner", fold, c, p)
        for c, p in zip(rest["cohort"], rest["patient"], strict=True)
    ]
    rest["split"] = _within(rest, fractions, inner, seed, method, strata) if len(rest) else []
    test = development[held_out].assign(split="test")
    out = pd.concat([rest, test], ignore_index=True)[[*SPLIT_COLUMNS, "fold"]]
    return out.sort_values(["cohort", "patient"], kind="stable").reset_index(drop=True)


def check_folds(folds: int, level: str, test_cohorts: Sequence[str]) -> None:
    """Raise when ``split.folds`` does not go with the split level.

    Raises:
        ValueError: folds with the slice protocol, folds below 2 (other than 0), or k-fold with
            leave-one-cohort-out.
    """
    if folds == 0:
        return
    if folds < 2:
        raise ValueError(f"split.folds must be 0 (off) or at least 2; got {folds}")
    if level == "slice":
        raise ValueError(
            "split.folds cannot be used with split.level slice: folds are sets of patients"
        )
    if level == "cohort" and not test_cohorts:
        raise ValueError(
            "split.level cohort without test_cohorts is leave-one-cohort-out, one fold per "
            "cohort; set split.folds to 0, or name test_cohorts to cross-validate the others"
        )


def write_fold_manifest(
    splits_path: str | Path,
    out_path: str | Path,
    fold: str,
    *,
    ratios: Mapping[str, float],
    seed: int,
    method: str = "hash",
    strata: str = "cohort_class",
) -> pd.DataFrame:
    """Write fold ``fold``'s training manifest (see :func:`fold_manifest`) atomically.

    Returns:
        The manifest written.
    """
    from glioma.dataset.splits import read_splits

    manifest = fold_manifest(
        read_splits(splits_path), fold, ratios=ratios, seed=seed, method=method, strata=strata
    )
    counts = manifest.groupby(["split", "class"]).size().unstack("class", fill_value=0)
    log.info("fold %s: patients per split and class:\n%s", fold, counts.to_string())
    if not (manifest["split"] == "test").any():
        log.warning("fold %s holds out no patient: its model predicts nobody out-of-fold", fold)
    with atomic_path(out_path) as tmp:
        manifest.to_csv(tmp, sep="\t", index=False)
    return manifest

"""Cross-validated predictions: out-of-fold for development patients, the fold mean for the rest.

Every fold model predicts every slice in the shards (``results/model/folds/{fold}/slices.parquet``);
:func:`combine_folds` keeps, for a development patient (split ``cv``), the prediction of the one
model whose training and early stopping never saw it (its fold's), and for everyone else (test,
unlabelled, excluded) the mean of all fold models. The patient table says which made each row
(``model``: ``fold-<id>`` or ``ensemble``) and how uncertain it is (:func:`uncertainty_columns`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from glioma.constants import CV_SPLIT
from glioma.dataset.splits import read_splits
from glioma.errors import InputError
from glioma.io import atomic_path
from glioma.model.predict import (
    PATIENT_COLUMNS,
    PREDICTION_COLUMNS,
    PROB_COLUMNS,
    patient_row,
    uncertainty_columns,
)

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
KEY_COLUMNS = ("cohort", "patient", "slice_index")


def fold_model(fold: str) -> str:
    """The ``model`` value of rows predicted by one fold's model."""
    return f"fold-{fold}"


def _check_aligned(fold_slices: Mapping[str, pd.DataFrame], paths: Mapping[str, str]) -> None:
    """Raise unless every fold predicted the same slices in the same order."""
    folds = list(fold_slices)
    first = fold_slices[folds[0]][list(KEY_COLUMNS)].reset_index(drop=True)
    for fold in folds[1:]:
        other = fold_slices[fold][list(KEY_COLUMNS)].reset_index(drop=True)
        if not first.equals(other):
            raise InputError(
                f"fold {fold} predicted other slices than fold {folds[0]} (stale predictions? "
                "rerun its predict_fold job)",
                path=paths.get(fold),
            )


def combine_folds(
    fold_slices: Mapping[str, pd.DataFrame],
    splits: pd.DataFrame,
    *,
    review_threshold: float,
    paths: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold predictions for ``cv`` patients, the fold ensemble for the others.

    Args:
        fold_slices: fold ID -> that fold model's slice table over every patient (the columns
            of :data:`glioma.model.predict.SLICE_COLUMNS`, the same rows in every table).
        splits: the run's manifest (with ``fold``).
        review_threshold: normalised entropy above which a patient is flagged for review.
        paths: fold ID -> file, named in errors.

    Returns:
        The slice table (with ``model``) and the patient table (:data:`PREDICTION_COLUMNS`).

    Raises:
        InputError: the folds predicted different slices, or a development patient's fold has
            no model.
    """
    if not fold_slices:
        raise ValueError("no fold predictions to combine")
    paths = dict(paths or {})
    _check_aligned(fold_slices, paths)
    folds = list(fold_slices)
    base = fold_slices[folds[0]].reset_index(drop=True)
    stack = np.stack([fold_slices[f][list(PROB_COLUMNS)].to_numpy(np.float64) for f in folds])
    fold_of = {
        (c, p): f
        for c, p, s, f in splits[["cohort", "patient", "split", "fold"]].itertuples(index=False)
        if s == CV_SPLIT
    }
    missing = sorted(set(fold_of.values()) - set(folds))
    if missing:
        raise InputError(f"the manifest's folds {missing} have no predictions to combine")
    slices, patients, members = [], [], []
    groups = base.groupby(["cohort", "patient"], sort=False, group_keys=False).indices
    for (cohort, patient), rows in groups.items():
        member = stack[:, rows].mean(axis=1)  # each model's patient probabilities (M, K)
        fold = fold_of.get((cohort, patient))
        if fold is None:
            probs, model, member_rows = stack[:, rows].mean(axis=0), ENSEMBLE, member
        else:
            k = folds.index(fold)
            probs, model, member_rows = stack[k, rows], fold_model(fold), member[k : k + 1]
        part = base.iloc[rows].copy()
        part[list(PROB_COLUMNS)] = probs.astype(np.float32)
        part["model"] = model
        slices.append(part)
        split = str(part["split"].iloc[0]) if len(part) else ""
        row = patient_row(cohort, patient, probs, split)
        patients.append({**row, "model": model})
        members.append(member_rows)
    slice_table = pd.concat(slices, ignore_index=True) if slices else base.assign(model="")
    return slice_table, _patient_table(patients, members, review_threshold)


def _patient_table(
    rows: Sequence[dict], members: Sequence[np.ndarray], threshold: float
) -> pd.DataFrame:
    """The patient table: one row per patient, uncertainty from its member models."""
    table = pd.DataFrame(rows, columns=[*PATIENT_COLUMNS, "model"])
    # One call per patient: patients differ in their member count (1 out-of-fold, K ensemble).
    parts = [uncertainty_columns(member[:, None, :], threshold) for member in members]
    extra = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    table = pd.concat([table, extra], axis=1)
    return table.reindex(columns=list(PREDICTION_COLUMNS))


def ensemble_predictions(
    fold_paths: Mapping[str, str | Path],
    splits_path: str | Path,
    slices_out: str | Path,
    patients_out: str | Path,
    *,
    review_threshold: float,
) -> pd.DataFrame:
    """Combine the fold models' slice predictions (files) and write both tables atomically.

    Args:
        fold_paths: fold ID -> ``results/model/folds/{fold}/slices.parquet``.
        splits_path: ``results/splits.tsv``.
        slices_out: ``results/predictions/slices.parquet``.
        patients_out: ``results/predictions/predictions.csv``.
        review_threshold: ``evaluate.review_entropy``.

    Returns:
        The patient table written.
    """
    splits = read_splits(splits_path)
    fold_slices = {fold: pd.read_parquet(path) for fold, path in fold_paths.items()}
    slices, patients = combine_folds(
        fold_slices,
        splits,
        review_threshold=review_threshold,
        paths={fold: str(path) for fold, path in fold_paths.items()},
    )
    with atomic_path(slices_out) as tmp:
        slices.to_parquet(tmp, index=False)
    with atomic_path(patients_out) as tmp:
        patients.to_csv(tmp, index=False)
    counts = patients["model"].value_counts().to_dict()
    log.info("combined %d folds: %d patients by model %s", len(fold_slices), len(patients), counts)
    return patients

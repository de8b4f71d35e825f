"""A logistic-regression baseline on first-order slice features, on the network's shards and split.

Each slice becomes 6 numbers per sequence (:data:`FEATURE_NAMES`); a standardised, class-balanced
logistic regression is fitted on the training split's labelled slices and predicts every slice
of every patient. Its tables have the columns of :mod:`glioma.model.predict`, so
:mod:`glioma.model.evaluate` scores it with the network's code: a network that does not beat it
has learnt little beyond the intensities.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from glioma.constants import CLASSES, SEQUENCES, class_index
from glioma.dataset.loader import iter_patient_batches
from glioma.dataset.splits import read_splits
from glioma.io import atomic_path
from glioma.model.availability import FILL
from glioma.model.data import UNLISTED_SPLIT, slice_splits
from glioma.model.ensemble import combine_folds
from glioma.model.predict import PATIENT_COLUMNS, patient_row, slice_rows

log = logging.getLogger(__name__)

#: Statistics of one channel of one slice, in feature order.
STATISTICS = ("mean", "sd", "p10", "p90", "centre_mean", "above2")
FEATURE_NAMES = tuple(f"{sequence}_{stat}" for sequence in SEQUENCES for stat in STATISTICS)
#: The crops are z-scored in the brain: above 2 is bright (enhancing tumour, oedema on FLAIR).
BRIGHT = 2.0


class PatientFeatures(NamedTuple):
    """The features of one patient's slices with the class and splits the network sees."""

    cohort: str
    patient: str
    slice_index: np.ndarray
    features: np.ndarray
    class_name: str
    slice_split: list[str]
    split: str


def slice_features(images: np.ndarray) -> np.ndarray:
    """Return the first-order features (N, 6*C) of slices (N, C, H, W), float64.

    Per channel: mean, SD (population), 10th and 90th percentiles (linear interpolation), mean of
    the central square (the central half of height and width) and the fraction of pixels above 2.
    An absent sequence (a NaN channel) is taken as its fill value,
    :data:`glioma.model.availability.FILL` (0), so its six features are 0.

    Raises:
        ValueError: ``images`` is not 4-dimensional.
    """
    x = np.nan_to_num(np.asarray(images, dtype=np.float64), nan=FILL)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W); got shape {x.shape}")
    n, channels, height, width = x.shape
    flat = x.reshape(n, channels, height * width)
    ch, cw = max(1, height // 2), max(1, width // 2)
    top, left = (height - ch) // 2, (width - cw) // 2
    centre = x[:, :, top : top + ch, left : left + cw]
    p10, p90 = np.percentile(flat, [10, 90], axis=2)
    stats = [flat.mean(2), flat.std(2), p10, p90, centre.mean((2, 3)), (flat > BRIGHT).mean(2)]
    return np.stack(stats, axis=2).reshape(n, channels * len(STATISTICS))


def fit_model(
    features: np.ndarray, labels: np.ndarray, *, c: float, max_iter: int, seed: int
) -> Pipeline:
    """Fit StandardScaler + class-balanced L2 logistic regression on labelled slices.

    Raises:
        ValueError: the labels hold fewer than two classes.
    """
    present = np.unique(labels)
    if present.size < 2:
        names = [CLASSES[k] for k in present]
        raise ValueError(f"the baseline needs training slices of two classes or more; got {names}")
    regression = LogisticRegression(
        C=c, class_weight="balanced", max_iter=max_iter, random_state=seed
    )
    return make_pipeline(StandardScaler(), regression).fit(features, labels)


def predict_proba(model: Pipeline, features: np.ndarray) -> np.ndarray:
    """Return probabilities (N, 3) in ``CLASSES`` order; a class absent from training gets 0."""
    probs = np.zeros((len(features), len(CLASSES)), dtype=np.float64)
    if len(features):
        probs[:, model.classes_] = model.predict_proba(features)
    return probs.astype(np.float32)


def model_document(model: Pipeline, n_train: np.ndarray) -> dict[str, Any]:
    """The fitted model as plain JSON: features, classes, scaler and coefficients.

    ``coef`` has a row per class in ``classes`` (one row, the second class's log-odds, when
    only two classes were in training); features are standardised before the coefficients.
    """
    scaler, regression = model.named_steps["standardscaler"], model[-1]
    return {
        "model": "StandardScaler + LogisticRegression (L2, class_weight balanced)",
        "C": float(regression.C),
        "max_iter": int(regression.max_iter),
        "features": list(FEATURE_NAMES),
        "classes": [CLASSES[k] for k in regression.classes_],
        "train_slices": dict(zip(CLASSES, n_train.tolist(), strict=True)),
        "scaler_mean": scaler.mean_.tolist(),
        "scaler_scale": scaler.scale_.tolist(),
        "coef": regression.coef_.tolist(),
        "intercept": regression.intercept_.tolist(),
    }


def read_features(
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    *,
    ratios: Mapping[str, float],
    seed: int,
) -> list[PatientFeatures]:
    """Features, class and per-slice split of every patient in the shards, labelled or not."""
    out = []
    for cohort, patient, images, slice_index in iter_patient_batches(shard_dirs):
        class_name, per_slice = slice_splits(
            splits, cohort, patient, slice_index, ratios=ratios, seed=seed
        )
        listed = splits[(splits["cohort"] == cohort) & (splits["patient"] == patient)]
        split = str(listed["split"].iloc[0]) if len(listed) else UNLISTED_SPLIT
        features = slice_features(images.numpy())
        out.append(
            PatientFeatures(cohort, patient, slice_index, features, class_name, per_slice, split)
        )
    return out


def prediction_tables(
    patients: Sequence[PatientFeatures], probs: Sequence[np.ndarray]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The slices.parquet and predictions.csv tables of ``predict``, from per-patient probs."""
    pairs = list(zip(patients, probs, strict=True))
    slices = pd.concat(
        [slice_rows(p.cohort, p.patient, p.slice_index, pr, p.class_name, p.slice_split)
         for p, pr in pairs],
        ignore_index=True,
    )  # fmt: skip
    rows = [patient_row(p.cohort, p.patient, pr, p.split) for p, pr in pairs]
    return slices, pd.DataFrame(rows, columns=list(PATIENT_COLUMNS))


def _fit_and_predict(
    patients: Sequence[PatientFeatures],
    train_keys: set[tuple[str, str]] | None,
    settings: Mapping[str, Any],
    seed: int,
    where: str,
) -> tuple[Pipeline, np.ndarray, list[np.ndarray]]:
    """Fit on the training slices and predict every patient's slices.

    ``train_keys`` None fits on the slices whose split is ``train`` (slice-level protocol
    included); otherwise on the labelled slices of those (cohort, patient).

    Returns:
        The model, the class counts of its training slices and the per-patient probabilities.
    """
    features = np.concatenate([p.features for p in patients])
    labels = np.concatenate([np.full(len(p.features), class_index(p.class_name)) for p in patients])
    if train_keys is None:
        train = np.concatenate([np.asarray(p.slice_split) == "train" for p in patients])
    else:
        train = np.concatenate(
            [np.full(len(p.features), (p.cohort, p.patient) in train_keys) for p in patients]
        )
    train &= labels >= 0
    c, max_iter = float(settings["C"]), int(settings["max_iter"])
    try:
        model = fit_model(features[train], labels[train], c=c, max_iter=max_iter, seed=seed)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    ends = np.cumsum([len(p.features) for p in patients])[:-1]
    log.info("baseline fitted on %d of %d slices (%s)", int(train.sum()), len(features), where)
    counts = np.bincount(labels[train], minlength=len(CLASSES))
    return model, counts, np.split(predict_proba(model, features), ends)


def fit_baseline(
    shard_dirs: Sequence[str | Path],
    splits_path: str | Path,
    slices_out: str | Path,
    patients_out: str | Path,
    *,
    config: Mapping[str, Any],
    model_out: str | Path | None = None,
    fold_paths: Mapping[str, str | Path] | None = None,
) -> pd.DataFrame:
    """Fit the baseline on the training slices, predict every slice and write the tables.

    Args:
        shard_dirs: ``results/shards/{cohort}`` folders.
        splits_path: ``results/splits.tsv``.
        slices_out: ``results/baseline/slices.parquet`` (columns of ``predict.SLICE_COLUMNS``).
        patients_out: ``results/baseline/predictions.csv`` (``predict.PATIENT_COLUMNS``).
        config: the validated workflow config (``baseline``, ``split.ratios``, ``seed``).
        model_out: ``results/baseline/model.json``, or None to write no model file.
        fold_paths: under cross-validation, fold ID -> that fold's manifest: one baseline is
            fitted per fold on its train patients, and its predictions combined as the
            network's (out-of-fold for development patients, the fold mean for the others).

    Returns:
        The patient table written to ``patients_out``.

    Raises:
        ValueError: the shards hold no slice, or the training split's labelled slices fewer
            than two classes.
    """
    settings, seed = config["baseline"], int(config["seed"])
    splits = read_splits(splits_path)
    patients = read_features(shard_dirs, splits, ratios=config["split"]["ratios"], seed=seed)
    if not patients:
        raise ValueError(f"no slice in the shards {[str(d) for d in shard_dirs]}")
    if not fold_paths:
        model, counts, probs = _fit_and_predict(patients, None, settings, seed, str(splits_path))
        slice_table, patient_table = prediction_tables(patients, probs)
        document = model_document(model, counts)
    else:
        fold_slices, document = {}, {"folds": {}}
        for fold, path in fold_paths.items():
            manifest = read_splits(path)
            train = manifest[manifest["split"] == "train"]
            keys = set(zip(train["cohort"], train["patient"], strict=True))
            model, counts, probs = _fit_and_predict(patients, keys, settings, seed, str(path))
            fold_slices[fold] = prediction_tables(patients, probs)[0]
            document["folds"][fold] = model_document(model, counts)
        slice_table, patient_table = combine_folds(
            fold_slices, splits, review_threshold=float(config["evaluate"]["review_entropy"])
        )
    with atomic_path(slices_out) as tmp:
        slice_table.to_parquet(tmp, index=False)
    with atomic_path(patients_out) as tmp:
        patient_table.to_csv(tmp, index=False)
    if model_out is not None:
        with atomic_path(model_out) as tmp:
            tmp.write_text(json.dumps(document, indent=2) + "\n")
    return patient_table

"""Slice and patient probabilities for every patient in the shards, labelled or not."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from glioma.constants import CLASSES
from glioma.dataset.loader import iter_patient_batches
from glioma.dataset.splits import read_splits
from glioma.io import atomic_path
from glioma.model.data import UNLISTED_SPLIT, slice_splits
from glioma.model.epoch import autocast, to_device
from glioma.model.nets import pick_device
from glioma.model.state import load_classifier
from glioma.model.uncertainty import ensemble_uncertainty, review_flags

log = logging.getLogger(__name__)

PROB_COLUMNS = tuple(f"p_{name}" for name in CLASSES)
SLICE_COLUMNS = ("cohort", "patient", "slice_index", "class", "split", *PROB_COLUMNS)
PATIENT_COLUMNS = ("patient", "cohort", *PROB_COLUMNS, "predicted_class", "n_slices", "split")
#: ``model`` of the rows of a single-split run's one model.
SINGLE = "single"
#: Columns of predictions.csv after the probabilities, class, slice count and split: which
#: model(s) made the row (``single``, ``fold-<id>`` out-of-fold, or ``ensemble``), and how
#: uncertain it is.
UNCERTAINTY_COLUMNS = (
    "model",
    "n_models",
    "sd",
    "entropy",
    "normalised_entropy",
    "mutual_information",
    "review",
)
PREDICTION_COLUMNS = (*PATIENT_COLUMNS, *UNCERTAINTY_COLUMNS)


def uncertainty_columns(member_probs: np.ndarray, threshold: float) -> pd.DataFrame:
    """Uncertainty of N patients' predictions from M models' probabilities (M, N, K).

    ``sd`` (of the predicted class's probability across models) and ``mutual_information``
    (the models' disagreement) need two models or more and are NaN with one; ``entropy``
    (nats) and ``normalised_entropy`` (divided by log K, in [0, 1]) are those of the mean.
    ``review`` flags a normalised entropy above ``threshold``.
    """
    measures = ensemble_uncertainty(member_probs)
    several = member_probs.shape[0] > 1
    frame = pd.DataFrame(
        {
            "n_models": member_probs.shape[0],
            "sd": measures["sd"] if several else np.nan,
            "entropy": measures["entropy"],
            "normalised_entropy": measures["normalised_entropy"],
            "mutual_information": measures["mutual_information"] if several else np.nan,
        }
    )
    frame["review"] = review_flags(measures["normalised_entropy"], threshold)
    return frame


def with_uncertainty(table: pd.DataFrame, model: str, threshold: float) -> pd.DataFrame:
    """Add one model's uncertainty columns to a patient table of :data:`PATIENT_COLUMNS`."""
    probs = table[list(PROB_COLUMNS)].to_numpy(np.float64)[None]
    extra = uncertainty_columns(probs, threshold)
    out = pd.concat([table.reset_index(drop=True), extra], axis=1).assign(model=model)
    return out.reindex(columns=list(PREDICTION_COLUMNS))


@torch.no_grad()
def predict_images(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int
) -> np.ndarray:
    """Softmax probabilities (S, 3) of a stack of slices (S, 4, H, W), in chunks."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        with autocast(device):
            logits = model(to_device(images[start : start + batch_size], device))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    if not out:
        return np.zeros((0, len(CLASSES)), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)


def patient_row(cohort: str, patient: str, probs: np.ndarray, split: str) -> dict[str, Any]:
    """One predictions.csv row: mean slice probabilities and the most probable class."""
    mean = probs.astype(np.float64).mean(axis=0)
    row: dict[str, Any] = {"patient": patient, "cohort": cohort}
    row.update(zip(PROB_COLUMNS, mean.tolist(), strict=True))
    row.update(predicted_class=CLASSES[int(mean.argmax())], n_slices=len(probs), split=split)
    return row


def slice_rows(
    cohort: str, patient: str, slice_index: np.ndarray, probs: np.ndarray, class_name: str, splits
) -> pd.DataFrame:
    """One slices.parquet block: a row per slice with its split and probabilities."""
    frame = pd.DataFrame(
        {
            "cohort": cohort,
            "patient": patient,
            "slice_index": np.asarray(slice_index, dtype=np.int32),
            "class": class_name,
            "split": splits,
        }
    )
    for k, column in enumerate(PROB_COLUMNS):
        frame[column] = probs[:, k]
    return frame


def predict_slices(
    shard_dirs: Sequence[str | Path],
    splits_path: str | Path,
    checkpoint_path: str | Path,
    slices_out: str | Path,
    patients_out: str | Path,
    *,
    config: Mapping[str, Any],
    device: str | None = None,
    model_name: str = SINGLE,
) -> pd.DataFrame:
    """Predict every slice of every patient in the shards and write both tables atomically.

    Args:
        shard_dirs: ``results/shards/{cohort}`` folders.
        splits_path: ``results/splits.tsv`` (class and split of each patient).
        checkpoint_path: ``results/model/best.pt``.
        slices_out: ``results/predictions/slices.parquet``.
        patients_out: ``results/predictions/predictions.csv``.
        config: the validated workflow config (``model.batch_size``, ``split``, ``seed``,
            ``evaluate.review_entropy``).
        device: torch device name; default CUDA when available.
        model_name: the ``model`` column of the patient table (``single``, or a fold's).

    Returns:
        The patient table written to ``patients_out``.
    """
    splits = read_splits(splits_path)
    torch_device = pick_device(device)
    model = load_classifier(checkpoint_path, torch_device)
    slice_table, patients = predict_model(
        model,
        shard_dirs,
        splits,
        device=torch_device,
        batch_size=int(config["model"]["batch_size"]),
        ratios=config["split"]["ratios"],
        seed=int(config["seed"]),
    )
    patient_table = with_uncertainty(
        pd.DataFrame(patients, columns=list(PATIENT_COLUMNS)),
        model_name,
        float(config["evaluate"]["review_entropy"]),
    )
    with atomic_path(slices_out) as tmp:
        slice_table.to_parquet(tmp, index=False)
    with atomic_path(patients_out) as tmp:
        patient_table.to_csv(tmp, index=False)
    log.info("predicted %d slices of %d patients", len(slice_table), len(patient_table))
    return patient_table


def predict_model(
    model: nn.Module,
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    *,
    device: torch.device,
    batch_size: int,
    ratios: Mapping[str, float],
    seed: int,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """One model's slice table and patient rows over every patient of the shards."""
    slices, patients = [], []
    for cohort, patient, images, slice_index in iter_patient_batches(shard_dirs):
        probs = predict_images(model, images, device, batch_size)
        class_name, per_slice = slice_splits(
            splits, cohort, patient, slice_index, ratios=ratios, seed=seed
        )
        slices.append(slice_rows(cohort, patient, slice_index, probs, class_name, per_slice))
        listed = splits[(splits["cohort"] == cohort) & (splits["patient"] == patient)]
        split = str(listed["split"].iloc[0]) if len(listed) else UNLISTED_SPLIT
        patients.append(patient_row(cohort, patient, probs, split))
    _warn_missing(splits, patients)
    table = pd.concat(slices, ignore_index=True) if slices else _empty_slices()
    return table, patients


def _empty_slices() -> pd.DataFrame:
    """An empty slices table with the right columns."""
    return pd.DataFrame({column: [] for column in SLICE_COLUMNS})


def _warn_missing(splits: pd.DataFrame, patients: list[dict[str, Any]]) -> None:
    """Warn about manifest patients that have no slice in the shards (they cannot be predicted)."""
    seen = {(row["cohort"], row["patient"]) for row in patients}
    for cohort, patient in zip(splits["cohort"], splits["patient"], strict=True):
        if (cohort, patient) not in seen:
            log.warning("patient %s of cohort %s has no slice in the shards", patient, cohort)

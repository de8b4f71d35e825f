"""Prediction-only runs: a frozen model bundle predicts every patient of a new sheet.

No split is drawn and nothing is trained. The manifest marks labelled patients ``external`` (a
test of a model that never saw them) and the rest ``unlabelled``; every patient is predicted
by the mean of the bundle's models (:func:`glioma.model.ensemble.combine_folds`, which gives
no patient an out-of-fold row because none is in a fold).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from glioma.constants import EXTERNAL_SPLIT, UNLABELLED_SPLIT
from glioma.dataset.splits import MANIFEST_COLUMNS, read_sheet, read_splits
from glioma.io import atomic_path
from glioma.model.bundle import load_models
from glioma.model.ensemble import ENSEMBLE, combine_folds
from glioma.model.nets import pick_device
from glioma.model.predict import SINGLE, predict_model

log = logging.getLogger(__name__)


def external_manifest(sheet: pd.DataFrame) -> pd.DataFrame:
    """The manifest of a prediction-only run: ``external`` if labelled, else ``unlabelled``."""
    out = sheet[["patient", "cohort", "class"]].copy()
    out["split"] = [EXTERNAL_SPLIT if name else UNLABELLED_SPLIT for name in out["class"]]
    out["fold"] = ""
    return out.reindex(columns=list(MANIFEST_COLUMNS))


def write_external_manifest(sheet_path: str | Path, out_path: str | Path) -> pd.DataFrame:
    """Write ``results/splits.tsv`` of a prediction-only run atomically; return it."""
    manifest = external_manifest(read_sheet(sheet_path))
    with atomic_path(out_path) as tmp:
        manifest.to_csv(tmp, sep="\t", index=False)
    counts = manifest["split"].value_counts().to_dict()
    log.info("prediction-only run: %s", counts)
    return manifest


def predict_with_bundle(
    shard_dirs: Sequence[str | Path],
    splits_path: str | Path,
    bundle_dir: str | Path,
    slices_out: str | Path,
    patients_out: str | Path,
    *,
    batch_size: int,
    review_threshold: float,
    device: str | None = None,
) -> pd.DataFrame:
    """Predict every patient of the shards with every model of a bundle; write both tables.

    Args:
        shard_dirs: ``results/shards/{cohort}`` folders of this run.
        splits_path: this run's manifest (:func:`write_external_manifest`).
        bundle_dir: the model bundle (verified before use).
        slices_out: ``results/predictions/slices.parquet``.
        patients_out: ``results/predictions/predictions.csv``.
        batch_size: slices per forward pass.
        review_threshold: normalised entropy above which a patient is flagged for review.
        device: torch device name; default CUDA when available.

    Returns:
        The patient table written (``model``: ``single`` for a one-model bundle, else
        ``ensemble``).
    """
    splits = read_splits(splits_path)
    torch_device = pick_device(device)
    bundle, models = load_models(bundle_dir, torch_device)
    per_model = {}
    for name, model in models.items():
        per_model[name], _ = predict_model(
            model,
            shard_dirs,
            splits,
            device=torch_device,
            batch_size=batch_size,
            ratios={"train": 1.0},
            seed=int(bundle["seed"]),
        )
    slices, patients = combine_folds(per_model, splits, review_threshold=review_threshold)
    if len(models) == 1:
        slices["model"] = slices["model"].replace(ENSEMBLE, SINGLE)
        patients["model"] = patients["model"].replace(ENSEMBLE, SINGLE)
    with atomic_path(slices_out) as tmp:
        slices.to_parquet(tmp, index=False)
    with atomic_path(patients_out) as tmp:
        patients.to_csv(tmp, index=False)
    log.info(
        "bundle %s (%d model(s)) predicted %d patients",
        bundle["id"][:12],
        len(models),
        len(patients),
    )
    return patients

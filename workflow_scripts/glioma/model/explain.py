"""Saliency pictures of one cohort's predictions, and a model-randomisation sanity check.

For each patient the maps are those of the models that made its prediction (its fold's model
for an out-of-fold row, every model of the bundle for an ensemble row), for its predicted
class, on the slices with the largest tumour area (:mod:`glioma.model.saliency`). The cohort's
``index.json`` records, per patient, the method, the slices the model used and those shown; and
the check of Adebayo et al. (2018): the rank correlation between the trained model's maps and a
weight-randomised copy's on the first patients, which must be low for the maps to say anything
about the model.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from glioma.constants import CLASSES
from glioma.dataset.loader import shard_files
from glioma.dataset.rowgroups import iter_patient_batches
from glioma.dataset.writer import atomic_dir
from glioma.errors import InputError
from glioma.model import saliency
from glioma.model.bundle import load_models
from glioma.model.ensemble import ENSEMBLE
from glioma.model.nets import pick_device
from glioma.model.predict import SINGLE

log = logging.getLogger(__name__)

INDEX = "index.json"
#: Patients whose maps are compared against a weight-randomised model's.
SANITY_PATIENTS = 3


def roi_areas(shard_dir: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """Tumour area of every slice, per (cohort, patient), in the shards' slice order."""
    files = shard_files([shard_dir])
    if not files:
        return {}
    table = pq.ParquetDataset(files).read(columns=["cohort", "patient", "roi_area"]).to_pandas()
    grouped = table.groupby(["cohort", "patient"], sort=False)["roi_area"]
    return {key: values.to_numpy(np.float32) for key, values in grouped}


def members_of(model: str, names: Sequence[str]) -> list[str]:
    """The bundle models that made a prediction row (``fold-<id>``, ``single`` or ensemble)."""
    if model in (ENSEMBLE, SINGLE):
        return list(names)
    if model in names:
        return [model]
    raise InputError(f"predictions name model {model!r}, which the bundle lacks ({list(names)})")


def explain_patient(
    models: Sequence[torch.nn.Module],
    images: torch.Tensor,
    roi_area: np.ndarray,
    class_index: int,
    *,
    method: str,
    n_slices: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Maps (n, H, W) of the ``n_slices`` largest-tumour slices; their positions; the method."""
    shown = saliency.pick_slices(roi_area, n_slices)
    picked = images[torch.as_tensor(shown, dtype=torch.long)].float()
    maps, used = saliency.saliency_maps(models, picked, class_index, method=method)
    return maps, shown, used


def sanity_check(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    class_index: int,
    *,
    method: str,
    seed: int,
) -> float:
    """Rank correlation between a trained model's maps and a weight-randomised copy's."""
    random_model = saliency.randomised_copy(model, seed=seed)
    random_maps, _ = saliency.saliency_maps([random_model], images, class_index, method=method)
    return saliency.rank_correlation(maps, random_maps)


def explain_cohort(
    shard_dir: str | Path,
    predictions_path: str | Path,
    bundle_dir: str | Path,
    out_dir: str | Path,
    *,
    method: str = "auto",
    n_slices: int = 3,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/{patient}.png`` for every patient of one cohort's shards, and index.json.

    Args:
        shard_dir: ``results/shards/{cohort}``.
        predictions_path: ``results/predictions/predictions.csv`` (predicted class, model).
        bundle_dir: the model bundle whose models made the predictions.
        out_dir: ``results/saliency/{cohort}`` (written atomically as a whole).
        method: ``auto``, ``grad-cam`` or ``occlusion`` (``saliency.method``).
        n_slices: slices shown per patient (``saliency.slices``).
        seed: seed of the randomised model of the sanity check.
        device: torch device name; default CUDA when available.

    Returns:
        The index written.
    """
    torch_device = pick_device(device)
    bundle, loaded = load_models(bundle_dir, torch_device)
    names = list(loaded)
    predictions = pd.read_csv(predictions_path, dtype={"cohort": str, "patient": str})
    rows = {(r.cohort, r.patient): r for r in predictions.itertuples(index=False)}
    areas = roi_areas(shard_dir)
    index: dict[str, Any] = {"bundle": bundle["id"], "patients": {}, "sanity": []}
    with atomic_dir(out_dir) as tmp:
        for cohort, patient, images, slice_index in iter_patient_batches([shard_dir]):
            row = rows.get((cohort, patient))
            if row is None:
                raise InputError(
                    "has slices but no prediction", patient=patient, path=predictions_path
                )
            class_index = CLASSES.index(row.predicted_class)
            members = [loaded[name] for name in members_of(row.model, names)]
            maps, shown, used = explain_patient(
                members,
                images,
                areas[(cohort, patient)],
                class_index,
                method=method,
                n_slices=n_slices,
            )
            picked = images[torch.as_tensor(shown, dtype=torch.long)].float()
            saliency.plot_saliency(
                picked.numpy(),
                maps,
                slice_index[shown].tolist(),
                tmp / f"{patient}.png",
                title=f"{cohort} / {patient}: {row.predicted_class} ({row.model})",
                method=used,
            )
            index["patients"][patient] = {
                "method": used,
                "class": row.predicted_class,
                "models": members_of(row.model, names),
                "slices": slice_index.tolist(),
                "shown": slice_index[shown].tolist(),
            }
            if len(index["sanity"]) < SANITY_PATIENTS:
                rho = sanity_check(members[0], picked, maps, class_index, method=used, seed=seed)
                index["sanity"].append({"patient": patient, "rank_correlation": _finite(rho)})
        (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    _log_sanity(index["sanity"])
    return index


def _finite(value: float) -> float | None:
    """A float for JSON, None when undefined."""
    return float(value) if math.isfinite(value) else None


def _log_sanity(sanity: Sequence[Mapping[str, Any]]) -> None:
    """Log the randomisation check's correlations."""
    values = [s["rank_correlation"] for s in sanity if s["rank_correlation"] is not None]
    if values:
        log.info(
            "saliency of trained vs weight-randomised model: rank correlation %s (low means the "
            "maps depend on the learned weights)",
            ", ".join(f"{v:.2f}" for v in values),
        )


def read_index(saliency_dir: str | Path) -> dict[str, Any]:
    """A cohort's saliency index.json."""
    path = Path(saliency_dir) / INDEX
    if not path.is_file():
        raise InputError("saliency index is missing", path=path)
    return json.loads(path.read_text())

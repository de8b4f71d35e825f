"""File-level training: shards and split manifest in, ``results/model/`` out."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from glioma.constants import CLASSES
from glioma.dataset.splits import read_splits
from glioma.io import atomic_path
from glioma.model import checkpoint
from glioma.model.data import class_counts, is_slice_level, slice_size, split_loader
from glioma.model.distributed import SINGLE, Ranks
from glioma.model.fit import Parts, RunState, fit, make_parts
from glioma.model.nets import build_model, check_input_size, count_parameters, pick_device
from glioma.model.settings import TrainSettings
from glioma.model.train import class_weights

log = logging.getLogger(__name__)


def write_config(config: Mapping[str, Any], path: Path) -> None:
    """Save the resolved workflow config beside the model (atomically)."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(config), sort_keys=False))


def _plain(value: Any) -> Any:
    """Turn Snakemake's config containers into plain dicts and lists for YAML."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _run_hash(settings: TrainSettings, config: Mapping, shard_dirs, splits_path: Path) -> str:
    """Identity of a run: training settings, split settings, split manifest and shard files."""
    identity = {
        "model": settings.identity(),
        "split": _plain(config["split"]),
        "splits_sha256": checkpoint.file_sha256(splits_path),
    }
    inputs = list(shard_dirs)
    if settings.pretrained_weights:
        inputs.append(settings.pretrained_weights)
    return checkpoint.config_hash(identity, inputs)


def _train_counts(
    shard_dirs, splits, splits_path: Path, config: Mapping, processes: int
) -> np.ndarray:
    """Labelled train slices per class; raises when there are fewer than ``processes``."""
    if is_slice_level(splits):
        log.warning("training under the slice-level split: validation scores are leaky")
    counts = class_counts(shard_dirs, splits, "train", config=config)
    log.info("train slices per class: %s", dict(zip(CLASSES, counts.tolist(), strict=True)))
    if counts.sum() == 0:
        raise ValueError(f"{splits_path}: the train split holds no labelled slice")
    if counts.sum() < processes:
        raise ValueError(
            f"{splits_path}: the train split holds {counts.sum()} labelled slices, fewer than "
            f"the {processes} training processes"
        )
    return counts


def _build_parts(
    settings: TrainSettings, shard_dirs, counts: np.ndarray, device: str | None, parallel: bool
) -> Parts:
    """Build the network (checked against the slice size), optimiser, schedule and loss."""
    model = build_model(settings.name, settings.kwargs, settings.pretrained_weights)
    check_input_size(model, *slice_size(shard_dirs))
    log.info("%s: %d trainable parameters", settings.name, count_parameters(model))
    parts = make_parts(
        model,
        settings,
        weights=class_weights(counts) if settings.balance == "loss" else None,
        steps_per_epoch=math.ceil(int(counts.sum()) / settings.batch_size),
        device=pick_device(device),
        parallel=parallel,
    )
    log.info("training on %s", parts.device)
    return parts


def _loaders(shard_dirs, splits, config: Mapping, settings: TrainSettings, ranks: Ranks):
    """This rank's train loader and, on rank 0 (the only one that validates), the val loader."""
    train = split_loader(
        shard_dirs,
        splits,
        "train",
        config=config,
        shuffle=True,
        balance=settings.balance == "sampler",
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    if not ranks.main:
        return train, []
    return train, split_loader(shard_dirs, splits, "val", config=config, shuffle=False)


def _per_epoch(loader: DataLoader) -> Callable[[int], DataLoader]:
    """Epoch -> the loader reshuffled for that epoch (the order depends on seed and epoch only)."""

    def batches(epoch: int) -> DataLoader:
        loader.dataset.set_epoch(epoch)
        return loader

    return batches


def train_classifier(
    shard_dirs: Sequence[str | Path],
    splits_path: str | Path,
    out_dir: str | Path,
    config: Mapping[str, Any],
    *,
    state_path: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    ranks: Ranks = SINGLE,
) -> RunState:
    """Train the classifier on the ``train`` split, early-stopping on ``val``.

    Args:
        shard_dirs: ``results/shards/{cohort}`` folders of every included cohort.
        splits_path: ``results/splits.tsv``.
        out_dir: ``results/model``; receives best.pt, last.pt, history.csv and config.yaml.
        config: the validated workflow config (``model``, ``split``, ``seed`` sections used).
        state_path: where the per-epoch resumable state is kept (default ``out_dir/last.pt``).
        device: torch device name; default CUDA when available, else the CPU.
        progress: show tqdm progress bars.
        ranks: this process's place among data-parallel processes (see
            :mod:`glioma.model.distributed`; the process group must be joined): each rank
            trains on its share of every epoch, rank 0 validates and writes.

    Returns:
        The final run state (history, best epoch).
    """
    out_dir, splits_path = Path(out_dir), Path(splits_path)
    settings = TrainSettings.from_config(dict(config))
    checkpoint.seed_everything(settings.seed)
    splits = read_splits(splits_path)
    counts = _train_counts(shard_dirs, splits, splits_path, config, ranks.world_size)
    train, val = _loaders(shard_dirs, splits, config, settings, ranks)
    parts = _build_parts(settings, shard_dirs, counts, device, ranks.distributed)
    if ranks.main:
        write_config(config, out_dir / "config.yaml")
    return fit(
        parts,
        settings,
        out_dir,
        train_batches=_per_epoch(train),
        val_batches=lambda: val,
        run_hash=_run_hash(settings, config, shard_dirs, splits_path),
        state_path=Path(state_path) if state_path else None,
        progress=progress,
        ranks=ranks,
    )


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the network saved in best.pt or last.pt and load its weights (eval mode).

    Raises:
        ValueError: the checkpoint's classes differ from ``CLASSES``.
    """
    record = checkpoint.load(path)
    if tuple(record.get("classes", ())) != CLASSES:
        raise ValueError(f"{path}: classes {record.get('classes')} differ from {list(CLASSES)}")
    model = build_model(record["model_name"], record["model_kwargs"])
    model.load_state_dict(record["model"])
    return model.to(device).eval()

"""Train the classifier: shards and split manifest in, ``results/model/`` out.

:func:`train_classifier` is the whole run, top to bottom: settings, data, network, optimiser,
resume, the epoch loop (train, validate, keep the best, checkpoint), and the end. What it leans
on sits behind small interfaces: :class:`glioma.model.data.TrainingData` (which slices, in which
order, with which weights), :mod:`glioma.model.epoch` (one pass over batches),
:mod:`glioma.model.state` (what an epoch leaves behind, and its files) and
:mod:`glioma.model.distributed` (the other ranks, when there are several).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from glioma.io import atomic_path
from glioma.model import checkpoint, distributed, state
from glioma.model.data import TrainingData
from glioma.model.distributed import SINGLE, Ranks
from glioma.model.epoch import (
    make_loss,
    make_optimizer,
    make_scheduler,
    train_one_epoch,
    validate,
)
from glioma.model.identity import plain
from glioma.model.nets import build_model, check_input_size, count_parameters, pick_device
from glioma.model.settings import TrainSettings
from glioma.model.state import RunState

log = logging.getLogger(__name__)


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
    """Train the classifier on the ``train`` split and keep the best epoch on ``val``.

    Args:
        shard_dirs: ``results/shards/{cohort}`` folders of every included cohort.
        splits_path: ``results/splits.tsv``.
        out_dir: ``results/model``; receives best.pt, last.pt, history.csv and config.yaml.
        config: the validated workflow config (``model``, ``split``, ``seed`` sections used).
        state_path: where the per-epoch resumable state is kept (default ``out_dir/last.pt``);
            a separate file is moved onto ``last.pt`` at the end, so that a workflow manager
            deleting a failed job's outputs keeps it.
        device: torch device name; default CUDA when available, else the CPU.
        progress: show tqdm progress bars.
        ranks: this process's place among data-parallel processes (the process group must be
            joined): each rank trains on its share of every epoch, rank 0 validates and writes,
            and every rank makes the same decisions.

    Returns:
        The final run state (history, best epoch).
    """
    out_dir, splits_path = Path(out_dir), Path(splits_path)
    settings = TrainSettings.from_config(dict(config))
    checkpoint.seed_everything(settings.seed)
    data = TrainingData.open(shard_dirs, splits_path, config, settings, ranks)

    # The network, its optimiser, schedule and loss.
    model = build_model(settings.name, settings.kwargs, settings.pretrained_weights)
    check_input_size(model, *data.slice_size)
    log.info("%s: %d trainable parameters", settings.name, count_parameters(model))
    device_ = pick_device(device)
    model = model.to(device_)
    if device_.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, device_) if ranks.distributed else model
    net = torch.compile(net) if settings.compile else net
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
    steps = data.steps_per_epoch(settings.batch_size)
    scheduler = make_scheduler(optimizer, settings.warmup_epochs * steps, settings.epochs * steps)
    weights = data.class_weights()
    loss_fn = make_loss(None if weights is None else weights.to(device_), settings.label_smoothing)
    log.info("training on %s, %d steps per epoch", device_, steps)

    # Resume an interrupted run made under the same settings and data.
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    state_path = Path(state_path) if state_path else last
    run_hash = data.run_hash(settings, config)
    run = state.try_resume(state_path, run_hash, model, optimizer, scheduler) or RunState()
    if ranks.main:
        write_config(config, out_dir / "config.yaml")
        if run.best_model is not None:
            state.write_best(run, settings, run_hash, out_dir / "best.pt")
            state.write_history(run.history, out_dir / "history.csv")

    while run.epoch < settings.epochs and not run.stopped:
        epoch = run.epoch + 1
        lr = optimizer.param_groups[0]["lr"]
        batches = data.train_batches(epoch)
        if ranks.distributed:
            distributed.reseed(settings.seed, epoch, ranks.rank)
            batches = distributed.lockstep(batches, ranks)
        trained = train_one_epoch(
            net,
            batches,
            optimizer,
            scheduler,
            loss_fn,
            device_,
            augment=settings.augment,
            generator=augment_generator(settings.seed, epoch, ranks.rank),
            progress=progress and ranks.main,
            desc=f"epoch {epoch}/{settings.epochs}",
        )
        if ranks.distributed:
            trained = distributed.reduce_epoch(trained, ranks)
        row = None
        if ranks.main:
            # Under DDP the bare model: the wrapper would exchange buffers with idle ranks.
            checked = validate(model if ranks.distributed else net, data.val, loss_fn, device_)
            row = {"epoch": epoch, "train_loss": trained["train_loss"], **checked}
            row.update(lr=lr, seconds=trained["seconds"])
        if ranks.distributed:
            row = distributed.broadcast(row, ranks)
        improved = state.update_best(run, row, model, settings)
        if ranks.main:
            if improved:
                state.write_best(run, settings, run_hash, out_dir / "best.pt")
            state.write_history(run.history, out_dir / "history.csv")
            state.save_state(run, settings, run_hash, state_path, model, optimizer, scheduler)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in row.items()})

    if run.stopped:
        log.info("early stop after epoch %d (best %d)", run.epoch, run.best_epoch)
    if run.best_model is None:
        raise ValueError("model.epochs is 0: nothing was trained")
    if ranks.distributed:
        # Also a barrier: no rank still reads the state file when rank 0 moves it below.
        distributed.check_in_sync(model, ranks)
    if state_path != last and ranks.main:
        os.replace(state_path, last)
    return run


def augment_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The augmentation draws of one rank's epoch: the same after a resume."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + 1_000_003 * rank)


def write_config(config: Mapping[str, Any], path: Path) -> None:
    """Save the resolved workflow config beside the model (atomically)."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(plain(config), sort_keys=False))

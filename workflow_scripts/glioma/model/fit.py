"""The training loop: epochs, early stopping, checkpoints every epoch, resume after a kill."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from glioma.model import checkpoint, distributed
from glioma.model.distributed import SINGLE, Ranks
from glioma.model.settings import TrainSettings
from glioma.model.state import (
    FORMAT,
    RunState,
    cpu_weights,
    model_record,
    update_best,
    write_best,
    write_history,
)
from glioma.model.state import monitor as monitor  # re-exported: fit's early-stopping rule
from glioma.model.train import (
    make_loss,
    make_optimizer,
    make_scheduler,
    train_one_epoch,
    validate,
)

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """The live objects of a run."""

    model: nn.Module
    net: nn.Module  # ``model``, or its DistributedDataParallel and/or torch.compile wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss: nn.Module
    device: torch.device


def make_parts(
    model: nn.Module,
    settings: TrainSettings,
    *,
    weights: torch.Tensor | None,
    steps_per_epoch: int,
    device: torch.device,
    parallel: bool = False,
) -> Parts:
    """Move the model to ``device`` and build its optimiser, schedule and loss.

    With ``parallel``, ``net`` wraps the model in DistributedDataParallel (the process group must
    be joined); the optimiser and checkpoints use the bare model either way.
    """
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, device) if parallel else model
    net = torch.compile(net) if settings.compile else net
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
    steps = max(1, steps_per_epoch)
    scheduler = make_scheduler(optimizer, settings.warmup_epochs * steps, settings.epochs * steps)
    loss = make_loss(None if weights is None else weights.to(device), settings.label_smoothing)
    return Parts(model, net, optimizer, scheduler, loss, device)


def save_state(parts: Parts, state: RunState, settings: TrainSettings, run_hash: str, path) -> None:
    """Write the resumable state (model, optimiser, schedule, RNG, history, best) atomically."""
    record = model_record(cpu_weights(parts.model), settings, config_hash=run_hash)
    fields = asdict(state)
    fields.pop("best_model")
    record.update(
        optimizer=parts.optimizer.state_dict(),
        scheduler=parts.scheduler.state_dict(),
        rng=checkpoint.rng_state(),
        run=fields,
        best_model=state.best_model,
    )
    checkpoint.save(record, path)


def try_resume(parts: Parts, path: Path, run_hash: str) -> RunState | None:
    """Restore a run from ``path`` when it exists and was made under the same settings and data."""
    if not path.is_file():
        return None
    saved = checkpoint.load(path)
    if saved.get("format") != FORMAT or saved.get("config_hash") != run_hash:
        log.warning("%s was made under other settings or data: training from scratch", path)
        return None
    parts.model.load_state_dict(saved["model"])
    parts.optimizer.load_state_dict(saved["optimizer"])
    parts.scheduler.load_state_dict(saved["scheduler"])
    checkpoint.set_rng_state(saved["rng"])
    state = RunState(**saved["run"], best_model=saved["best_model"])
    log.info("resuming from %s after epoch %d", path, state.epoch)
    return state


def run_epoch(
    parts: Parts,
    settings: TrainSettings,
    epoch: int,
    train_batches: Callable[[int], Iterable],
    val_batches: Callable[[], Iterable],
    progress: bool,
    ranks: Ranks = SINGLE,
) -> dict[str, float]:
    """Train and validate one epoch (1-based) and return its history row.

    Across ranks: each trains on its batches in lockstep with the others, the training loss is
    averaged over all slices, and rank 0 validates and broadcasts the row.
    """
    lr = parts.optimizer.param_groups[0]["lr"]
    generator = torch.Generator().manual_seed(
        settings.seed * 100_003 + epoch + 1_000_003 * ranks.rank
    )
    batches = train_batches(epoch)
    if ranks.distributed:
        distributed.reseed(settings.seed, epoch, ranks.rank)
        batches = distributed.lockstep(batches, ranks)
    trained = train_one_epoch(
        parts.net,
        batches,
        parts.optimizer,
        parts.scheduler,
        parts.loss,
        parts.device,
        augment=settings.augment,
        generator=generator,
        progress=progress and ranks.main,
        desc=f"epoch {epoch}/{settings.epochs}",
    )
    if not ranks.distributed:
        checked = validate(parts.net, val_batches(), parts.loss, parts.device, progress=False)
        return _row(epoch, trained, checked, lr)
    trained = distributed.reduce_epoch(trained, ranks)
    row = None
    if ranks.main:
        # The bare model: the wrapper would exchange buffers with ranks that do not validate.
        checked = validate(parts.model, val_batches(), parts.loss, parts.device, progress=False)
        row = _row(epoch, trained, checked, lr)
    return distributed.broadcast(row, ranks)


def _row(epoch: int, trained: dict, checked: dict, lr: float) -> dict[str, float]:
    """One history row, in ``HISTORY_COLUMNS`` order."""
    return {
        "epoch": epoch,
        "train_loss": trained["train_loss"],
        **checked,
        "lr": lr,
        "seconds": trained["seconds"],
    }


def fit(
    parts: Parts,
    settings: TrainSettings,
    out_dir: Path,
    *,
    train_batches: Callable[[int], Iterable],
    val_batches: Callable[[], Iterable],
    run_hash: str,
    state_path: Path | None = None,
    progress: bool = True,
    ranks: Ranks = SINGLE,
) -> RunState:
    """Train until ``settings.epochs`` or early stopping, checkpointing after every epoch.

    Writes ``best.pt``, ``history.csv`` and ``last.pt`` in ``out_dir``. The resumable state goes
    to ``state_path`` (default ``out_dir/last.pt``) after each epoch and is picked up by a rerun
    made under the same ``run_hash``; a separate ``state_path`` is moved onto ``last.pt`` at the
    end (so a workflow manager that deletes a failed job's outputs keeps the state).

    Args:
        parts: model, optimiser, schedule, loss and device (see :func:`make_parts`).
        settings: training settings.
        out_dir: output folder.
        train_batches: epoch (1-based) -> batches of that epoch (seeded by the epoch).
        val_batches: () -> validation batches.
        run_hash: identity of settings and data (see :func:`checkpoint.config_hash`).
        state_path: where the per-epoch state lives.
        progress: show tqdm bars.
        ranks: this process's rank among data-parallel processes; every rank resumes from the
            same state and makes the same decisions, and only rank 0 writes files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    state_path = Path(state_path) if state_path else last
    state = try_resume(parts, state_path, run_hash) or RunState()
    if state.best_model is not None and ranks.main:
        write_best(state, settings, run_hash, out_dir / "best.pt")
        write_history(state.history, out_dir / "history.csv")
    while state.epoch < settings.epochs and not state.stopped:
        epoch = state.epoch + 1
        row = run_epoch(parts, settings, epoch, train_batches, val_batches, progress, ranks)
        improved = update_best(state, row, parts.model, settings.patience)
        if ranks.main:
            if improved:
                write_best(state, settings, run_hash, out_dir / "best.pt")
            write_history(state.history, out_dir / "history.csv")
            save_state(parts, state, settings, run_hash, state_path)
        log.info("epoch %d: %s", state.epoch, {k: round(v, 4) for k, v in row.items()})
    if state.stopped:
        log.info("early stop after epoch %d (best %d)", state.epoch, state.best_epoch)
    if state.best_model is None:
        raise ValueError("model.epochs is 0: nothing was trained")
    if ranks.distributed:
        # Also a barrier: no rank still reads the state file when rank 0 moves it below.
        distributed.check_in_sync(parts.model, ranks)
    if state_path != last and ranks.main:
        os.replace(state_path, last)
    return state

"""The training loop: epochs, early stopping, checkpoints every epoch, resume after a kill."""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from glioma.constants import CLASSES
from glioma.io import atomic_path
from glioma.model import checkpoint
from glioma.model.settings import TrainSettings
from glioma.model.train import (
    make_loss,
    make_optimizer,
    make_scheduler,
    train_one_epoch,
    validate,
)

log = logging.getLogger(__name__)

#: history.csv columns; ``lr`` is the learning rate at the start of the epoch (it changes every
#: step), ``seconds`` the epoch's training time.
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_slice_macro_auc",
    "val_patient_macro_auc",
    "lr",
    "seconds",
)
FORMAT = 1


@dataclass
class RunState:
    """What the loop carries from epoch to epoch, and what last.pt stores."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: list[float] = field(default_factory=lambda: [-math.inf, -math.inf])
    best_epoch: int = 0
    best_metric: str = ""
    bad_epochs: int = 0
    stopped: bool = False
    best_model: dict[str, torch.Tensor] | None = None


def monitor(row: dict[str, float]) -> tuple[str, list[float]]:
    """The early-stopping score of an epoch, compared lexicographically (higher is better).

    Validation patient-level macro AUC, ties broken by the lower validation loss (a small
    validation set often reaches AUC 1 early, and the first such epoch is rarely the best);
    when the AUC is undefined (fewer than two classes in val), the negative validation loss;
    when there is no validation slice at all, the epoch number, so the latest model is kept.
    """
    loss = -row["val_loss"] if math.isfinite(row["val_loss"]) else -math.inf
    if math.isfinite(row["val_patient_macro_auc"]):
        return "val_patient_macro_auc", [row["val_patient_macro_auc"], loss]
    if math.isfinite(row["val_loss"]):
        return "-val_loss", [loss, 0.0]
    return "epoch", [float(row["epoch"]), 0.0]


def cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights (safe to keep while training goes on)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def model_record(
    weights: dict[str, torch.Tensor] | None, settings: TrainSettings, **extra: Any
) -> dict[str, Any]:
    """A self-describing weights record: enough to rebuild the network for prediction."""
    return {
        "format": FORMAT,
        "model": weights,
        "model_name": settings.name,
        "model_kwargs": copy.deepcopy(settings.kwargs),
        "classes": list(CLASSES),
        **extra,
    }


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """Write one row per epoch, atomically."""
    frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


@dataclass
class Parts:
    """The live objects of a run."""

    model: nn.Module
    net: nn.Module  # ``model`` or its torch.compile wrapper
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
) -> Parts:
    """Move the model to ``device`` and build its optimiser, schedule and loss."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if settings.compile else model
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
) -> dict[str, float]:
    """Train and validate one epoch (1-based) and return its history row."""
    lr = parts.optimizer.param_groups[0]["lr"]
    generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
    trained = train_one_epoch(
        parts.net,
        train_batches(epoch),
        parts.optimizer,
        parts.scheduler,
        parts.loss,
        parts.device,
        augment=settings.augment,
        generator=generator,
        progress=progress,
        desc=f"epoch {epoch}/{settings.epochs}",
    )
    checked = validate(parts.net, val_batches(), parts.loss, parts.device, progress=False)
    seconds = trained["seconds"]
    return {
        "epoch": epoch,
        "train_loss": trained["train_loss"],
        **checked,
        "lr": lr,
        "seconds": seconds,
    }


def update_best(state: RunState, row: dict[str, float], parts: Parts, patience: int) -> bool:
    """Record ``row``; return True when it is the best epoch so far."""
    metric, score = monitor(row)
    improved = tuple(score) > tuple(state.best_score) or metric != state.best_metric
    state.epoch = int(row["epoch"])
    state.history.append(row)
    if improved:
        state.best_score, state.best_epoch, state.best_metric = score, state.epoch, metric
        state.best_model = cpu_weights(parts.model)
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    state.stopped = state.bad_epochs >= patience
    return improved


def write_best(state: RunState, settings: TrainSettings, run_hash: str, path: Path) -> None:
    """Write best.pt from the best epoch's weights."""
    record = model_record(
        state.best_model,
        settings,
        epoch=state.best_epoch,
        metric=state.best_metric,
        score=state.best_score,
        config_hash=run_hash,
    )
    checkpoint.save(record, path)


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
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    state_path = Path(state_path) if state_path else last
    state = try_resume(parts, state_path, run_hash) or RunState()
    if state.best_model is not None:
        write_best(state, settings, run_hash, out_dir / "best.pt")
        write_history(state.history, out_dir / "history.csv")
    while state.epoch < settings.epochs and not state.stopped:
        row = run_epoch(parts, settings, state.epoch + 1, train_batches, val_batches, progress)
        if update_best(state, row, parts, settings.patience):
            write_best(state, settings, run_hash, out_dir / "best.pt")
        write_history(state.history, out_dir / "history.csv")
        save_state(parts, state, settings, run_hash, state_path)
        log.info("epoch %d: %s", state.epoch, {k: round(v, 4) for k, v in row.items()})
    if state.stopped:
        log.info("early stop after epoch %d (best %d)", state.epoch, state.best_epoch)
    if state.best_model is None:
        raise ValueError("model.epochs is 0: nothing was trained")
    if state_path != last:
        os.replace(state_path, last)
    return state

"""What a run carries from epoch to epoch, and its files: history, selection, best, resume.

``best.pt`` and ``last.pt`` hold a self-describing weights record (:func:`model_record`) that
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from glioma.constants import CLASSES, HISTORY_COLUMNS
from glioma.io import atomic_path
from glioma.model import checkpoint
from glioma.model.settings import TrainSettings

log = logging.getLogger(__name__)

#: Version of the checkpoint records. 2: the network takes availability planes beside the
#: images (glioma.model.availability), so its stem has 8 input channels, not 4.
FORMAT = 2


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


def monitor(row: dict[str, float], select: str = "val_loss") -> tuple[str, list[float]]:
    """The model-selection score of an epoch, compared lexicographically (higher is better).

    ``select`` (``model.select``):

    - ``val_loss``: the lower validation loss over every val slice (class-weighted, as trained).
      It moves smoothly from epoch to epoch; a few validation patients' AUC jumps between a
      handful of values and often reaches 1 by chance early in training.
    - ``val_auc``: validation patient-level macro AUC, ties broken by the lower loss.
    - ``last``: the latest epoch (with ``model.patience`` >= ``model.epochs``, the end of the
      cosine schedule).

    An undefined score falls back to the next one that is defined (no AUC with fewer than two
    classes in val; no loss without val slices: then the latest epoch).
    """
    loss = -row["val_loss"] if math.isfinite(row["val_loss"]) else -math.inf
    auc = row["val_patient_macro_auc"]
    if select == "val_auc" and math.isfinite(auc):
        return "val_patient_macro_auc", [auc, loss]
    if select in ("val_loss", "val_auc") and math.isfinite(row["val_loss"]):
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


def update_best(
    state: RunState, row: dict[str, float], model: nn.Module, settings: TrainSettings
) -> bool:
    """Record ``row``; return True when it is the best epoch so far.

    Epochs before ``model.min_epochs`` are recorded but never kept as best, and early stopping
    counts ``model.patience`` epochs without improvement from there on.
    """
    state.epoch = int(row["epoch"])
    state.history.append(row)
    if state.epoch < settings.min_epochs and state.epoch < settings.epochs:
        return False
    metric, score = monitor(row, settings.select)
    improved = tuple(score) > tuple(state.best_score) or metric != state.best_metric
    if improved:
        state.best_score, state.best_epoch, state.best_metric = score, state.epoch, metric
        state.best_model = cpu_weights(model)
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    state.stopped = state.bad_epochs >= settings.patience
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


def save_state(
    state: RunState,
    settings: TrainSettings,
    run_hash: str,
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Write the resumable state (model, optimiser, schedule, RNG, history, best) atomically."""
    record = model_record(cpu_weights(model), settings, config_hash=run_hash)
    fields = asdict(state)
    fields.pop("best_model")
    record.update(
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=checkpoint.rng_state(),
        run=fields,
        best_model=state.best_model,
    )
    checkpoint.save(record, path)


def try_resume(
    path: Path,
    run_hash: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> RunState | None:
    """Restore a run from ``path`` when it exists and was made under the same settings and data."""
    if not path.is_file():
        return None
    saved = checkpoint.load(path)
    if saved.get("format") != FORMAT or saved.get("config_hash") != run_hash:
        log.warning("%s was made under other settings or data: training from scratch", path)
        return None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    checkpoint.set_rng_state(saved["rng"])
    state = RunState(**saved["run"], best_model=saved["best_model"])
    log.info("resuming from %s after epoch %d", path, state.epoch)
    return state


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the network saved in best.pt or last.pt and load its weights (eval mode).

    Raises:
        ValueError: the checkpoint is of another format, or its classes differ from ``CLASSES``.
    """
    from glioma.model.nets import build_model

    record = checkpoint.load(path)
    if record.get("format") != FORMAT:
        raise ValueError(
            f"{path}: checkpoint format {record.get('format')!r} is not {FORMAT} (saved by an "
            "earlier version of the workflow, whose network had no availability input): retrain"
        )
    if tuple(record.get("classes", ())) != CLASSES:
        raise ValueError(f"{path}: classes {record.get('classes')} differ from {list(CLASSES)}")
    model = build_model(record["model_name"], record["model_kwargs"])
    model.load_state_dict(record["model"])
    return model.to(device).eval()

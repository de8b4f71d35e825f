"""What a run carries from epoch to epoch: history, early stopping, best weights, records.

``best.pt`` and ``last.pt`` hold a self-describing weights record (:func:`model_record`) that
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from glioma.constants import CLASSES, HISTORY_COLUMNS
from glioma.io import atomic_path
from glioma.model import checkpoint
from glioma.model.settings import TrainSettings

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


def update_best(state: RunState, row: dict[str, float], model: nn.Module, patience: int) -> bool:
    """Record ``row``; return True when it is the best epoch so far."""
    metric, score = monitor(row)
    improved = tuple(score) > tuple(state.best_score) or metric != state.best_metric
    state.epoch = int(row["epoch"])
    state.history.append(row)
    if improved:
        state.best_score, state.best_epoch, state.best_metric = score, state.epoch, metric
        state.best_model = cpu_weights(model)
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

"""One pass over batches: a training epoch, validation, loss, optimiser and learning-rate schedule.

These functions take any iterable of batches (dicts with ``image`` (B, 4, H, W) float32,
``label`` (B,) int64, ``patient`` and ``cohort`` lists, and optionally ``weight`` (B,), each
slice's weight in the loss), so they are tested on in-memory tensors and used unchanged on the
shard loader.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from glioma.constants import CLASSES
from glioma.model.augment import AugmentSettings, augment_batch
from glioma.model.metrics import macro_auc

Batch = Mapping[str, Any]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU, where bf16 matmuls are often slower."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch of slices to ``device``, channels_last on CUDA (faster convolutions there)."""
    if device.type == "cuda":
        return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return images.to(device)


def class_weights(counts: Iterable[int]) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes); an absent class gets weight 0."""
    counts = torch.as_tensor(list(counts), dtype=torch.float64)
    weights = torch.where(counts > 0, counts.sum() / counts.clamp(min=1), torch.zeros_like(counts))
    present = counts > 0
    if present.any():
        weights = weights / weights[present].mean()
    return weights.float()


class SliceLoss(nn.Module):
    """Cross-entropy with class weights, label smoothing and an optional weight per slice.

    The mean is weighted as PyTorch weights it (divided by the summed weights of the targets),
    with each slice's weight multiplied in: ``sum(s_i * l_i) / sum(s_i * w[y_i])``, where
    ``l_i`` already carries the class weight ``w[y_i]``. Without slice weights it equals
    ``nn.CrossEntropyLoss(weight=w, label_smoothing=...)``.
    """

    def __init__(self, weights: torch.Tensor | None, label_smoothing: float) -> None:
        super().__init__()
        self.register_buffer("weights", weights)
        self.label_smoothing = label_smoothing

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, slice_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        losses = nn.functional.cross_entropy(
            logits,
            labels,
            weight=self.weights,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        target_weights = torch.ones_like(losses) if self.weights is None else self.weights[labels]
        if slice_weights is not None:
            slice_weights = slice_weights.to(losses)
            losses, target_weights = losses * slice_weights, target_weights * slice_weights
        return losses.sum() / target_weights.sum().clamp(min=torch.finfo(losses.dtype).tiny)


def make_loss(weights: torch.Tensor | None, label_smoothing: float) -> SliceLoss:
    """Cross-entropy with optional class weights and label smoothing (see :class:`SliceLoss`)."""
    return SliceLoss(weights, label_smoothing)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW as timm builds it: no weight decay on norms, biases and position tables."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=weight_decay)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule (its state_dict holds only numbers)."""

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress(batches: Iterable[Batch], desc: str, enabled: bool) -> Iterator[Batch]:
    """Wrap ``batches`` in a tqdm bar that updates at most every few seconds (log-friendly)."""
    try:
        total = len(batches)
    except TypeError:  # a DataLoader over an IterableDataset has __len__ but no length
        total = None
    return iter(tqdm(batches, desc=desc, total=total, disable=not enabled, mininterval=5.0))


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    augment: AugmentSettings | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "train",
) -> dict[str, float]:
    """Train ``model`` on every batch once, stepping the schedule after each batch.

    Returns:
        ``{"train_loss": mean loss per slice, "train_slices": slices seen, "seconds": time}``.
    """
    start = time.perf_counter()
    model.train()
    # Summed on the device: reading the loss every step would stall the GPU queue.
    total_loss, seen = torch.zeros((), device=device), 0
    for batch in _progress(batches, desc, progress):
        images = to_device(batch["image"], device)
        labels = batch["label"].to(device)
        weights = batch.get("weight")
        if augment is not None:
            images = augment_batch(images, augment, generator or torch.Generator())
        with autocast(device):
            logits = model(images).float()
        loss = loss_fn(logits, labels, None if weights is None else weights.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * labels.numel()
        seen += labels.numel()
    if seen == 0:
        raise ValueError("the training split holds no labelled slice")
    return {
        "train_loss": float(total_loss) / seen,
        "train_slices": seen,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def collect_outputs(
    model: nn.Module, batches: Iterable[Batch], device: torch.device, *, progress: bool = False
) -> dict[str, Any]:
    """Run ``model`` over ``batches`` in eval mode and gather logits, labels and patient keys.

    Returns:
        ``{"logits": (N, 3) float32 tensor, "label": (N,) int64 tensor, "key": list of
        "cohort/patient" strings}``.
    """
    model.eval()
    logits, labels, keys = [], [], []
    for batch in _progress(batches, "validate", progress):
        with autocast(device):
            out = model(to_device(batch["image"], device))
        logits.append(out.float().cpu())
        labels.append(batch["label"].cpu())
        keys.extend(f"{c}/{p}" for c, p in zip(batch["cohort"], batch["patient"], strict=True))
    if not logits:
        empty = torch.zeros(0, len(CLASSES))
        return {"logits": empty, "label": torch.zeros(0, dtype=torch.long), "key": []}
    return {"logits": torch.cat(logits), "label": torch.cat(labels), "key": keys}


def patient_mean(probs: np.ndarray, labels: np.ndarray, keys: list[str]):
    """Average slice probabilities per patient; returns (probs (P, K), labels (P,), keys)."""
    unique, inverse = np.unique(np.asarray(keys), return_inverse=True)
    sums = np.zeros((unique.size, probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=unique.size)[:, None]
    patient_labels = np.zeros(unique.size, dtype=np.int64)
    patient_labels[inverse] = labels
    return sums / counts, patient_labels, unique.tolist()


def validate(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: nn.Module,
    device: torch.device,
    *,
    progress: bool = False,
) -> dict[str, float]:
    """Validation loss and macro AUCs at slice level and at patient level (mean of slices).

    An AUC averages the classes whose AUC is defined, so a small validation set lacking a
    class still ranks epochs; NaN when no class's AUC is defined (or no slice at all).
    """
    out = collect_outputs(model, batches, device, progress=progress)
    if out["label"].numel() == 0:
        nan = math.nan
        return {"val_loss": nan, "val_slice_macro_auc": nan, "val_patient_macro_auc": nan}
    loss = float(loss_fn(out["logits"].to(device), out["label"].to(device)))
    probs = torch.softmax(out["logits"], dim=1).numpy().astype(np.float64)
    labels = out["label"].numpy()
    p_probs, p_labels, _ = patient_mean(probs, labels, out["key"])
    return {
        "val_loss": loss,
        "val_slice_macro_auc": macro_auc(labels, probs, strict=False),
        "val_patient_macro_auc": macro_auc(p_labels, p_probs, strict=False),
    }

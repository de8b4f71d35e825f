"""Tensor augmentation of training batches: sequence dropout, flips, small rotations, intensity
jitter."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glioma.model.availability import drop_sequences


@dataclass(frozen=True)
class AugmentSettings:
    """How strongly training slices are perturbed.

    Attributes:
        flip: flip each slice left-right and, independently, up-down with probability 0.5.
        rotation_deg: rotate each slice by an angle drawn uniformly from +-this many degrees.
        intensity: per slice and channel, multiply by U(1-x, 1+x) and add U(-x, x).
        sequence_dropout: hide each present sequence of a slice with this probability, never
            all of them (:func:`glioma.model.availability.drop_sequences`).
    """

    flip: bool = True
    rotation_deg: float = 10.0
    intensity: float = 0.1
    sequence_dropout: float = 0.0


def _flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each slice left-right and up-down, each with probability 0.5."""
    n = images.shape[0]
    # torch.where rather than boolean indexing: no host-device synchronisation on a GPU.
    lr = (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1, 1).to(images.device)
    ud = (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1, 1).to(images.device)
    out = torch.where(lr, images.flip(-1), images)
    return torch.where(ud, out.flip(-2), out)


def _rotate(images: torch.Tensor, max_deg: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each slice about its centre; corners are filled with 0 (the background value)."""
    n = images.shape[0]
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_deg)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Scale and shift each slice's channels by small random amounts."""
    n, c = images.shape[:2]
    scale = 1 + (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * strength
    shift = (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * strength
    return images * scale.to(images) + shift.to(images)


def augment_batch(
    images: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> torch.Tensor:
    """Return a randomly perturbed copy of a batch of slices.

    Args:
        images: float tensor (B, C, H, W), on any device; an absent sequence's channel is NaN
            (and stays NaN, bar zero padding at rotated corners).
        settings: which perturbations to apply and how strongly.
        generator: a CPU generator, so the draws are seeded and do not depend on the device.

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    if images.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(images.shape)}")
    out = images
    if settings.sequence_dropout > 0:
        # First, so the hidden channels are NaN through the geometry like absent ones.
        out = drop_sequences(out, settings.sequence_dropout, generator)
    if settings.flip:
        out = _flip(out, generator)
    if settings.rotation_deg > 0:
        out = _rotate(out, settings.rotation_deg, generator)
    if settings.intensity > 0:
        out = _jitter(out, settings.intensity, generator)
    return out if out is not images else images.clone()

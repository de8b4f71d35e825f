"""Absent sequences at the model's input: a defined fill value, an availability mask, dropout.

A patient without, say, a T1w still gives the network its four image channels: the absent one
is filled with :data:`FILL` (0, the mean of a z-scored brain and the background value), and
the network is told which channels are real by one constant plane per sequence appended to
the images (1 present, 0 absent), so ``C`` sequences make ``2 * C`` input channels. Without the
mask a zero-filled channel is indistinguishable from a dark but real one.

During training :func:`sequence_dropout` hides each present sequence of a slice with a given
probability (never all of them), so the network learns not to lean on any one sequence and has
seen every pattern of absence before it meets one at prediction time.

Between the crops and the network an absent sequence travels as a channel of NaN (the crops,
the shards and every batch): :func:`absent` reads the pattern back from the images, and the
network's input hook (:func:`network_input`, attached by :func:`glioma.model.nets.build_model`)
turns NaN channels into :data:`FILL` plus availability planes. So every caller (training,
prediction, saliency, the ablation of :mod:`glioma.model.ablation`) hides a sequence the same
way, by setting its channel to NaN (:func:`hide`).
"""

from __future__ import annotations

import torch

#: The value an absent sequence's channel holds.
FILL = 0.0


def with_availability(
    images: torch.Tensor, available: torch.Tensor, *, check: bool = True
) -> torch.Tensor:
    """Fill the absent channels and append the availability planes.

    Args:
        images: float tensor (B, C, H, W), one channel per sequence.
        available: bool tensor (B, C): which sequences each slice has.
        check: refuse a slice with no sequence (costs a device synchronisation on a GPU).

    Returns:
        A new float tensor (B, 2C, H, W): the images with absent channels set to
        :data:`FILL`, then one plane per sequence, 1.0 where present and 0.0 where absent.

    Raises:
        ValueError: the shapes do not match, or a slice has no sequence at all.
    """
    if images.ndim != 4 or available.shape != images.shape[:2]:
        raise ValueError(
            f"images {tuple(images.shape)} and availability {tuple(available.shape)} do not "
            "match: expected (B, C, H, W) and (B, C)"
        )
    available = available.to(device=images.device, dtype=torch.bool)
    if check and not bool(available.any(dim=1).all()):
        raise ValueError("a slice has no sequence available")
    mask = available[:, :, None, None]
    filled = torch.where(mask, images, torch.full_like(images, FILL))
    planes = mask.to(images.dtype).expand_as(images)
    return torch.cat([filled, planes], dim=1)


def sequence_dropout(
    available: torch.Tensor, rate: float, generator: torch.Generator
) -> torch.Tensor:
    """Hide each present sequence with probability ``rate``, keeping at least one per slice.

    Where every present sequence of a slice was drawn to be hidden, one of them (chosen at
    random) is kept instead.

    Args:
        available: bool tensor (B, C).
        rate: probability in [0, 1) of hiding a present sequence.
        generator: a CPU generator (seeded draws, whatever the device).

    Returns:
        A new bool tensor (B, C) on ``available``'s device: a subset of ``available`` with at
        least one True per row.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"sequence dropout rate must be in [0, 1), got {rate}")
    present = available.to("cpu", torch.bool)
    if rate == 0:
        return present.clone().to(available.device)
    hidden = torch.rand(present.shape, generator=generator) < rate
    kept = present & ~hidden
    empty = ~kept.any(dim=1)
    if bool(empty.any()):
        # Keep one present sequence of each emptied slice: the highest random score among
        # its present ones.
        scores = torch.rand(present.shape, generator=generator).masked_fill(~present, -1.0)
        rescue = torch.zeros_like(present)
        rescue[torch.arange(len(present)), scores.argmax(dim=1)] = True
        kept = torch.where(empty[:, None], rescue, kept)
    return kept.to(available.device)


def absent(images: torch.Tensor) -> torch.Tensor:
    """Which channels of a batch (B, C, H, W) are absent: bool (B, C), True where a channel
    holds NaN (an absent sequence is all NaN; augmentation may pad its edges with 0)."""
    return torch.isnan(images).flatten(2).any(dim=2)


def hide(images: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` (B, C, H, W) with the channels where ``hidden`` (B, C) is True set
    to NaN: how a sequence is made absent."""
    mask = hidden.to(device=images.device, dtype=torch.bool)[:, :, None, None]
    return images.masked_fill(mask, float("nan"))


def network_input(images: torch.Tensor) -> torch.Tensor:
    """The network's input (B, 2C, H, W) from images (B, C, H, W) whose absent channels are
    NaN: the channels filled with :data:`FILL`, then the availability planes."""
    return with_availability(images, ~absent(images), check=False)


def drop_sequences(images: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Sequence dropout of a training batch whose absent channels are NaN: each present
    sequence of a slice is hidden (set to NaN) with probability ``rate``, never all of them."""
    if rate == 0:
        return images
    available = ~absent(images)
    kept = sequence_dropout(available, rate, generator)
    return hide(images, available & ~kept)

"""Absent sequences at the model's input: fill value, availability planes, sequence dropout."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from glioma.model.augment import AugmentSettings, augment_batch
from glioma.model.availability import (
    FILL,
    absent,
    drop_sequences,
    hide,
    network_input,
    sequence_dropout,
    with_availability,
)
from glioma.model.nets import build_model


def test_absent_channels_are_filled_and_the_mask_is_appended() -> None:
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) + 1
    available = torch.tensor([[True, False, True], [False, False, True]])
    out = with_availability(images, available)
    assert out.shape == (2, 6, 2, 2)
    assert torch.equal(out[0, 0], images[0, 0]) and torch.equal(out[0, 2], images[0, 2])
    assert torch.all(out[0, 1] == FILL) and torch.all(out[1, :2] == FILL)
    assert torch.equal(out[:, 3:, 0, 0], available.float())
    assert torch.all(out[:, 3:] == out[:, 3:, :1, :1])  # constant planes


def test_bad_shapes_and_a_slice_without_sequences_are_refused() -> None:
    images = torch.zeros(2, 4, 3, 3)
    with pytest.raises(ValueError, match="do not match"):
        with_availability(images, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no sequence"):
        with_availability(images, torch.tensor([[True] * 4, [False] * 4]))


def test_dropout_hides_about_rate_and_never_everything() -> None:
    available = torch.ones(20000, 4, dtype=torch.bool)
    available[::2, 0] = False  # half the slices lack the first sequence
    kept = sequence_dropout(available, 0.3, torch.Generator().manual_seed(0))
    assert not torch.any(kept & ~available)  # never invents a sequence
    assert torch.all(kept.any(dim=1))
    hidden = (available & ~kept).sum() / available.sum()
    assert hidden.item() == pytest.approx(0.3, abs=0.01)  # a few rows rescued: slightly less
    single = torch.tensor([[False, False, True, False]] * 100)
    assert torch.equal(sequence_dropout(single, 0.9, torch.Generator().manual_seed(1)), single)
    again = sequence_dropout(available, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(kept, again)
    assert torch.equal(sequence_dropout(available, 0.0, torch.Generator()), available)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sequence_dropout(available, 1.0, torch.Generator())


def _cohort(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise slices whose class is decided by one sequence alone: a central blob in channel 1
    is bright for class 1 and dark for class 0; the other channels carry nothing."""
    labels = torch.arange(n) % 2
    images = torch.randn(n, 4, 16, 16, generator=generator) * 0.5
    blob = torch.zeros(16, 16)
    blob[5:11, 5:11] = 1.0
    images[:, 1] += (labels.float() * 2 - 1)[:, None, None] * blob
    return images, labels


def test_a_model_trained_with_dropout_uses_the_sequence_when_there_and_copes_without() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 2),
    )  # fmt: skip
    model.register_forward_pre_hook(lambda _, args: (network_input(args[0]),))  # as build_model
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    images, labels = _cohort(256, generator)
    settings = AugmentSettings(flip=True, rotation_deg=10.0, intensity=0.1, sequence_dropout=0.3)
    for _ in range(60):
        # Training's own augmentation: dropout hides channels as NaN, then the geometry.
        batch = augment_batch(images, settings, generator)
        loss = nn.functional.cross_entropy(model(batch), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    test_images, test_labels = _cohort(200, torch.Generator().manual_seed(1))

    def auc(available: torch.Tensor) -> float:
        with torch.no_grad():
            logits = model(hide(test_images, ~available))
        assert torch.isfinite(logits).all()
        return roc_auc_score(test_labels.numpy(), logits.softmax(1)[:, 1].numpy())

    present = torch.ones(len(test_labels), 4, dtype=torch.bool)
    absent = present.clone()
    absent[:, 1] = False
    assert auc(present) > 0.95
    assert 0.3 < auc(absent) < 0.7  # nothing left to decide by: near chance, and no crash


def test_nan_channels_are_absent_sequences_end_to_end() -> None:
    """hide -> NaN channel; absent() reads it back through augmentation; the network input
    fills it and sets its plane to 0; build_model's hook does the same inside the model."""
    images = torch.randn(3, 4, 16, 16)
    hidden = torch.tensor([[False, True, False, False]] * 2 + [[True, False, False, True]])
    gapped = hide(images, hidden)
    assert torch.equal(absent(gapped), hidden)
    rotated = augment_batch(gapped, AugmentSettings(rotation_deg=30.0), torch.Generator())
    assert torch.equal(absent(rotated), hidden)  # zero-padded corners do not un-hide it
    net_in = network_input(gapped)
    assert torch.isfinite(net_in).all()
    assert torch.equal(net_in, with_availability(images, ~hidden))
    dropped = drop_sequences(gapped, 0.5, torch.Generator().manual_seed(0))
    assert torch.all(absent(dropped) >= hidden) and not torch.all(absent(dropped), dim=1).any()

    torch.manual_seed(0)
    model = build_model("resnet10t").eval()
    with torch.no_grad():
        out = model(gapped)
        stem = model.conv1[0] if isinstance(model.conv1, nn.Sequential) else model.conv1
        assert stem.in_channels == 8
        assert torch.isfinite(out).all()
        handle_free = model.forward(net_in)  # forward() skips the hook: the same network input
    torch.testing.assert_close(out, handle_free)

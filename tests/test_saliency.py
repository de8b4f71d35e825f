"""Saliency maps on a synthetic task whose class is a bright spot at a known place."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from glioma.model import saliency
from glioma.model.nets import build_model

torch.set_num_threads(2)

SIZE = 32
SPOT = 6
#: Top-left corner of the bright spot of classes 0 and 1; class 2 has none.
SPOTS = {0: (5, 5), 1: (21, 21)}
#: Pixels around the spot still counted as on it (Grad-CAM's map is 4x4, 8 px a cell).
DILATION = 3
TINY_SWIN = {
    "img_size": SIZE,
    "embed_dim": 24,
    "depths": [1, 1],
    "num_heads": [1, 2],
    "window_size": 4,
    "patch_size": 4,
}


def spot_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n slices (n, 4, SIZE, SIZE) of low noise, classes cycling 0, 1, 2, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.1 * torch.randn(n, 4, SIZE, SIZE, generator=generator)
    labels = torch.arange(n) % 3
    for i, label in enumerate(labels.tolist()):
        if label in SPOTS:
            row, col = SPOTS[label]
            images[i, :, row : row + SPOT, col : col + SPOT] += 3.0
    return images, labels


def spot_mask(n: int, label: int = 0) -> np.ndarray:
    """The dilated spot region of class ``label``, for n slices."""
    row, col = SPOTS[label]
    mask = np.zeros((n, SIZE, SIZE), dtype=bool)
    rows = slice(max(row - DILATION, 0), row + SPOT + DILATION)
    mask[:, rows, max(col - DILATION, 0) : col + SPOT + DILATION] = True
    return mask


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """resnet10t trained to tell the spots apart (seeded, ~5 s on 2 cores).

    ``output_stride=8`` keeps layer4 at 4x4 on 32-pixel slices; at timm's default 32 it would
    be 1x1, a map with nothing to localise.
    """
    torch.manual_seed(0)
    model = build_model("resnet10t", {"output_stride": 8})
    images, labels = spot_images(96, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(60):
        batch = torch.randint(0, len(images), (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    optimiser.zero_grad()  # so tests can see that saliency leaves no gradient behind
    model.eval()
    test_images, test_labels = spot_images(30, seed=5)
    with torch.no_grad():
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean().item()
    assert accuracy == 1.0
    return model


@pytest.fixture(scope="module")
def spot_slices() -> torch.Tensor:
    """Six unseen class-0 slices (spot top-left)."""
    images, labels = spot_images(18, seed=7)
    return images[labels == 0]


def assert_maps(maps: np.ndarray, shape: tuple[int, ...]) -> None:
    """Maps of the given shape, float32, finite, in [0, 1]."""
    assert maps.shape == shape
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_grad_cam_finds_the_spot_and_a_randomised_model_does_not(trained, spot_slices) -> None:
    mask = spot_mask(len(spot_slices))
    chance = mask[0].mean()  # 0.14
    maps = saliency.grad_cam(trained, spot_slices, 0)
    assert_maps(maps, (len(spot_slices), SIZE, SIZE))
    overlap = saliency.top_overlap(maps, mask)
    assert overlap > 0.6 > 3 * chance  # measured 0.74

    random_maps = saliency.grad_cam(saliency.randomised_copy(trained, seed=0), spot_slices, 0)
    assert saliency.top_overlap(random_maps, mask) < 0.2  # measured 0.0
    rho = saliency.rank_correlation(maps, random_maps)
    assert rho < 0.5  # measured -0.52


def test_saliency_maps_auto_uses_grad_cam_on_the_trained_model(trained, spot_slices) -> None:
    maps, method = saliency.saliency_maps([trained, trained], spot_slices, 0)
    assert method == "grad-cam"
    np.testing.assert_allclose(maps, saliency.grad_cam(trained, spot_slices, 0), atol=1e-6)


def test_occlusion_peaks_at_the_spot(trained, spot_slices) -> None:
    maps = saliency.occlusion(trained, spot_slices, [0] * len(spot_slices))
    assert_maps(maps, (len(spot_slices), SIZE, SIZE))
    assert saliency.top_overlap(maps, spot_mask(len(spot_slices))) > 0.8  # measured 1.0
    assert trained.training is False


def test_grad_cam_on_a_tiny_swin_with_nhwc_stage() -> None:
    torch.manual_seed(0)
    model = build_model("swin_tiny_patch4_window7_224", TINY_SWIN)
    assert saliency.target_layer(model) is model.layers[-1]
    images, _ = spot_images(3, seed=2)
    maps = saliency.grad_cam(model, images, [0, 1, 2])
    assert_maps(maps, (3, SIZE, SIZE))
    assert maps.max() == 1.0
    assert not model.training  # grad_cam puts the model in eval mode


def test_target_layer_of_known_families() -> None:
    resnet = build_model("resnet10t")
    assert saliency.target_layer(resnet) is resnet.layer4
    convnext = build_model("convnext_atto")
    assert saliency.target_layer(convnext) is convnext.stages[-1]


def test_auto_falls_back_to_occlusion_without_a_spatial_stage(caplog) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    assert saliency.target_layer(model) is None
    images = torch.randn(2, 4, 8, 8)
    with caplog.at_level("INFO", logger="glioma.model.saliency"):
        maps, method = saliency.saliency_maps([model], images, 1)
    assert method == "occlusion"
    assert "occlusion" in caplog.text
    assert_maps(maps, (2, 8, 8))
    with pytest.raises(ValueError, match="no spatial stage"):
        saliency.grad_cam(model, images, 1)


def test_auto_falls_back_when_the_last_stage_is_one_pixel() -> None:
    torch.manual_seed(0)
    model = build_model("resnet10t")  # stride 32: layer4 is 1x1 on 32-pixel slices
    images, _ = spot_images(2, seed=3)
    _, method = saliency.saliency_maps([model], images, 0)
    assert method == "occlusion"
    _, forced = saliency.saliency_maps([model], images, 0, method="grad-cam")
    assert forced == "grad-cam"
    with pytest.raises(ValueError, match="a method of"):
        saliency.saliency_maps([model], images, 0, method="lime")


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
        for m in model.modules()
    )


def test_grad_cam_leaves_no_hook_and_no_input_gradient(trained, spot_slices) -> None:
    images = spot_slices.clone()
    before = _hooks(trained)  # build_model's availability input hook stays
    saliency.grad_cam(trained, images, 0)
    assert _hooks(trained) == before
    assert images.grad is None
    assert all(p.grad is None for p in trained.parameters())
    with pytest.raises(RuntimeError):  # 3 channels: the forward pass fails inside the hook
        saliency.grad_cam(trained, images[:, :3], 0)
    assert _hooks(trained) == before


def test_randomised_copy_changes_every_layer_and_is_seeded(trained) -> None:
    state = torch.random.get_rng_state()
    first = saliency.randomised_copy(trained, seed=3)
    second = saliency.randomised_copy(trained, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, original), a, b in zip(
        trained.named_parameters(), first.parameters(), second.parameters(), strict=True
    ):
        assert torch.equal(a, b), name
        assert not torch.equal(a, original), name
    assert first is not trained


def test_top_overlap_on_hand_made_maps() -> None:
    saliency_map = np.zeros((2, 10, 10))
    saliency_map[0, 0, :5] = 1.0  # the top 5 % of 100 pixels: 5 pixels
    saliency_map[1, 9, :5] = 1.0
    mask = np.zeros((2, 10, 10), dtype=bool)
    mask[:, 0, :] = True
    assert saliency.top_overlap(saliency_map, mask) == 0.5  # 5 of the 10 pooled top pixels
    assert saliency.top_overlap(saliency_map[0], mask[0]) == 1.0
    assert saliency.top_overlap(saliency_map[1], mask[1]) == 0.0
    assert saliency.top_overlap(saliency_map[1], mask[1], fraction=0.1) == 0.5  # ties: first
    with pytest.raises(ValueError):
        saliency.top_overlap(saliency_map, mask[0])


def test_rank_correlation() -> None:
    a = np.arange(16.0).reshape(4, 4)
    assert saliency.rank_correlation(a, a**3) == pytest.approx(1.0)
    assert saliency.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert math.isnan(saliency.rank_correlation(a, np.zeros_like(a)))


def test_pick_slices() -> None:
    area = np.array([0, 5, 9, 1, 9, 7, 0])
    assert saliency.pick_slices(area, 3).tolist() == [2, 4, 5]
    assert saliency.pick_slices(area, 1).tolist() == [2]  # ties: the first
    assert saliency.pick_slices(area[:2], 3).tolist() == [0, 1]


def test_plot_saliency_writes_a_png(tmp_path) -> None:
    images, _ = spot_images(3, seed=4)
    maps = np.random.default_rng(0).random((3, SIZE, SIZE)).astype(np.float32)
    path = tmp_path / "out" / "patient.png"
    saliency.plot_saliency(
        images.numpy(), maps, [4, 9, 12], path, title="A / P1", method="grad-cam"
    )
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
    assert [p.name for p in path.parent.iterdir()] == ["patient.png"]
    with pytest.raises(ValueError):
        saliency.plot_saliency(images.numpy(), maps[:2], [4, 9], path, title="x", method="x")


def test_plot_saliency_labels_a_sequence_that_was_not_acquired(tmp_path, monkeypatch) -> None:
    images, _ = spot_images(2, seed=5)
    images = images.numpy().copy()
    images[:, 3] = np.nan  # no FLAIR
    maps = np.random.default_rng(1).random((2, SIZE, SIZE)).astype(np.float32)
    drawn = {}
    savefig = saliency.Figure.savefig

    def keep(figure, *args, **kwargs):
        drawn["figure"] = figure
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(saliency.Figure, "savefig", keep)
    path = tmp_path / "patient.png"
    saliency.plot_saliency(images, maps, [3, 7], path, title="A / P2", method="grad-cam")
    labels = [ax.get_ylabel() for ax in drawn["figure"].axes if ax.get_ylabel()]
    assert labels == ["T1c", "FLAIR (not acquired)"]
    with Image.open(path) as image:
        image.verify()

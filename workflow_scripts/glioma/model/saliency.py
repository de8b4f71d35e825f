"""Saliency maps of slices: Grad-CAM (Selvaraju et al. 2017), occlusion (Zeiler and Fergus 2014).

:func:`randomised_copy` and :func:`rank_correlation` make the model-randomisation check of
Adebayo et al. (2018): maps that survive random weights say nothing about what was learned.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from torch import nn

from glioma.constants import SEQUENCES
from glioma.io import atomic_path

log = logging.getLogger(__name__)

GRAD_CAM = "grad-cam"
OCCLUSION = "occlusion"
AUTO = "auto"
METHODS = (GRAD_CAM, OCCLUSION)
ClassIndex = int | Sequence[int]
#: Channels drawn under the map, as (channel index, row label).
_SHOWN = ((SEQUENCES.index("t1c"), "T1c"), (SEQUENCES.index("flair"), "FLAIR"))


def target_layer(model: nn.Module) -> nn.Module | None:
    """The last spatial stage (``layer4``, Swin's NHWC ``layers[-1]``, ``stages[-1]``) or None."""
    if isinstance(getattr(model, "layer4", None), nn.Module):
        return model.layer4
    for stages in (getattr(model, "layers", None), getattr(model, "stages", None)):
        if isinstance(stages, nn.Sequential | nn.ModuleList) and len(stages):
            return stages[-1]
    return None


def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    return next((param.device for param in model.parameters()), torch.device("cpu"))


def _targets(class_index: ClassIndex, n: int, device: torch.device) -> torch.Tensor:
    """One class index per slice, as a (n,) long tensor."""
    if isinstance(class_index, int | np.integer):
        return torch.full((n,), int(class_index), dtype=torch.long, device=device)
    targets = torch.as_tensor(list(class_index), dtype=torch.long, device=device)
    if targets.shape != (n,):
        raise ValueError(f"class_index has {targets.numel()} entries for {n} slices")
    return targets


def _scale(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Maps (S, H, W) clipped at 0 and divided by each slice's maximum (all-zero stays zero)."""
    out = np.asarray(maps, dtype=np.float64)
    out = np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    peak = out.max(axis=(1, 2), initial=0.0, keepdims=True)
    return np.divide(out, peak, out=np.zeros_like(out), where=peak > 0).astype(np.float32)


def _activation_and_grad(
    model: nn.Module, layer: nn.Module, images: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output (made a leaf: backward stops there) and the target logits' gradient."""
    store: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        store["activation"] = output.detach().requires_grad_(True)
        return store["activation"].clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(images)
            if "activation" not in store:
                raise ValueError("the model's forward pass does not call the target layer")
            score = logits.float().gather(1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(score, store["activation"], materialize_grads=True)
    finally:
        handle.remove()
    return store["activation"].detach().float(), grad.float()


def _grad_cam(model: nn.Module, images: torch.Tensor, index: ClassIndex) -> tuple[np.ndarray, bool]:
    """Grad-CAM maps (S, H, W), and whether the gradient is usable (finite, non-zero, >1 px)."""
    layer = target_layer(model)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no spatial stage for Grad-CAM")
    images = images.to(_device(model), torch.float32)
    targets = _targets(index, len(images), images.device)
    activation, grad = _activation_and_grad(model.eval(), layer, images, targets)
    if activation.ndim != 4:
        raise ValueError(f"the target layer's output {tuple(activation.shape)} is not spatial")
    if getattr(model, "output_fmt", "NCHW") == "NHWC":  # timm's Swin
        activation, grad = activation.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))
    usable = bool(torch.isfinite(grad).all() and grad.any()) and cam.shape[-2:].numel() > 1
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return _scale(cam[:, 0].cpu()), usable


def grad_cam(model: nn.Module, images: torch.Tensor, class_index: ClassIndex) -> np.ndarray:
    """Grad-CAM maps (S, H, W) float32 in [0, 1] of slices (S, 4, H, W), a class per slice.

    The :func:`target_layer` output (NCHW or NHWC) weighed by its mean gradient, kept where
    positive, upsampled bilinearly and divided by each slice's maximum. Puts the model in eval
    mode, leaves no hook; ValueError when the model has no spatial stage.
    """
    return _grad_cam(model, images, class_index)[0]


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch origins along one axis that cover it to the last pixel."""
    last = max(size - patch, 0)
    return sorted({*range(0, last + 1, stride), last})


def _drops(model: nn.Module, image: torch.Tensor, target: int, boxes, patch: int, batch: int):
    """Drop of the class probability (len(boxes),) when each box of one image is zeroed."""
    base = torch.softmax(model(image[None]).float(), dim=1)[0, target]
    drops = []
    for first in range(0, len(boxes), batch):
        chunk = boxes[first : first + batch]
        copies = image[None].repeat(len(chunk), 1, 1, 1)
        for k, (r, c) in enumerate(chunk):
            copies[k, :, r : r + patch, c : c + patch] = 0
        drops.append(base - torch.softmax(model(copies).float(), dim=1)[:, target])
    return torch.cat(drops).cpu()


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    class_index: ClassIndex,
    *,
    patch: int = 8,
    stride: int | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion sensitivity maps (S, H, W) float32 in [0, 1]; puts the model in eval mode.

    A pixel's value: the mean drop in the class probability when a ``patch`` square over it is
    set to 0 (the images' mean) every ``stride`` pixels (default half the patch), clipped at 0.
    """
    stride = stride or max(1, patch // 2)
    if patch < 1 or stride < 1 or batch_size < 1:
        raise ValueError(f"patch {patch}, stride {stride} and batch_size {batch_size} must be >0")
    images = images.to(_device(model.eval()), torch.float32)
    n, _, height, width = images.shape
    targets = _targets(class_index, n, torch.device("cpu")).tolist()
    boxes = [(r, c) for r in _starts(height, patch, stride) for c in _starts(width, patch, stride)]
    drop, count = torch.zeros(2, n, height, width)
    with torch.no_grad():
        for i in range(n):
            drops = _drops(model, images[i], targets[i], boxes, patch, batch_size)
            for (r, c), value in zip(boxes, drops, strict=True):
                drop[i, r : r + patch, c : c + patch] += value
                count[i, r : r + patch, c : c + patch] += 1
    return _scale(drop / count)


def _usable_grad_cams(
    models: Sequence[nn.Module], images: torch.Tensor, class_index: int
) -> list[np.ndarray] | None:
    """Every model's Grad-CAM maps, or None (logged why) when one model cannot give them."""
    maps = []
    for model in models:
        try:
            cam, usable = _grad_cam(model, images, class_index)
            problem = "" if usable else "zero or non-finite gradient, or a one-pixel map"
        except ValueError as err:  # no spatial stage, or its output is not a map
            problem = str(err)
        if problem:
            log.info(
                "saliency by occlusion: no Grad-CAM for %s (%s)", type(model).__name__, problem
            )
            return None
        maps.append(cam)
    return maps


def saliency_maps(
    models: Sequence[nn.Module], images: torch.Tensor, class_index: int, *, method: str = AUTO
) -> tuple[np.ndarray, str]:
    """The models' mean map (S, H, W), rescaled to [0, 1], and the method used (of METHODS).

    ``auto`` is Grad-CAM when every model has a spatial stage with a usable gradient (finite,
    non-zero, on a map larger than one pixel), else occlusion.
    """
    if method not in (AUTO, *METHODS) or not models:
        raise ValueError(f"saliency needs models and a method of {(AUTO, *METHODS)}: {method!r}")
    maps = None
    if method == AUTO:
        maps = _usable_grad_cams(models, images, class_index)
        method = OCCLUSION if maps is None else GRAD_CAM
    elif method == GRAD_CAM:
        maps = [grad_cam(model, images, class_index) for model in models]
    if maps is None:
        maps = [occlusion(model, images, class_index) for model in models]
    return _scale(np.mean(maps, axis=0)), method


def _reinitialise(module: nn.Module) -> None:
    """Re-initialise the module's own parameters (its reset, else timm's N(0, 0.02))."""
    own = list(module.parameters(recurse=False))
    if own and callable(getattr(module, "reset_parameters", None)):
        module.reset_parameters()
        return
    for param in own:
        nn.init.trunc_normal_(param, std=0.02)


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy with every parameterised layer re-initialised (Adebayo et al. 2018).

    Norm layers get back their initial weights and statistics; weights are drawn on the CPU
    from ``seed`` (the same on any device), leaving the global random state as it was.
    """
    device = _device(model)
    clone = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in clone.modules():
            _reinitialise(module)
    return clone.to(device)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over their pixels; NaN when one is constant."""
    a, b = (np.asarray(x, dtype=np.float64).ravel() for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"maps of {a.size} and {b.size} pixels cannot be compared")
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(spearmanr(a, b).statistic)


def top_overlap(saliency: np.ndarray, mask: np.ndarray, fraction: float = 0.05) -> float:
    """Share of each map's top ``fraction`` pixels inside the mask, pooled over the slices.

    Maps and mask are (S, H, W) or (H, W); ties go to the first pixels in raster order. Chance
    level is the mask's area fraction; NaN for no slice.
    """
    saliency, mask = np.asarray(saliency, dtype=np.float64), np.asarray(mask, dtype=bool)
    if saliency.shape != mask.shape or saliency.ndim not in (2, 3) or not 0 < fraction <= 1:
        raise ValueError(
            f"need 2D/3D maps {saliency.shape} = mask {mask.shape}, 0 < {fraction} <= 1"
        )
    flat = saliency.reshape(-1, saliency.shape[-2] * saliency.shape[-1])
    if not len(flat):
        return math.nan
    k = max(1, math.ceil(fraction * flat.shape[1] - 1e-9))
    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(mask.reshape(flat.shape), top, axis=1).mean())


def pick_slices(roi_area: np.ndarray, n: int = 3) -> np.ndarray:
    """Indices of the ``n`` slices with the largest tumour area, in slice order (ties: first)."""
    area = np.asarray(roi_area, dtype=np.float64).ravel()
    return np.sort(np.argsort(-area, kind="stable")[: max(n, 0)]).astype(np.int64)


def plot_saliency(
    images: np.ndarray,
    maps: np.ndarray,
    slice_index: Sequence[int],
    path: str | Path,
    *,
    title: str,
    method: str,
) -> None:
    """Write a PNG atomically: per slice (n, 4, H, W) T1c and FLAIR in grey under its map (a
    sequence that is all NaN, not acquired, is labelled so and shows the map alone)."""
    images, maps = np.asarray(images, dtype=np.float32), np.asarray(maps, dtype=np.float32)
    n = len(images)
    if not n or images.ndim != 4 or maps.shape != (n, *images.shape[2:]) or len(slice_index) != n:
        raise ValueError(f"cannot show {maps.shape} maps over {images.shape} slices {slice_index}")
    figure = Figure(figsize=(2.2 * n + 0.6, 5.0), layout="constrained")
    axes = figure.subplots(2, n, squeeze=False)
    # A sequence the patient lacks is a NaN channel: its row shows the map alone, labelled so.
    absent = {channel: bool(np.isnan(images[:, channel]).all()) for channel, _ in _SHOWN}
    for col in range(n):
        for ax, (channel, label) in zip(axes[:, col], _SHOWN, strict=True):
            ax.imshow(images[col, channel], cmap="gray", interpolation="nearest")
            ax.imshow(maps[col], cmap="inferno", alpha=0.45, vmin=0.0, vmax=1.0)
            if absent[channel]:
                label = f"{label} (not acquired)"
            ax.set(xticks=[], yticks=[], ylabel=label if col == 0 else "")
        axes[0, col].set_title(f"slice {slice_index[col]}", fontsize=9)
    figure.suptitle(title, fontsize=10)
    label = {GRAD_CAM: "Grad-CAM", OCCLUSION: "occlusion sensitivity"}.get(method, method)
    shown = ", ".join(str(int(s)) for s in slice_index)
    figure.supxlabel(f"{label} (bright = more influence); slices {shown}", size=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)

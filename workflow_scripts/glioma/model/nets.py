"""Build timm classifiers of the 4 sequences and 3 classes, optionally from local weights.

A model is called with one channel per sequence, an absent sequence's channel all NaN; a
forward pre-hook (:func:`glioma.model.availability.network_input`) turns that into the
network's 8 channels, the filled images and one availability plane per sequence. The hook keeps
the model a plain timm model (its state dict, stem and stages are timm's), so checkpoints,
local weights and Grad-CAM's layer lookup work unchanged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioma.constants import CLASSES, SEQUENCES
from glioma.model.availability import network_input

log = logging.getLogger(__name__)

#: Channels a model is called with: one per sequence (NaN where absent).
IN_CHANS = len(SEQUENCES)
#: Channels the network itself sees: the filled images and one availability plane per sequence.
NET_CHANS = 2 * IN_CHANS
NUM_CLASSES = len(CLASSES)


def pick_device(name: str | None = None) -> torch.device:
    """Return ``name`` as a device, or CUDA when available and the CPU otherwise."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _local_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file (timm/PyTorch checkpoint or safetensors) without executing code."""
    from timm.models import load_state_dict

    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained_weights: file {str(path)!r} does not exist")
    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as err:  # torch and safetensors raise several unrelated types
        raise ValueError(
            f"model.pretrained_weights: file {str(path)!r} cannot be read as weights ({err})"
        ) from err


def _overlay_for(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Describe ``state`` to timm so it keeps what fits and adapts or drops the rest.

    timm drops the classifier when the file's class count differs from ours, and repeats a
    3-channel stem over the network's 8 channels; a stem that already has 8 (our own
    checkpoints) must not go through that conversion, which only accepts 3-channel weights.
    """
    cfg = model.pretrained_cfg
    overlay: dict[str, Any] = {"state_dict": state}
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    for head in heads:
        weight = state.get(f"{head}.weight")
        if weight is not None:
            overlay["num_classes"] = int(weight.shape[0])
            break
    stems = cfg.get("first_conv") or ()
    stems = (stems,) if isinstance(stems, str) else tuple(stems)
    for stem in stems:
        weight = state.get(f"{stem}.weight")
        if weight is not None and weight.ndim == 4 and weight.shape[1] == NET_CHANS:
            overlay["first_conv"] = None
    return overlay


def build_model(
    name: str, kwargs: dict[str, Any] | None = None, pretrained_weights: str | Path = ""
) -> nn.Module:
    """Create a timm model of the 4 sequences (absent ones NaN) with 3 outputs.

    Args:
        name: any timm model name, e.g. ``swin_tiny_patch4_window7_224``.
        kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``,
            ``embed_dim``, ``depths``, ``num_heads``, ``window_size`` for a small Swin).
        pretrained_weights: a local weights file, or empty for random initialisation. A
            3-channel stem is adapted to the network's 8 channels and a classifier of another
            size is re-initialised, as timm does; nothing is downloaded.

    Returns:
        The model, on the CPU, in training mode, with the availability input hook.

    Raises:
        ValueError: unknown model name, bad keyword arguments or unreadable weights.
    """
    import timm

    # timm otherwise spends ~47 s retrying the hub when it looks for weights offline.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kwargs = dict(kwargs or {})
    if not timm.is_model(name):
        raise ValueError(f"model.name: {name!r} is not a timm model name")
    try:
        model = timm.create_model(name, in_chans=NET_CHANS, num_classes=NUM_CLASSES, **kwargs)
    except TypeError as err:
        raise ValueError(f"model.kwargs: {kwargs} do not fit {name!r} ({err})") from err
    if not pretrained_weights:
        return _with_input_hook(model)
    path = Path(pretrained_weights)
    overlay = _overlay_for(model, _local_state_dict(path))
    model = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=overlay,
        in_chans=NET_CHANS,
        num_classes=NUM_CLASSES,
        **kwargs,
    )
    log.info("loaded local weights %s into %s", path, name)
    return _with_input_hook(model)


def _network_input_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: sequence images (B, 4, H, W), NaN where absent -> network input."""
    return (network_input(args[0]), *args[1:])


def _with_input_hook(model: nn.Module) -> nn.Module:
    """Attach the availability input hook to ``model`` and return it."""
    model.register_forward_pre_hook(_network_input_hook)
    return model


def check_input_size(model: nn.Module, height: int, width: int) -> None:
    """Raise a clear error when the model cannot take ``height`` x ``width`` slices.

    Raises:
        ValueError: naming ``preprocess.crop.size`` and ``model.kwargs.img_size``.
    """
    probe = torch.zeros(1, IN_CHANS, height, width)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(probe.to(next(model.parameters()).device))
    except (AssertionError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"slices of {height}x{width} do not fit the model ({err}); set "
            "preprocess.crop.size and model.kwargs.img_size to the same size"
        ) from err
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, NUM_CLASSES):
        raise ValueError(f"the model returns shape {tuple(out.shape)}, not (1, {NUM_CLASSES})")


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

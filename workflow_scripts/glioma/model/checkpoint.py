"""Checkpoints that load with ``torch.load(weights_only=True)``: tensors and plain types only."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glioma.io import atomic_path


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Capture the Python, NumPy and torch generators as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(obj: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically: a kill mid-write leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without unpickling code (``weights_only=True``)."""
    return torch.load(path, map_location=device, weights_only=True)


def file_fingerprint(paths: Iterable[str | Path]) -> list[list[Any]]:
    """Name and size of every file under ``paths`` (folders walked), as a cheap change marker."""
    entries = []
    for root in paths:
        root = Path(root)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        entries.extend([str(p), p.stat().st_size] for p in files)
    return entries


def config_hash(settings: dict[str, Any], inputs: Iterable[str | Path] = ()) -> str:
    """Hash of the settings that shape training and of the input files' names and sizes.

    A resume is allowed only when this matches, so a checkpoint is never continued under
    different data or hyperparameters.
    """
    payload = {"settings": settings, "inputs": file_fingerprint(inputs)}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a small file's content (e.g. the splits table)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

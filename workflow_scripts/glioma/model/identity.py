"""Which settings shape a trained model (standard library only: rule files import it).

Snakemake reruns a job when one of its declared params changes, not when a setting merely
reaches its script through the config. ``train_classifier`` therefore declares
:func:`training_identity` as a param: a change of any setting in it retrains, and a change of a
setting left out (how many workers read the shards, how many processes share the work, whether
the network is compiled) does not.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: ``model`` keys that change how training runs, never which model it makes (up to float
#: summation order): DataLoader workers, data-parallel processes, torch.compile.
NOT_TRAINING_KEYS = frozenset({"num_workers", "processes", "compile"})


def plain(value: Any) -> Any:
    """Snakemake's config containers as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return copy.copy(value)


def model_identity(model: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` section without the keys of :data:`NOT_TRAINING_KEYS`."""
    return {k: plain(v) for k, v in model.items() if k not in NOT_TRAINING_KEYS}


def training_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a validated workflow config that change the trained model.

    The training settings, the split settings (the slice-level split draws slices from them)
    and the seed; the split manifest and the shards are the rule's inputs.
    """
    return {
        "model": model_identity(config["model"]),
        "split": plain(config["split"]),
        "seed": int(config["seed"]),
    }

"""Typed training settings read from the validated workflow config."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from glioma.model.augment import AugmentSettings
from glioma.model.identity import NOT_TRAINING_KEYS


@dataclass(frozen=True)
class TrainSettings:
    """The ``model:`` config section and the seed, typed."""

    name: str
    kwargs: dict[str, Any]
    pretrained_weights: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    label_smoothing: float
    balance: str
    patient_weighting: str
    select: str
    min_epochs: int
    patience: int
    compile: bool
    num_workers: int
    processes: int
    augment: AugmentSettings
    seed: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainSettings:
        """Read the validated workflow config (defaults filled)."""
        model = dict(config["model"])
        model["augment"] = AugmentSettings(**model.get("augment", {}))
        return cls(seed=int(config["seed"]), **model)

    def identity(self) -> dict[str, Any]:
        """The settings that shape training (not workers, compilation or process count).

        The process count is left out so that a run resumes on a node with another number of
        GPUs: ``batch_size`` is the batch of all processes together, whatever their number.
        """
        out = asdict(self)
        for key in NOT_TRAINING_KEYS:
            out.pop(key)
        return out

"""What the classifier reads from the shards: loaders, counts, patient weights, slice splits."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from glioma.constants import CLASSES, UNLABELLED_SPLIT
from glioma.dataset.loader import make_loader, shard_files, split_keys
from glioma.dataset.splits import SLICE_SPLIT, read_splits, slice_split
from glioma.model import checkpoint
from glioma.model.distributed import SINGLE, Ranks, per_rank_batch
from glioma.model.epoch import class_weights
from glioma.model.identity import plain
from glioma.model.settings import TrainSettings

log = logging.getLogger(__name__)

#: Split given to a patient found in the shards but not in the split manifest.
UNLISTED_SPLIT = "excluded"


def is_slice_level(splits: pd.DataFrame) -> bool:
    """True when the manifest follows the study's leaky slice-level protocol."""
    return bool((splits["split"] == SLICE_SPLIT).any())


def split_loader(
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    split: str,
    *,
    config: Mapping[str, Any],
    shuffle: bool,
    balance: bool = False,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> Any:
    """A DataLoader over one split's labelled slices, configured from the workflow config.

    With ``world_size`` > 1 it reads rank ``rank``'s share of each epoch, in batches of
    ``model.batch_size / world_size`` (rounded up), so that the processes together make one batch.
    """
    model = config["model"]
    return make_loader(
        shard_dirs,
        splits,
        split,
        batch_size=per_rank_batch(int(model["batch_size"]), world_size),
        shuffle=shuffle,
        seed=int(config["seed"]),
        balance=balance,
        num_workers=int(model["num_workers"]),
        labelled_only=True,
        ratios=config["split"]["ratios"],
        split_seed=int(config["seed"]),
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )


def slice_size(shard_dirs: Sequence[str | Path]) -> tuple[int, int]:
    """Height and width of the slices, from the first shard's first row group."""
    files = shard_files(shard_dirs)
    if not files:
        raise ValueError(f"no shard part file in {[str(d) for d in shard_dirs]}")
    first = pq.ParquetFile(files[0]).read_row_group(0, columns=["height", "width"])
    return int(first.column("height")[0].as_py()), int(first.column("width")[0].as_py())


def labelled_slice_counts(
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    split: str,
    *,
    config: Mapping[str, Any],
) -> pd.DataFrame:
    """Count one split's labelled slices per patient, reading only the small columns.

    Returns:
        One row per patient: ``cohort``, ``patient``, ``label`` (class index), ``slices``.
    """
    keys = split_keys(
        splits, split, ratios=config["split"]["ratios"], split_seed=int(config["seed"])
    )
    frames = []
    for path in shard_files(shard_dirs):
        table = pq.read_table(path, columns=["patient", "cohort", "slice_index", "label"])
        frame = table.to_pandas()
        frame = frame[frame["label"] >= 0]
        if callable(keys):
            rows = zip(frame["cohort"], frame["patient"], frame["slice_index"], strict=True)
            keep = np.fromiter((keys(c, p, int(i)) for c, p, i in rows), bool, len(frame))
        elif keys is not None:
            pairs = zip(frame["cohort"], frame["patient"], strict=True)
            keep = np.fromiter(((c, p) in keys for c, p in pairs), bool, len(frame))
        else:
            keep = np.ones(len(frame), bool)
        frames.append(frame.loc[keep, ["cohort", "patient", "label"]])
    if not frames:
        return pd.DataFrame({"cohort": [], "patient": [], "label": [], "slices": []})
    counts = pd.concat(frames).groupby(["cohort", "patient"], sort=True)
    out = counts["label"].first().to_frame()
    out["slices"] = counts.size()
    return out.reset_index().astype({"label": np.int64, "slices": np.int64})


def class_counts(per_patient: pd.DataFrame, *, by: str = "slices") -> np.ndarray:
    """Labelled slices (``by="slices"``) or patients (``by="patients"``) per class."""
    weights = per_patient["slices"] if by == "slices" else np.ones(len(per_patient))
    counts = np.bincount(per_patient["label"], weights=weights, minlength=len(CLASSES))
    return counts[: len(CLASSES)].astype(np.int64)


def patient_weights(per_patient: pd.DataFrame) -> dict[str, float]:
    """Slice weights giving each patient the same total weight, whatever its slice count.

    A patient with ``n`` slices gets ``mean_n / n`` per slice, so the weights average 1 over
    slices and every patient's slices add up to the mean slice count. Thin-slice scans (80
    tumour slices) then no longer outweigh thick-slice ones (10) eight-fold.

    Returns:
        ``"cohort/patient"`` -> weight of each of its slices.
    """
    mean = float(per_patient["slices"].mean())
    return {
        f"{c}/{p}": mean / int(n)
        for c, p, n in zip(
            per_patient["cohort"], per_patient["patient"], per_patient["slices"], strict=True
        )
    }


def with_weights(batches: Iterable[dict], weights: Mapping[str, float]) -> Iterator[dict]:
    """Add a ``weight`` tensor to each batch from its slices' patients (see patient_weights)."""
    for batch in batches:
        keys = zip(batch["cohort"], batch["patient"], strict=True)
        yield {**batch, "weight": torch.tensor([weights[f"{c}/{p}"] for c, p in keys])}


def slice_splits(
    splits: pd.DataFrame,
    cohort: str,
    patient: str,
    slice_index: np.ndarray,
    *,
    ratios: Mapping[str, float],
    seed: int,
) -> tuple[str, list[str]]:
    """Return a patient's class and the split of each of its slices.

    Under the slice-level protocol each slice's split is drawn exactly as the loader draws it;
    otherwise every slice takes the patient's split. A patient absent from the manifest (e.g.
    excluded from training) is predicted but marked ``excluded``.
    """
    row = splits[(splits["cohort"] == cohort) & (splits["patient"] == patient)]
    if row.empty:
        return "", [UNLISTED_SPLIT] * len(slice_index)
    class_name, split = str(row["class"].iloc[0]), str(row["split"].iloc[0])
    if split == SLICE_SPLIT and class_name:
        return class_name, [
            slice_split(seed, cohort, patient, int(i), ratios) for i in slice_index.tolist()
        ]
    return class_name, [split if class_name else UNLABELLED_SPLIT] * len(slice_index)


@dataclass
class TrainingData:
    """What training reads: this rank's train loader, the val loader, counts and weights.

    Build it with :meth:`open`; the training loop asks it for each epoch's batches
    (:meth:`train_batches`), the validation batches (``val``), the loss's class weights and
    the number of steps per epoch.
    """

    train: DataLoader
    val: DataLoader | list
    per_patient: pd.DataFrame  # train split: cohort, patient, label, slices
    settings: TrainSettings
    slice_size: tuple[int, int]
    shard_dirs: list[Path]
    splits_path: Path
    weights: dict[str, float] | None = None

    @classmethod
    def open(
        cls,
        shard_dirs: Sequence[str | Path],
        splits_path: Path,
        config: Mapping[str, Any],
        settings: TrainSettings,
        ranks: Ranks = SINGLE,
    ) -> TrainingData:
        """Count the train split's slices and open the loaders of this rank.

        Raises:
            ValueError: the train split holds no labelled slice, or fewer than the processes.
        """
        splits = read_splits(splits_path)
        if is_slice_level(splits):
            log.warning("training under the slice-level split: validation scores are leaky")
        per_patient = labelled_slice_counts(shard_dirs, splits, "train", config=config)
        total = int(per_patient["slices"].sum())
        if total == 0:
            raise ValueError(f"{splits_path}: the train split holds no labelled slice")
        if total < ranks.world_size:
            raise ValueError(
                f"{splits_path}: the train split holds {total} labelled slices, fewer than "
                f"the {ranks.world_size} training processes"
            )
        for by in ("patients", "slices"):
            counts = class_counts(per_patient, by=by).tolist()
            log.info("train %s per class: %s", by, dict(zip(CLASSES, counts, strict=True)))
        loader = partial(split_loader, shard_dirs, splits, config=config)
        # Whole batches only, unless a rank's share is less than one batch.
        drop_last = total // ranks.world_size >= per_rank_batch(
            settings.batch_size, ranks.world_size
        ) * max(1, settings.num_workers)
        train = loader(
            "train",
            shuffle=True,
            balance=settings.balance == "sampler",
            rank=ranks.rank,
            world_size=ranks.world_size,
            drop_last=drop_last,
        )
        val = loader("val", shuffle=False) if ranks.main else []
        equal = settings.patient_weighting == "equal"
        return cls(
            train=train,
            val=val,
            per_patient=per_patient,
            settings=settings,
            slice_size=slice_size(shard_dirs),
            shard_dirs=[Path(d) for d in shard_dirs],
            splits_path=Path(splits_path),
            weights=patient_weights(per_patient) if equal else None,
        )

    def train_batches(self, epoch: int) -> Iterable[dict]:
        """The train batches of one epoch (1-based; the order depends on seed and epoch)."""
        self.train.dataset.set_epoch(epoch)
        return self.train if self.weights is None else with_weights(self.train, self.weights)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimiser steps in one epoch (``batch_size`` is that of all processes together)."""
        slices = int(self.per_patient["slices"].sum())
        whole = slices // batch_size if self.train.drop_last else math.ceil(slices / batch_size)
        return max(1, whole)

    def class_weights(self) -> torch.Tensor | None:
        """The loss's class weights under ``balance: loss`` (else None).

        Inverse class frequency, counted in patients when patients weigh equally and in
        slices otherwise: the frequency of what the loss averages over.
        """
        if self.settings.balance != "loss":
            return None
        by = "patients" if self.weights is not None else "slices"
        return class_weights(class_counts(self.per_patient, by=by))

    def run_hash(self, settings: TrainSettings, config: Mapping[str, Any]) -> str:
        """Identity of a run: training settings, split, split manifest and shard files.

        A checkpoint is resumed only under the same identity.
        """
        identity = {
            "model": settings.identity(),
            "split": plain(config["split"]),
            "splits_sha256": checkpoint.file_sha256(self.splits_path),
        }
        inputs: list[str | Path] = list(self.shard_dirs)
        if settings.pretrained_weights:
            inputs.append(settings.pretrained_weights)
        return checkpoint.config_hash(identity, inputs)

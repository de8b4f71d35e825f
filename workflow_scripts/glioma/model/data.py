"""Bridges from the shard loader (``glioma.dataset``) to the classifier: loaders, counts, splits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from glioma.constants import CLASSES, UNLABELLED_SPLIT
from glioma.dataset.loader import make_loader, shard_files, split_keys
from glioma.dataset.splits import SLICE_SPLIT, slice_split
from glioma.model.distributed import per_rank_batch

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
    )


def slice_size(shard_dirs: Sequence[str | Path]) -> tuple[int, int]:
    """Height and width of the slices, from the first shard's first row group."""
    files = shard_files(shard_dirs)
    if not files:
        raise ValueError(f"no shard part file in {[str(d) for d in shard_dirs]}")
    first = pq.ParquetFile(files[0]).read_row_group(0, columns=["height", "width"])
    return int(first.column("height")[0].as_py()), int(first.column("width")[0].as_py())


def class_counts(
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    split: str,
    *,
    config: Mapping[str, Any],
) -> np.ndarray:
    """Count one split's labelled slices per class, reading only the small columns."""
    keys = split_keys(
        splits, split, ratios=config["split"]["ratios"], split_seed=int(config["seed"])
    )
    counts = np.zeros(len(CLASSES), dtype=np.int64)
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
        labels = frame["label"].to_numpy()[keep].astype(np.int64)
        counts += np.bincount(labels, minlength=len(CLASSES))[: len(CLASSES)]
    return counts


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

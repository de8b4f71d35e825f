"""Streaming torch dataset over the Parquet slice shards.

The unit of I/O is a row group (~50 slices, see :mod:`glioma.dataset.rowgroups`). Per epoch the
(file, row group) list is shuffled with ``(seed, epoch)``. Under data-parallel training it is then
cut into one contiguous share of the filtered slices per process (rank), equal to within one slice
(:func:`partition`; a row group on a cut is read by both ranks, each keeping its part). The list
(or the rank's share) is dealt round-robin to DataLoader workers, so every slice is read by
exactly one worker; each worker then reads windows of about ``buffer_size`` slices (whole row
groups) and yields each window in a random order. Slices are views into the window's row groups,
so nothing is copied before the batch is made, and memory is about two windows per worker,
whatever the number of shards. Do not use ``persistent_workers``: workers copy the dataset when
they start, and ``set_epoch`` must reach them.

Class balance (``balance=True``) is described in :mod:`glioma.dataset.sampling`: per-class
reservoirs, draws with replacement, an epoch as long as the unbalanced one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from glioma.constants import CLASSES, UNLABELLED_SPLIT
from glioma.dataset.keys import SplitKeys, manifest_labels, split_keys
from glioma.dataset.rowgroups import (
    META_COLUMNS,
    Rows,
    iter_patient_batches,
    kept_labels,
    normalise_keys,
    read_rows,
    shard_files,
)
from glioma.dataset.sampling import balanced, slices, windowed
from glioma.dataset.writer import IMAGE_COLUMN
from glioma.errors import InputError

__all__ = [
    "SliceDataset",
    "SplitKeys",
    "collate_slices",
    "iter_patient_batches",
    "make_loader",
    "partition",
    "shard_files",
    "split_keys",
]

log = logging.getLogger(__name__)

# A unit of reading: (file index, row group), optionally with (start, stop) over its filtered rows.
Unit = tuple[int, ...]


def partition(counts: Sequence[int], rank: int, world_size: int) -> list[tuple[int, int, int]]:
    """Return one rank's contiguous share of a sequence of units holding ``counts`` items each.

    The items of all units, laid end to end, are cut into ``world_size`` runs whose lengths differ
    by at most one; rank ``r`` gets run ``r``. Shares are disjoint and together hold every item.

    Returns:
        ``(unit position, start, stop)`` for each unit the share touches, items ``start:stop``
        of that unit (in its own numbering), in the units' order.

    Raises:
        ValueError: ``rank`` is not in ``0 .. world_size - 1``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}; got {rank}")
    total = int(sum(counts))
    low, high = total * rank // world_size, total * (rank + 1) // world_size
    share, offset = [], 0
    for position, count in enumerate(counts):
        start, stop = max(low, offset), min(high, offset + int(count))
        if start < stop:
            share.append((position, start - offset, stop - offset))
        offset += int(count)
    return share


def _cut(rows: Rows, start: int, stop: int) -> Rows:
    """Return rows ``start:stop`` of a row group's filtered rows (views, no copy)."""
    return Rows(
        rows.patients[start:stop],
        rows.cohorts[start:stop],
        rows.slice_index[start:stop],
        rows.labels[start:stop],
        rows.images[start:stop],
    )


class SliceDataset(IterableDataset):
    """Stream slices from Parquet shards as dicts of image, label, patient, cohort, slice_index.

    Args:
        files: shard part files (see :func:`shard_files`).
        keys: which rows to keep: a set of (cohort, patient), a callable
            ``(cohort, patient, slice_index) -> bool`` (picklable when workers use spawn), or None.
        shuffle: shuffle the row-group order per epoch and mix slices within windows of
            ``buffer_size`` slices.
        seed: seed of every random choice; with :meth:`set_epoch` it fixes the order.
        balance: class-balanced draws (see the module docstring); needs ``labelled_only``.
        buffer_size: slices held for shuffling or balancing, per worker.
        labelled_only: drop unlabelled slices (label -1).
        labels: (cohort, patient) -> class index of the split manifest; shard labels are checked
            against it, so that shards built before a relabelling fail loudly.
        image_dtype: dtype of the yielded images; ``torch.float16`` skips the per-slice
            conversion (then the images may view a row group held by the window, and
            :func:`collate_slices` converts whole batches).
        rank, world_size: this process's share of each epoch under data-parallel training
            (see :func:`partition`); ``world_size=1`` reads everything.
    """

    def __init__(
        self,
        files: Sequence[Path],
        keys: Callable | set | None,
        *,
        shuffle: bool = False,
        seed: int = 0,
        balance: bool = False,
        buffer_size: int = 512,
        labelled_only: bool = True,
        labels: Mapping[tuple[str, str], int] | None = None,
        image_dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}; got {rank}")
        if balance and not labelled_only:
            raise ValueError(
                "balance=True needs labelled_only=True: unlabelled slices have no class"
            )
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1; got {buffer_size}")
        self.files = [Path(f) for f in files]
        self.keys = normalise_keys(keys)
        self.shuffle, self.seed, self.balance = shuffle, seed, balance
        self.buffer_size, self.labelled_only = buffer_size, labelled_only
        self.labels = None if labels is None else dict(labels)
        self.image_dtype = image_dtype
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        self._groups = [self._row_groups(path) for path in self.files]
        # Filtered rows per row group, needed to cut equal shares (small columns only).
        self._kept = self._kept_counts() if world_size > 1 else None

    @staticmethod
    def _row_groups(path: Path) -> int:
        """Return the number of row groups of a shard after checking its columns."""
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot be read as a Parquet shard ({err})", path=path) from err
        missing = [c for c in [*META_COLUMNS, IMAGE_COLUMN] if c not in parquet.schema_arrow.names]
        if missing:
            raise InputError(f"shard lacks columns {missing}", path=path)
        return parquet.metadata.num_row_groups

    def _kept_counts(self) -> list[list[int]]:
        """Return, per file and row group, how many rows pass the filter."""
        counts = []
        for path, groups in zip(self.files, self._groups, strict=True):
            parquet = pq.ParquetFile(path)
            counts.append(
                [len(kept_labels(parquet, g, self.keys, self.labelled_only)) for g in range(groups)]
            )
        return counts

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; with ``shuffle`` it changes the order, deterministically."""
        self.epoch = int(epoch)

    def units(self) -> list[tuple[int, int]]:
        """Return this epoch's (file index, row group) order, before the rank and worker split."""
        units = [(f, g) for f, groups in enumerate(self._groups) for g in range(groups)]
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(units))
            units = [units[i] for i in order]
        return units

    def rank_units(self) -> list[Unit]:
        """Return this rank's units of the epoch: all of :meth:`units`, or its cut share."""
        units = self.units()
        if self._kept is None:
            return units
        counts = [self._kept[f][g] for f, g in units]
        return [(*units[i], a, b) for i, a, b in partition(counts, self.rank, self.world_size)]

    def _rows(self, units: Sequence[Unit]) -> Iterator[Rows]:
        """Yield the filtered rows of each unit, one row group (or part of one) at a time."""
        for file_index, group, *cut in units:
            path = self.files[file_index]
            parquet = pq.ParquetFile(path)
            rows = read_rows(
                parquet, group, self.keys, self.labelled_only, expected=self.labels, path=path
            )
            if rows is not None:
                yield _cut(rows, *cut) if cut else rows

    def _classes(self, units: Sequence[Unit]) -> list[int]:
        """Return the labels the filtered rows of ``units`` hold (small columns only)."""
        found: set[int] = set()
        for file_index, group, *_ in units:
            parquet = pq.ParquetFile(self.files[file_index])
            found.update(kept_labels(parquet, group, self.keys, self.labelled_only).tolist())
            if len(found) == len(CLASSES):
                break
        return sorted(found)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        units = self.rank_units()[worker::workers]
        # One stream per (rank, worker); in one process this is the worker's index.
        rng = np.random.default_rng([self.seed, self.epoch, self.rank * workers + worker])
        rows = self._rows(units)
        if self.balance:
            # Reservoir slices are copied out so that they do not pin whole row groups.
            items = balanced(slices(rows, copy=True), self.buffer_size, rng, self._classes(units))
        elif self.shuffle:
            items = windowed(rows, self.buffer_size, rng)
        else:
            items = slices(rows, copy=False)
        for image, label, patient, cohort, slice_index in items:
            yield {
                "image": image.to(self.image_dtype),
                "label": torch.scalar_tensor(label, dtype=torch.int64),
                "patient": patient,
                "cohort": cohort,
                "slice_index": slice_index,
            }


def collate_slices(samples: Sequence[dict]) -> dict:
    """Collate samples into a batch, converting images into one float32 tensor in one pass."""
    first = samples[0]["image"]
    images = torch.empty((len(samples), *first.shape), dtype=torch.float32)
    for i, sample in enumerate(samples):
        images[i].copy_(sample["image"])
    return {
        "image": images,
        "label": torch.stack([sample["label"] for sample in samples]),
        "patient": [sample["patient"] for sample in samples],
        "cohort": [sample["cohort"] for sample in samples],
        "slice_index": torch.tensor([sample["slice_index"] for sample in samples]),
    }


def make_loader(
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    split: str,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    balance: bool = False,
    num_workers: int = 0,
    labelled_only: bool = True,
    ratios: Mapping[str, float] | None = None,
    split_seed: int | None = None,
    buffer_size: int = 512,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> DataLoader:
    """Return a DataLoader over one split of the shards.

    Batches (dicts): image (B, 4, H, W) float32, label (B,) int64, patient list[str], cohort
    list[str], slice_index (B,) int64. Call ``loader.dataset.set_epoch(epoch)`` every epoch.

    Args:
        shard_dirs: ``results/shards/{cohort}`` folders.
        splits: the manifest from :func:`glioma.dataset.splits.read_splits`.
        split: train, val, test, unlabelled (forces ``labelled_only=False``) or all.
        batch_size, shuffle, seed, balance, num_workers, labelled_only, buffer_size: see
            :class:`SliceDataset`. Shard labels are checked against the manifest's classes.
        ratios, split_seed: ``split.ratios`` and the split seed; required only when the manifest is
            slice-level (split column ``slice``).
        rank, world_size: read only this process's share of each epoch (data-parallel training);
            ``batch_size`` is then per process.
        drop_last: drop each worker's last batch when it is incomplete (for training: a batch
            of one slice cannot be normalised by BatchNorm, and the order changes every epoch).
    """
    keys = split_keys(splits, split, ratios=ratios, split_seed=split_seed)
    dataset = SliceDataset(
        shard_files(shard_dirs),
        keys,
        shuffle=shuffle,
        seed=seed,
        balance=balance,
        buffer_size=buffer_size,
        labelled_only=labelled_only and split != UNLABELLED_SPLIT,
        labels=manifest_labels(splits),
        image_dtype=torch.float16,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_slices,
        persistent_workers=False,
        drop_last=drop_last,
    )

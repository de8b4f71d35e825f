"""Reading shard row groups: file listing, row filtering, zero-copy images, patient batches.

For a row group the small columns are read first and the image column only when a row passes the
filter, so reading one split of many shards costs little I/O.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from glioma.constants import SEQUENCES
from glioma.dataset.writer import IMAGE_COLUMN, IMAGE_DTYPE, PART_PATTERN
from glioma.errors import InputError

KeyFilter = Callable[[str, str, int], bool] | frozenset[tuple[str, str]] | None
META_COLUMNS = ["patient", "cohort", "slice_index", "label", "height", "width"]


def shard_files(shard_dirs: Sequence[str | Path]) -> list[Path]:
    """Return the ``part-*.parquet`` files of the shard folders, sorted.

    Raises:
        InputError: a folder does not exist.
    """
    files: list[Path] = []
    for folder in map(Path, shard_dirs):
        if not folder.is_dir():
            raise InputError("shard folder does not exist", path=folder)
        files.extend(folder.glob(PART_PATTERN))
    return sorted(files)


def normalise_keys(keys: Callable | Iterable[tuple[str, str]] | None) -> KeyFilter:
    """Return ``keys`` as a callable, a frozenset of (cohort, patient), or None (every row)."""
    if keys is None or callable(keys):
        return keys
    return frozenset((str(cohort), str(patient)) for cohort, patient in keys)


@dataclass
class Rows:
    """The rows of one row group that passed the filter; images may view Arrow's buffer."""

    patients: list[str]
    cohorts: list[str]
    slice_index: np.ndarray
    labels: np.ndarray
    images: torch.Tensor  # float16 (n, 4, H, W)


def _keep(
    meta: pa.Table, keys: KeyFilter, labelled_only: bool
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Return patients, cohorts, slice indices, labels and the keep mask of a row group."""
    patients = meta.column("patient").to_pylist()
    cohorts = meta.column("cohort").to_pylist()
    slice_index = meta.column("slice_index").to_numpy()
    labels = meta.column("label").to_numpy()
    keep = labels >= 0 if labelled_only else np.ones(len(labels), bool)
    if callable(keys):
        keep &= np.fromiter(map(keys, cohorts, patients, slice_index.tolist()), bool, len(keep))
    elif keys is not None:
        keep &= np.fromiter(
            ((c, p) in keys for c, p in zip(cohorts, patients, strict=True)), bool, len(keep)
        )
    return patients, cohorts, slice_index, labels, keep


def _images(parquet: pq.ParquetFile, group: int, meta: pa.Table) -> torch.Tensor:
    """Return a row group's images as a float16 (n, 4, H, W) tensor viewing Arrow's buffer."""
    chunks = parquet.read_row_group(group, columns=[IMAGE_COLUMN]).column(IMAGE_COLUMN)
    # combine_chunks() copies even a single chunk: a full extra pass over the images.
    column = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()
    height, width = int(meta.column("height")[0].as_py()), int(meta.column("width")[0].as_py())
    byte_width = column.type.byte_width
    array = np.frombuffer(
        column.buffers()[1],
        dtype=IMAGE_DTYPE,
        count=len(column) * byte_width // IMAGE_DTYPE.itemsize,
        offset=column.offset * byte_width,
    ).reshape(len(column), len(SEQUENCES), height, width)
    with warnings.catch_warnings():
        # Arrow's buffer is read-only; the tensor is only ever read (copied by .to(), .clone(),
        # copy_() into a batch), never written.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def check_labels(
    cohorts: list[str],
    patients: list[str],
    labels: np.ndarray,
    expected: Mapping[tuple[str, str], int],
    path: Path | None,
) -> None:
    """Raise when a shard's label differs from the split manifest's (stale shards)."""
    for cohort, patient, label in set(zip(cohorts, patients, labels.tolist(), strict=True)):
        want = expected.get((cohort, patient))
        if want is not None and want != label:
            raise InputError(
                f"shard label {label} differs from the split manifest's {want} (class changed "
                "since the shards were built?): rebuild the shards of cohort "
                f"{cohort!r}",
                patient=patient,
                column="label",
                path=path,
            )


def kept_labels(
    parquet: pq.ParquetFile, group: int, keys: KeyFilter, labelled_only: bool
) -> np.ndarray:
    """Return the labels of a row group's rows that pass the filter (small columns only)."""
    meta = parquet.read_row_group(group, columns=META_COLUMNS)
    *_, labels, keep = _keep(meta, keys, labelled_only)
    return labels[keep]


def read_rows(
    parquet: pq.ParquetFile,
    group: int,
    keys: KeyFilter,
    labelled_only: bool,
    *,
    expected: Mapping[tuple[str, str], int] | None = None,
    path: Path | None = None,
) -> Rows | None:
    """Read the rows of one row group that pass ``keys`` and ``labelled_only`` (None if none do).

    Args:
        parquet: an open shard.
        group: the row group.
        keys: row filter from :func:`normalise_keys`.
        labelled_only: drop rows with label -1.
        expected: (cohort, patient) -> label of the split manifest; every row's label is checked
            against it (patients absent from it are not checked).
        path: the shard's path, for error messages.

    Raises:
        InputError: a label differs from ``expected``.
    """
    meta = parquet.read_row_group(group, columns=META_COLUMNS)
    patients, cohorts, slice_index, labels, keep = _keep(meta, keys, labelled_only)
    if expected is not None:
        check_labels(cohorts, patients, labels, expected, path)
    if not keep.any():
        return None
    images = _images(parquet, group, meta)
    if keep.all():
        return Rows(patients, cohorts, slice_index, labels, images)
    rows = np.flatnonzero(keep)
    return Rows(
        [patients[i] for i in rows],
        [cohorts[i] for i in rows],
        slice_index[rows],
        labels[rows],
        images[torch.from_numpy(rows)],
    )


def iter_patient_batches(
    shard_dirs: Sequence[str | Path],
    keys: Callable | set | None = None,
) -> Iterator[tuple[str, str, torch.Tensor, np.ndarray]]:
    """Yield (cohort, patient, images (S, 4, H, W) float32, slice_index (S,) int64) per patient.

    Shards are read in order; memory holds one patient's slices and one row group. Labelled and
    unlabelled patients are both yielded.

    Raises:
        InputError: a patient's rows are not contiguous (shards not written by ``build_shards``).
    """
    keys = normalise_keys(keys)
    current: tuple[str, str] | None = None
    images: list[torch.Tensor] = []
    indices: list[np.ndarray] = []
    done: set[tuple[str, str]] = set()
    for path in shard_files(shard_dirs):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.metadata.num_row_groups):
            rows = read_rows(parquet, group, keys, labelled_only=False, path=path)
            if rows is None:
                continue
            for start, stop in _runs(rows):
                key = (rows.cohorts[start], rows.patients[start])
                if key != current:
                    if current is not None:
                        yield _patient_batch(current, images, indices)
                        done.add(current)
                    if key in done:
                        raise InputError(
                            "slices are not contiguous in the shards", patient=key[1], path=path
                        )
                    current, images, indices = key, [], []
                images.append(rows.images[start:stop])
                indices.append(rows.slice_index[start:stop])
    if current is not None:
        yield _patient_batch(current, images, indices)


def _runs(rows: Rows) -> Iterator[tuple[int, int]]:
    """Yield (start, stop) of the runs of consecutive rows of one (cohort, patient)."""
    start = 0
    for i in range(1, len(rows.patients) + 1):
        if i == len(rows.patients) or (rows.cohorts[i], rows.patients[i]) != (
            rows.cohorts[start],
            rows.patients[start],
        ):
            yield start, i
            start = i


def _patient_batch(
    key: tuple[str, str], images: list[torch.Tensor], indices: list[np.ndarray]
) -> tuple[str, str, torch.Tensor, np.ndarray]:
    """Stack one patient's slices as float32."""
    stacked = torch.cat([chunk.float() for chunk in images])
    return key[0], key[1], stacked, np.concatenate(indices).astype(np.int64)

"""Parquet shard layout and an atomic, row-group-exact writer for it.

Layout (``docs/architecture.md``): one row per slice, the 4xHxW float16 image as
``fixed_size_binary``, row groups of ``ROWS_PER_GROUP`` slices so that a loader can shuffle at
row-group granularity with bounded memory, and light compression (measured in
``benchmarks/dataset.md``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from glioma.constants import SEQUENCES
from glioma.io import remove_stale_temporaries

PART_PATTERN = "part-*.parquet"
ROWS_PER_GROUP = 50
ROWS_PER_FILE = 1000
IMAGE_COLUMN = "image"
#: Little-endian float16, whatever the machine: the bytes in a shard mean the same everywhere.
IMAGE_DTYPE = np.dtype("<f2")


def shard_schema(height: int, width: int) -> pa.Schema:
    """Return the Arrow schema of a shard whose slices are ``height`` x ``width``."""
    return pa.schema(
        [
            ("patient", pa.string()),
            ("cohort", pa.string()),
            ("slice_index", pa.int32()),
            ("label", pa.int8()),
            ("class", pa.string()),
            (IMAGE_COLUMN, pa.binary(len(SEQUENCES) * height * width * IMAGE_DTYPE.itemsize)),
            ("height", pa.int16()),
            ("width", pa.int16()),
            ("roi_area", pa.float32()),
            ("spacing", pa.list_(pa.float32(), 3)),
            ("preprocess_hash", pa.string()),
        ]
    )


class ShardWriter:
    """Write patient tables into ``part-NNNNN.parquet`` files with fixed-size row groups.

    Rows are buffered until a full row group is ready, so row groups stay at ``rows_per_group``
    even when patients have few slices; a new file starts at the first patient boundary after
    ``rows_per_file`` rows, so no patient spans two files.
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        *,
        rows_per_group: int = ROWS_PER_GROUP,
        rows_per_file: int = ROWS_PER_FILE,
        compression: str = "lz4",
        compression_level: int | None = None,
    ) -> None:
        self.folder, self.schema = folder, schema
        self.rows_per_group, self.rows_per_file = rows_per_group, rows_per_file
        self.compression, self.compression_level = compression, compression_level
        self.files: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._file_rows = 0

    def _open(self) -> pq.ParquetWriter:
        path = self.folder / f"part-{len(self.files):05d}.parquet"
        self.files.append(path)
        small = [name for name in self.schema.names if name != IMAGE_COLUMN]
        return pq.ParquetWriter(
            path,
            self.schema,
            compression=self.compression,
            compression_level=self.compression_level,
            # Dictionaries and min/max statistics of 100 kB image blobs cost time and buy nothing.
            use_dictionary=small,
            write_statistics=small,
        )

    def _flush(self, *, full_groups_only: bool) -> None:
        if not self._pending or self._writer is None:
            return
        table = pa.concat_tables(self._pending)
        rows = table.num_rows
        ready = rows - rows % self.rows_per_group if full_groups_only else rows
        if ready:
            self._writer.write_table(table.slice(0, ready), row_group_size=self.rows_per_group)
        self._pending = [table.slice(ready)] if ready < rows else []

    def add(self, table: pa.Table) -> None:
        """Append one patient's rows."""
        if self._writer is None:
            self._writer = self._open()
        self._pending.append(table)
        self._file_rows += table.num_rows
        self._flush(full_groups_only=True)
        if self._file_rows >= self.rows_per_file:
            self._close_file()

    def _close_file(self) -> None:
        self._flush(full_groups_only=False)
        if self._writer is not None:
            self._writer.close()
        self._writer, self._file_rows = None, 0

    def close(self) -> list[Path]:
        """Finish the last file (an empty one if nothing was added) and return every file."""
        if self._writer is None and not self.files:
            self._writer = self._open()
        self._close_file()
        return self.files


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that is renamed onto ``path`` only if the block succeeds.

    A failure (or a kill) leaves no folder under ``path``, or the previous complete one; a stale
    folder there is replaced. The temporaries of a killed write are removed by the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, [".tmp", ".old"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            # rename() cannot replace a non-empty folder: move the old one aside, then drop it.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

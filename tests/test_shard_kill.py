"""SIGKILL of the shard writer mid-write leaves no corrupt shard, and a rerun builds a whole one.

The writer runs in a subprocess on a cohort whose last crop file (in patient order) is a named
pipe: reading it blocks, so the writer is caught mid-write for certain, with earlier patients'
part files already in its temporary folder, however fast the machine is.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from glioma.dataset.shards import build_shards

SIZE = 16
PATIENTS = [f"P{i:03d}" for i in range(12)]
STALLED = "P999"  # sorts last: the writer reaches it after writing every other patient
SLICES = 9

WRITER = f"""
import json, sys
from glioma.dataset.shards import build_shards
crops, sheet, out = json.loads(sys.argv[1])
build_shards(crops, sheet, out, cohort="A", config_hash="h", image_size={SIZE},
             rows_per_group=4, rows_per_file=20)
"""


def _write_crop(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(
        path,
        images=rng.standard_normal((SLICES, 4, SIZE, SIZE)).astype(np.float16),
        slice_index=np.arange(SLICES, dtype=np.int32),
        roi_area=np.full(SLICES, 10.0, np.float32),
        spacing=np.array([1.0, 1.0, 4.0], np.float32),
    )


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[list[Path], Path]:
    """Crop files of cohort A; the last one (``STALLED``) is a named pipe nobody writes to."""
    crops = tmp_path / "crops"
    crops.mkdir()
    paths = []
    for seed, patient in enumerate(PATIENTS):
        paths.append(crops / f"{patient}.npz")
        _write_crop(paths[-1], seed)
    os.mkfifo(crops / f"{STALLED}.npz")
    paths.append(crops / f"{STALLED}.npz")
    sheet = tmp_path / "samples.tsv"
    rows = [(p, "A", "IDHwt") for p in [*PATIENTS, STALLED]]
    pd.DataFrame(rows, columns=["patient", "cohort", "class"]).to_csv(sheet, sep="\t", index=False)
    return paths, sheet


def _kill_mid_write(crops: list[Path], sheet: Path, out: Path) -> None:
    """Start the writer, wait for a part file in its temporary folder, SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts"), "OMP_NUM_THREADS": "1"}
    args = json.dumps([[str(p) for p in crops], str(sheet), str(out)])
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, args], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    parts: list[Path] = []
    while not parts and proc.poll() is None and time.monotonic() < deadline:
        parts = list(out.parent.glob(f".{out.name}.*.tmp/part-*.parquet"))
        time.sleep(0.02)
    assert proc.poll() is None, f"writer ended before it was killed: {proc.communicate()[1]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert parts, "the writer never wrote a part file"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _unstall(crops: list[Path]) -> None:
    """Replace the named pipe with a real crop file."""
    crops[-1].unlink()
    _write_crop(crops[-1], seed=99)


def _assert_complete(out: Path, patients: list[str]) -> None:
    table = pq.read_table(out)  # every part file whole: a torn one has no footer and fails here
    assert table.num_rows == SLICES * len(patients)
    assert sorted(set(table.column("patient").to_pylist())) == sorted(patients)
    # Nothing of the killed write is left beside the shard folder.
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_killed_first_write_leaves_no_shard_and_rerun_completes(
    tmp_path: Path, cohort: tuple[list[Path], Path]
) -> None:
    crops, sheet = cohort
    out = tmp_path / "shards" / "A"
    _kill_mid_write(crops, sheet, out)
    assert not out.exists()
    assert list(out.parent.glob(f".{out.name}.*.tmp")), "expected the killed write's leftovers"

    _unstall(crops)
    build_shards(crops, sheet, out, cohort="A", config_hash="h", image_size=SIZE, rows_per_file=20)
    _assert_complete(out, [*PATIENTS, STALLED])


def test_killed_rewrite_keeps_previous_shard_and_rerun_replaces_it(
    tmp_path: Path, cohort: tuple[list[Path], Path]
) -> None:
    crops, sheet = cohort
    out = tmp_path / "shards" / "A"
    build_shards(crops[:-1], sheet, out, cohort="A", config_hash="h", image_size=SIZE)
    previous = _digests(out)

    _kill_mid_write(crops, sheet, out)
    assert _digests(out) == previous
    assert pq.read_table(out).num_rows == SLICES * len(PATIENTS)

    _unstall(crops)
    build_shards(crops, sheet, out, cohort="A", config_hash="h", image_size=SIZE, rows_per_file=20)
    _assert_complete(out, [*PATIENTS, STALLED])
    assert _digests(out) != previous

"""Loader throughput: slices/s from the Parquet shards against a raw read of the same bytes.

Usage: PYTHONPATH=workflow_scripts python benchmarks/bench_loader.py [--slices 1000] [--size 224]

Writes synthetic brain-like 4xHxW float16 slices (smooth tissue inside an ellipse, zero outside,
so they compress like real skull-stripped slices) as shards with each codec and as one flat
binary file per shard, then times, on one core and from the page cache (best of ``--repeats``):

- raw bytes: ``readinto`` of the flat files in row-group-sized chunks (no conversion), against
  SliceDataset yielding float16 views (no conversion either);
- raw + tensors / batches: the same, plus the float16 -> float32 tensors the loader also makes
  (one per slice as SliceDataset yields, or batches of 64 as make_loader returns);
- SliceDataset without and with shuffling, and make_loader batches of 64.

Goals (issue 4): >= 50% of raw and >= 1,000 slices/s. Results go to benchmarks/dataset.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy.ndimage import gaussian_filter

from glioma.dataset.loader import SliceDataset, make_loader, shard_files
from glioma.dataset.shards import Crop, crop_table
from glioma.dataset.writer import ShardWriter, shard_schema

SHARDS = 4
ROWS_PER_GROUP = 50
BATCH = 64


def brain_slices(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Return ``count`` float16 (4, size, size) slices: smooth z-scored tissue in an ellipse."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    inside = (xx / 0.42) ** 2 + (yy / 0.48) ** 2 < 1
    base = np.stack([gaussian_filter(rng.standard_normal((size, size)), 3) for _ in range(8)])
    out = np.empty((count, 4, size, size), np.float16)
    for i in range(count):
        mix = base[rng.integers(8, size=4)] * 4 + rng.standard_normal((4, size, size)) * 0.3
        out[i] = np.where(inside, mix, 0)
    return out


def write_data(root: Path, slices: np.ndarray, codecs: list[str]) -> dict[str, list[Path]]:
    """Write the slices as shards per codec and as flat binary files; return the folders."""
    per_shard = len(slices) // SHARDS
    folders: dict[str, list[Path]] = {codec: [] for codec in [*codecs, "raw"]}
    for s in range(SHARDS):
        chunk = slices[s * per_shard : (s + 1) * per_shard]
        raw = root / "raw" / f"c{s}.bin"
        raw.parent.mkdir(parents=True, exist_ok=True)
        chunk.tofile(raw)
        folders["raw"].append(raw)
        crop = Crop(
            chunk,
            np.arange(len(chunk), dtype=np.int32),
            np.ones(len(chunk), np.float32),
            np.ones(3, np.float32),
        )
        table = crop_table(
            crop, patient=f"p{s}", cohort=f"c{s}", class_name="IDHwt", config_hash="h"
        )
        for codec in codecs:
            folder = root / codec / f"c{s}"
            folder.mkdir(parents=True)
            writer = ShardWriter(
                folder,
                shard_schema(chunk.shape[2], chunk.shape[3]),
                rows_per_group=ROWS_PER_GROUP,
                compression=codec,
                compression_level=1 if codec == "zstd" else None,
            )
            writer.add(table)
            writer.close()
            folders[codec].append(folder)
    return folders


def raw_reader(files: list[Path], size: int, mode: str) -> Callable[[], int]:
    """Return a function that reads the flat files in row-group chunks and counts slices.

    ``mode``: ``bytes`` (read only), ``tensors`` (+ a float32 tensor per slice, as SliceDataset
    yields) or ``batches`` (+ float32 batches of 64 filled in one pass, as make_loader does).
    """
    slice_bytes = 4 * size * size * 2

    def chunks() -> Iterator[torch.Tensor]:
        for path in files:
            with open(path, "rb", buffering=0) as handle:
                while True:
                    buffer = bytearray(ROWS_PER_GROUP * slice_bytes)
                    got = handle.readinto(buffer)
                    if not got:
                        break
                    array = np.frombuffer(buffer, np.float16)[: got // 2]
                    yield torch.from_numpy(array.reshape(-1, 4, size, size))

    def run() -> int:
        count, pending = 0, []
        for chunk in chunks():
            count += len(chunk)
            if mode == "tensors":
                for image in chunk:
                    image.float()
            elif mode == "batches":
                pending.extend(chunk)
                while len(pending) >= BATCH or (pending and count == total):
                    batch, pending = pending[:BATCH], pending[BATCH:]
                    out = torch.empty((len(batch), 4, size, size))
                    for i, image in enumerate(batch):
                        out[i].copy_(image)
        return count

    total = sum(path.stat().st_size for path in files) // slice_bytes
    return run


def rate(run: Callable[[], int]) -> float:
    """Return the slices/s of one run."""
    start = time.perf_counter()
    count = run()
    return count / (time.perf_counter() - start)


def codec_runners(folders: list[Path], codec: str) -> dict[str, Callable[[], int]]:
    """Return the loader paths over one codec's shards, each as a function counting slices."""
    files = shard_files(folders)
    splits = pd.DataFrame(
        {
            "patient": [f"p{s}" for s in range(SHARDS)],
            "cohort": [f"c{s}" for s in range(SHARDS)],
            "class": "IDHwt",
            "split": "train",
        }
    )
    plain = SliceDataset(files, None)
    half = SliceDataset(files, None, image_dtype=torch.float16)
    shuffled = SliceDataset(files, None, shuffle=True)
    loader = make_loader(folders, splits, "train", batch_size=BATCH, shuffle=True, seed=0)
    return {
        f"SliceDataset float16 (no conversion), {codec}": lambda: sum(1 for _ in half),
        f"SliceDataset, {codec}": lambda: sum(1 for _ in plain),
        f"SliceDataset shuffle (buffer 512), {codec}": lambda: sum(1 for _ in shuffled),
        f"make_loader batches of 64, shuffle, {codec}": lambda: sum(
            len(batch["label"]) for batch in loader
        ),
    }


def measure(runners: dict[str, Callable[[], int]], repeats: int) -> dict[str, list[float]]:
    """Return slices/s per runner and round; rounds interleave every runner (shared load)."""
    for run in runners.values():
        run()  # warm-up: page cache, allocator
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            rates[name].append(rate(run))
    return rates


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--codecs", default="zstd,lz4,none")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    warnings.simplefilter("ignore", UserWarning)
    slices = brain_slices(args.slices, args.size)
    slice_bytes, raw_total = slices[0].nbytes, slices.nbytes
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folders = write_data(Path(tmp), slices, args.codecs.split(","))
        del slices
        runners = {
            f"raw bytes + float32 {mode}" if mode != "bytes" else "raw bytes": raw_reader(
                folders["raw"], args.size, mode
            )
            for mode in ("bytes", "tensors", "batches")
        }
        stored = {"raw": 1.0}
        for codec in args.codecs.split(","):
            runners |= codec_runners(folders[codec], codec)
            files = shard_files(folders[codec])
            stored[codec] = sum(f.stat().st_size for f in files) / raw_total
        rates = measure(runners, args.repeats)
    report(rates, stored, args, slice_bytes)


def report(rates: dict[str, list[float]], stored: dict[str, float], args, slice_bytes: int) -> None:
    """Print the markdown table: median slices/s and median per-round ratio to raw bytes."""
    print(f"{args.slices} slices of 4x{args.size}x{args.size} float16 ", end="")
    print(f"({slice_bytes / 1e3:.0f} kB each), {SHARDS} shards, one core, page cache, ", end="")
    print(f"median of {args.repeats} interleaved rounds\n")
    print("| reader | stored / raw bytes | slices/s | % of raw bytes (same round) |")
    print("|---|---|---|---|")
    raw = np.array(rates["raw bytes"])
    for name, values in rates.items():
        codec = name.rsplit(", ", 1)[-1] if ", " in name else "raw"
        ratio = np.median(np.array(values) / raw)
        print(f"| {name} | {stored[codec]:.2f} | {np.median(values):,.0f} | {100 * ratio:.0f}% |")


if __name__ == "__main__":
    main()

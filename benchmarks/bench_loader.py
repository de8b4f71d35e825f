"""Loader throughput: slices/s from the Parquet shards against a raw read of the same bytes.

Usage: PYTHONPATH=workflow_scripts python benchmarks/bench_loader.py [--slices 1000] [--size 224]

Writes synthetic brain-like 4xHxW float16 slices (smooth tissue inside an ellipse, zero outside,
so they compress like real skull-stripped slices) as shards with each codec and as one flat
binary file per shard, then times, on one core and from the page cache (best of ``--repeats``):

- raw bytes: ``readinto`` of the flat files in row-group-sized chunks (no conversion);
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


def best_rate(run: Callable[[], int], repeats: int) -> float:
    """Return the best slices/s of ``repeats`` runs after one warm-up run (page cache)."""
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - start))
    return max(rates)


def time_codec(folders: list[Path], codec: str, repeats: int) -> list[tuple[str, float]]:
    """Return (reader, slices/s) for the loader paths over one codec's shards."""
    files = shard_files(folders)
    splits = pd.DataFrame(
        {
            "patient": [f"p{s}" for s in range(SHARDS)],
            "cohort": [f"c{s}" for s in range(SHARDS)],
            "class": "IDHwt",
            "split": "train",
        }
    )
    readers = {
        "SliceDataset": SliceDataset(files, None),
        "SliceDataset shuffle (buffer 512)": SliceDataset(files, None, shuffle=True),
        "make_loader batches of 64, shuffle": make_loader(
            folders, splits, "train", batch_size=BATCH, shuffle=True, seed=0
        ),
    }

    def count(reader) -> Callable[[], int]:
        if isinstance(reader, SliceDataset):
            return lambda: sum(1 for _ in reader)
        return lambda: sum(len(batch["label"]) for batch in reader)

    return [(f"{name}, {codec}", best_rate(count(r), repeats)) for name, r in readers.items()]


def main() -> None:
    """Run the benchmark and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codecs", default="zstd,lz4,none")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    warnings.simplefilter("ignore", UserWarning)
    codecs = args.codecs.split(",")
    slices = brain_slices(args.slices, args.size)
    slice_bytes = slices[0].nbytes
    raw_total = slices.nbytes
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folders = write_data(Path(tmp), slices, codecs)
        del slices
        raw = best_rate(raw_reader(folders["raw"], args.size, "bytes"), args.repeats)
        rows = [("raw bytes (readinto, no conversion)", "1.00", raw)]
        for mode in ("tensors", "batches"):
            rate = best_rate(raw_reader(folders["raw"], args.size, mode), args.repeats)
            rows.append((f"raw bytes + float32 {mode}", "1.00", rate))
        for codec in codecs:
            stored = sum(f.stat().st_size for f in shard_files(folders[codec])) / raw_total
            rows += [
                (name, f"{stored:.2f}", rate)
                for name, rate in time_codec(folders[codec], codec, args.repeats)
            ]
    print(f"{args.slices} slices of 4x{args.size}x{args.size} float16 ", end="")
    print(f"({slice_bytes / 1e3:.0f} kB each), {SHARDS} shards, one core, page cache\n")
    print("| reader | stored / raw bytes | slices/s | % of raw bytes |")
    print("|---|---|---|---|")
    for name, size, rate in rows:
        print(f"| {name} | {size} | {rate:,.0f} | {100 * rate / raw:.0f}% |")


if __name__ == "__main__":
    main()

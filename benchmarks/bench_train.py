"""Training throughput of the classifier, in slices per second.

Three measurements per model, each after warm-up steps that are not timed:

* ``model``: training steps (augmentation, forward, backward, AdamW, schedule) on in-memory
  batches, i.e. the compute ceiling;
* ``loader``: the shard loader alone (Parquet decode, shuffle buffer, collate) over shards
  written for the benchmark at the model's slice size;
* ``end-to-end``: training steps fed by that loader. The loader is not the bottleneck when
  ``loader`` is well above ``model`` and ``end-to-end`` is close to ``model``.

Usage (results go to benchmarks/model.md)::

    HF_HUB_OFFLINE=1 PYTHONPATH=workflow_scripts python benchmarks/bench_train.py --device cpu
    HF_HUB_OFFLINE=1 PYTHONPATH=workflow_scripts python benchmarks/bench_train.py \\
        --device cuda --models swin_t --batch-size 256 --steps 30 --workers 8
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from glioma.constants import CLASSES
from glioma.dataset.loader import make_loader
from glioma.model.augment import AugmentSettings
from glioma.model.epoch import make_loss, make_optimizer, make_scheduler, train_one_epoch
from glioma.model.nets import build_model, count_parameters

SWIN = "swin_tiny_patch4_window7_224"
MODELS = {
    # The demo's network (config/demo.yaml) since issue 13.
    "resnet10t": ("resnet10t", {}, 64),
    # The first wave's demo network, which did not learn the demo (benchmarks/model_choice.md).
    "tiny": (
        SWIN,
        {
            "img_size": 64,
            "patch_size": 4,
            "window_size": 4,
            "embed_dim": 24,
            "depths": [1, 1],
            "num_heads": [1, 2],
        },
        64,
    ),
    # The default model for real cohorts.
    "swin_t": (SWIN, {}, 224),
}


def synthetic_batches(count: int, batch: int, size: int) -> list[dict]:
    """In-memory batches shaped like the loader's."""
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(batch, 4, size, size, generator=generator),
            "label": torch.randint(0, len(CLASSES), (batch,), generator=generator),
            "patient": [f"p{i}" for i in range(batch)],
            "cohort": ["A"] * batch,
        }
        for _ in range(count)
    ]


def write_shards(folder: Path, n_slices: int, size: int) -> pd.DataFrame:
    """One cohort of shards in the docs/architecture.md schema; returns its split manifest."""
    rng = np.random.default_rng(0)
    patients = [f"P{i // 10:04d}" for i in range(n_slices)]
    labels = rng.integers(0, len(CLASSES), n_slices // 10 + 1)
    images = rng.normal(size=(n_slices, 4, size, size)).astype("<f2")
    table = pa.table(
        {
            "patient": patients,
            "cohort": ["BENCH"] * n_slices,
            "slice_index": pa.array(np.arange(n_slices) % 10, pa.int32()),
            "label": pa.array([labels[i // 10] for i in range(n_slices)], pa.int8()),
            "class": [CLASSES[labels[i // 10]] for i in range(n_slices)],
            "image": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(4 * size * size * 2), n_slices, [None, pa.py_buffer(images)]
            ),
            "height": pa.array([size] * n_slices, pa.int16()),
            "width": pa.array([size] * n_slices, pa.int16()),
            "roi_area": pa.array([1.0] * n_slices, pa.float32()),
            "spacing": pa.array([[1.0, 1.0, 1.0]] * n_slices, pa.list_(pa.float32(), 3)),
            "preprocess_hash": ["bench"] * n_slices,
        }
    )
    folder.mkdir(parents=True)
    pq.write_table(
        table,
        folder / "part-00000.parquet",
        row_group_size=50,
        use_dictionary=False,
        compression="zstd",
        compression_level=1,
    )
    unique = sorted(set(patients))
    return pd.DataFrame(
        {
            "patient": unique,
            "cohort": "BENCH",
            "class": [CLASSES[labels[int(p[1:])]] for p in unique],
            "split": "train",
        }
    )


def time_training(model, batches, device: torch.device, warmup: int) -> float:
    """Slices/s of training steps over ``batches`` (the first ``warmup`` batches untimed)."""
    optimizer = make_optimizer(model, 1e-4, 0.05)
    scheduler = make_scheduler(optimizer, 10, 1000)
    loss = make_loss(torch.ones(len(CLASSES), device=device), 0.1)
    kwargs = {"augment": AugmentSettings(), "generator": torch.Generator().manual_seed(0)}
    batches = iter(batches)
    train_one_epoch(
        model, itertools.islice(batches, warmup), optimizer, scheduler, loss, device, **kwargs
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    row = train_one_epoch(model, batches, optimizer, scheduler, loss, device, **kwargs)
    return row["train_slices"] / row["seconds"]


def time_loader(loader, steps: int, warmup: int) -> float:
    """Slices/s of the loader alone (the first ``warmup`` batches untimed)."""
    batches = iter(loader)
    for _ in range(warmup):
        next(batches)
    start, seen = time.perf_counter(), 0
    for batch in itertools.islice(batches, steps):
        seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - start)


def prepare_model(key: str, device: torch.device, compile_model: bool):
    """Build one benchmark model on ``device`` (channels_last on CUDA, optionally compiled)."""
    name, kwargs, size = MODELS[key]
    torch.manual_seed(0)
    model = build_model(name, kwargs).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params = count_parameters(model)
    return (torch.compile(model) if compile_model else model), size, params


def bench(key: str, args: argparse.Namespace, device: torch.device, tmp: Path) -> dict:
    """All three measurements for one model."""
    model, size, params = prepare_model(key, device, args.compile)
    total = args.steps + args.warmup
    row = {
        "model": key,
        "params": params,
        "size": size,
        "batch": args.batch_size,
        "device": device.type,
        "workers": args.workers,
    }
    row["model_slices_s"] = time_training(
        model, synthetic_batches(total, args.batch_size, size), device, args.warmup
    )
    splits = write_shards(tmp / key, total * args.batch_size, size)
    loader = make_loader(
        [tmp / key],
        splits,
        "train",
        batch_size=args.batch_size,
        shuffle=True,
        seed=0,
        num_workers=args.workers,
        buffer_size=4 * args.batch_size,
    )
    row["loader_slices_s"] = time_loader(loader, args.steps, args.warmup)
    loader.dataset.set_epoch(1)
    row["end_to_end_slices_s"] = time_training(model, loader, device, args.warmup)
    return row


def main() -> None:
    """Run the benchmarks and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"torch {torch.__version__}, {device} ({info}), {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(key, args, device, Path(tmp)) for key in args.models]
    print(pd.DataFrame(rows).round(1).to_markdown(index=False))


if __name__ == "__main__":
    main()

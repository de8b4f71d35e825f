"""Which network and training settings learn the demo: a comparison over training seeds.

On the shards and split of a finished demo run (``make demo``), trains each variant below with
the workflow's own code (:func:`glioma.model.training.train_classifier`, then
:func:`~glioma.model.predict.predict_slices` and
:func:`~glioma.model.evaluate.evaluate_predictions`), once per training seed, and prints one
Markdown row per variant and seed: patient-level validation and test macro AUC, test log loss
(mean over test patients of -log p(true class); lower is better, and it still separates models
whose AUC is 1), training loss at the first and at the kept epoch, and training time. The
logistic-regression baseline of the workflow (:mod:`glioma.model.baseline`) is fitted on the
same split for comparison. A variant with ``fov_mm`` re-crops every patient from
``results/preprocessed`` with a fixed field of view and builds its own shards first.

Usage (results go to benchmarks/model_choice.md)::

    HF_HUB_OFFLINE=1 PYTHONPATH=workflow_scripts python benchmarks/bench_model_choice.py \\
        --results results --seeds 1 2 3 --jobs 2
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from bench_train import MODELS

REPO = Path(__file__).resolve().parents[1]

#: name -> (model settings layered on the demo's, crop field of view in mm or 0).
VARIANTS: dict[str, tuple[dict[str, Any], float]] = {
    # The demo's settings before issue 13: a 2-block Swin, selected by validation AUC.
    "swin-2block (old demo)": (
        {
            "name": MODELS["tiny"][0],
            "kwargs": MODELS["tiny"][1],
            "epochs": 20,
            "patience": 6,
            "min_epochs": 0,
            "select": "val_auc",
            "patient_weighting": "slices",
        },
        0.0,
    ),
    # The same Swin without augmentation or label smoothing, trained to the end: can it fit?
    "swin-2block, no augmentation or smoothing, last": (
        {
            "name": MODELS["tiny"][0],
            "kwargs": MODELS["tiny"][1],
            "epochs": 20,
            "select": "last",
            "patience": 100,
            "label_smoothing": 0.0,
            "augment": {"flip": False, "rotation_deg": 0.0, "intensity": 0.0},
        },
        0.0,
    ),
    "resnet10t (demo)": ({}, 0.0),
    "resnet10t, patient_weighting slices": ({"patient_weighting": "slices"}, 0.0),
    "resnet10t, select last": ({"select": "last", "patience": 100}, 0.0),
    "resnet10t, fov 128 mm": ({}, 128.0),
    "resnet18": ({"name": "resnet18"}, 0.0),
    "resnet10t, 25 epochs, patience 8": ({"epochs": 25, "patience": 8}, 0.0),
    "resnet10t, batch 16": ({"batch_size": 16}, 0.0),
    "resnet10t, no label smoothing": ({"label_smoothing": 0.0}, 0.0),
}


def demo_config() -> dict[str, Any]:
    """config.yaml with config/demo.yaml layered on top, validated (defaults filled)."""
    from snakemake.utils import validate

    def merge(base: dict, over: dict) -> dict:
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "kwargs":
                merge(base[key], value)
            else:
                base[key] = value
        return base

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    merge(config, yaml.safe_load((REPO / "config" / "demo.yaml").read_text()))
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    return config


def recrop(results: Path, out: Path, config: dict[str, Any], fov_mm: float) -> list[Path]:
    """Crop every preprocessed patient with ``fov_mm`` and build one shard folder per cohort."""
    from glioma.constants import SEQUENCES
    from glioma.dataset.hashing import preprocess_hash
    from glioma.dataset.shards import build_shards
    from glioma.preprocess.crop import crop_file

    crop = {**config["preprocess"]["crop"], "fov_mm": fov_mm}
    splits = pd.read_csv(results / "splits.tsv", sep="\t", dtype=str, keep_default_na=False)
    rows = zip(splits["cohort"], splits["patient"], splits["class"], strict=True)
    classes = {(c, p): k for c, p, k in rows}
    shard_dirs = []
    for cohort_dir in sorted((results / "preprocessed").iterdir()):
        crops = []
        for patient_dir in sorted(cohort_dir.iterdir()):
            path = out / "crops" / cohort_dir.name / f"{patient_dir.name}.npz"
            images = {s: patient_dir / f"{s}.nii.gz" for s in SEQUENCES}
            crop_file(images, patient_dir / "roi.nii.gz", path, **crop, patient=patient_dir.name)
            crops.append(path)
        shards = out / "shards" / cohort_dir.name
        cohort_classes = {p.stem: classes.get((cohort_dir.name, p.stem), "") for p in crops}
        build_shards(
            crops,
            cohort_classes,
            shards,
            cohort=cohort_dir.name,
            config_hash=preprocess_hash(config["preprocess"]),
            image_size=int(crop["size"]),
        )
        shard_dirs.append(shards)
    return shard_dirs


def test_log_loss(slices_path: Path, splits_path: Path) -> float:
    """Mean over test patients of -log(mean slice probability of the true class)."""
    from glioma.constants import CLASSES
    from glioma.model.predict import PROB_COLUMNS

    slices = pd.read_parquet(slices_path)
    test = slices[(slices["split"] == "test") & (slices["class"] != "")]
    patients = test.groupby(["cohort", "patient"])
    probs = patients[list(PROB_COLUMNS)].mean().to_numpy()
    labels = patients["class"].first().map(CLASSES.index).to_numpy()
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())


def run_variant(job: tuple[str, int, list[str], str, str]) -> dict[str, Any]:
    """Train, predict and evaluate one variant with one training seed (one CPU thread)."""
    import torch

    from glioma.model.evaluate import evaluate_predictions
    from glioma.model.predict import predict_slices
    from glioma.model.training import train_classifier

    name, seed, shard_dirs, splits, work = job
    torch.set_num_threads(1)
    config = demo_config()
    model, _ = VARIANTS[name]
    config["model"].update(copy.deepcopy(model))
    config["seed"] = seed
    out = Path(work)
    start = time.perf_counter()
    run = train_classifier(shard_dirs, splits, out / "model", config, progress=False)
    seconds = time.perf_counter() - start
    predict_slices(
        shard_dirs, splits, out / "model/best.pt", out / "s.parquet", out / "p.csv", config=config
    )
    tables = {"patient": out / "tp.tsv", "slice": out / "ts.tsv"}
    doc = evaluate_predictions(out / "s.parquet", splits, out / "m.json", tables, n_boot=0, seed=0)
    history = pd.read_csv(out / "model/history.csv")
    return {
        "variant": name,
        "seed": seed,
        "val_auc": doc["patient"]["val"]["macro_auc"],
        "test_auc": doc["patient"]["test"]["macro_auc"],
        "test_log_loss": test_log_loss(out / "s.parquet", Path(splits)),
        "loss_first": float(history["train_loss"].iloc[0]),
        "loss_kept": float(history["train_loss"].iloc[run.best_epoch - 1]),
        "epochs": f"{run.best_epoch}/{len(history)}",
        "seconds": seconds,
    }


def baseline_row(shard_dirs: list[Path], splits: Path, work: Path) -> dict[str, Any]:
    """The workflow's logistic-regression baseline on the demo's shards and split."""
    from glioma.model.baseline import fit_baseline
    from glioma.model.evaluate import evaluate_predictions

    config = demo_config()
    start = time.perf_counter()
    fit_baseline(shard_dirs, splits, work / "b.parquet", work / "b.csv", config=config)
    seconds = time.perf_counter() - start
    tables = {"patient": work / "btp.tsv", "slice": work / "bts.tsv"}
    doc = evaluate_predictions(
        work / "b.parquet", splits, work / "bm.json", tables, n_boot=0, seed=0
    )
    return {
        "variant": "baseline (logistic regression)",
        "seed": "-",
        "val_auc": doc["patient"]["val"]["macro_auc"],
        "test_auc": doc["patient"]["test"]["macro_auc"],
        "test_log_loss": test_log_loss(work / "b.parquet", splits),
        "loss_first": math.nan,
        "loss_kept": math.nan,
        "epochs": "-",
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    splits = args.results / "splits.tsv"
    shards = sorted(p for p in (args.results / "shards").iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shard_sets = {0.0: [str(p) for p in shards]}
        for name in args.variants:
            fov = VARIANTS[name][1]
            if fov not in shard_sets:
                shard_sets[fov] = [
                    str(p) for p in recrop(args.results, work / f"fov{fov:g}", demo_config(), fov)
                ]
        jobs = [
            (name, seed, shard_sets[VARIANTS[name][1]], str(splits), str(work / f"{i}-{seed}"))
            for i, name in enumerate(args.variants)
            for seed in args.seeds
        ]
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(run_variant, jobs))
        rows.append(baseline_row(shards, splits, work))
    frame = pd.DataFrame(rows)
    print(markdown(frame))
    summary = frame.groupby("variant", sort=False).agg(
        seeds=("seed", "size"),
        test_auc_mean=("test_auc", "mean"),
        test_auc_min=("test_auc", "min"),
        test_auc_max=("test_auc", "max"),
        test_log_loss_mean=("test_log_loss", "mean"),
        seconds_mean=("seconds", "mean"),
    )
    print()
    print(markdown(summary.reset_index()))


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table, floats with three decimals."""

    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

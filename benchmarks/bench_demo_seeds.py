"""`make demo` over several seeds: the network's and the baseline's patient-level test AUC.

For each seed ``s`` this runs ``make demo DEMO_SEED=s DEMO_DIR=demo_data_seed<s>`` in this
checkout: the demo generator draws a new cohort with seed ``s`` and the workflow's ``seed`` (split,
initialisation, augmentation, bootstrap) is ``s`` too. It times the run, copies
``results/metrics/metrics.json`` and ``results/model/history.csv`` to
``benchmarks/demo_seeds/seed<s>/``, and moves ``results/`` and ``logs/`` to
``bench_runs/seed<s>/`` so that the next seed starts from nothing. Then it prints one Markdown
row per seed and the mean and range.

Usage (from a fresh clone; results go to benchmarks/demo.md)::

    make setup && .venv/bin/python benchmarks/bench_demo_seeds.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("IDHwt", "IDHmut-codel", "IDHmut-intact")


def run_seed(seed: int) -> dict:
    """Run ``make demo`` for one seed; return its figures."""
    for folder in ("results", "logs"):
        if (REPO / folder).exists():
            raise SystemExit(f"{REPO / folder} exists: move it away first")
    start = time.perf_counter()
    subprocess.run(
        ["make", "demo", f"DEMO_SEED={seed}", f"DEMO_DIR=demo_data_seed{seed}"],
        cwd=REPO,
        check=True,
    )
    wall = time.perf_counter() - start
    record = REPO / "benchmarks" / "demo_seeds" / f"seed{seed}"
    record.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "results" / "metrics" / "metrics.json", record / "metrics.json")
    shutil.copy(REPO / "results" / "model" / "history.csv", record / "history.csv")
    best = torch.load(REPO / "results" / "model" / "best.pt", weights_only=True)
    kept = {"best_epoch": int(best["epoch"]), "metric": best["metric"], "wall_s": round(wall, 1)}
    (record / "kept.json").write_text(json.dumps(kept) + "\n")
    keep = REPO / "bench_runs" / f"seed{seed}"
    keep.mkdir(parents=True, exist_ok=True)
    for folder in ("results", "logs"):
        shutil.move(REPO / folder, keep / folder)
    return figures(seed, record)


def figures(seed: int, record: Path) -> dict:
    """The row of one seed from its recorded metrics.json and history.csv."""
    metrics = json.loads((record / "metrics.json").read_text())
    history = pd.read_csv(record / "history.csv")
    kept = json.loads((record / "kept.json").read_text())
    network, baseline = metrics["patient"]["test"], metrics["baseline"]["patient"]["test"]
    row = {
        "seed": seed,
        "wall_min": kept["wall_s"] / 60,
        "test_n": network["n"],
        "network_auc": network["macro_auc"],
        "baseline_auc": baseline["macro_auc"],
    }
    for name in CLASSES:
        row[f"network_{name}"] = network["classes"][name]["auc"]
    row["train_loss_first"] = float(history["train_loss"].iloc[0])
    row["train_loss_kept"] = float(history["train_loss"].iloc[kept["best_epoch"] - 1])
    row["epochs"] = f"{kept['best_epoch']}/{len(history)}"
    return row


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table, floats with three decimals."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "n/a" if value != value else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--report-only", action="store_true", help="tabulate benchmarks/demo_seeds/ without running"
    )
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        if args.report_only:
            rows.append(figures(seed, REPO / "benchmarks" / "demo_seeds" / f"seed{seed}"))
        else:
            rows.append(run_seed(seed))
    frame = pd.DataFrame(rows)
    print(markdown(frame))
    print()
    summary = {
        column: f"{frame[column].mean():.3f} ({frame[column].min():.3f}-{frame[column].max():.3f})"
        for column in ("network_auc", "baseline_auc", "wall_min")
    }
    print("mean (range) over seeds:", summary)


if __name__ == "__main__":
    main()

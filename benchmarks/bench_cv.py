"""One split against 5-fold cross-validation on the demo: wall time and spread over seeds.

The demo cohort (36 synthetic patients, ``make demo``'s generator with seed 0) is preprocessed
once into ``--base`` (any finished demo run's folder holding ``results/``). For each seed ``s``
and each mode (``single``: config/demo.yaml; ``cv5``: config/demo.yaml + config/demo_cv.yaml)
the base's preprocessed files are copied into a fresh folder, the split manifest and everything
after it are removed, and the workflow runs with ``seed: s`` and ``--rerun-triggers mtime``, so
that the seed changes the split, folds, initialisation, augmentation and bootstrap but not the
preprocessing (whose rigid registration also takes the seed). The wall time is that run:
split, training, prediction, baseline, evaluation and report, without preprocessing.

It records each run's metrics.json under ``benchmarks/cv_runs/<mode>_seed<s>/`` and prints a
Markdown table (one row per run) and the spread across seeds.

Usage::

    make setup && make demo            # or any finished demo run
    .venv/bin/python benchmarks/bench_cv.py --base . --samples demo_data/samples.tsv --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: Stage outputs that do not depend on the seed once preprocessing is fixed.
KEPT = ("cohort", "preprocessed", "crops", "shards", "qc", "n4", "registered", "brain")
RECORDS = REPO / "benchmarks" / "cv_runs"
MODES = {
    "single": ["config/demo.yaml"],
    "cv5": ["config/demo.yaml", "config/demo_cv.yaml"],
}


def prepare(base: Path, workdir: Path) -> None:
    """Copy the base run's preprocessed stage outputs (modification times kept) into workdir."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "results").mkdir(parents=True)
    for name in KEPT:
        source = base / "results" / name
        if source.exists():
            shutil.copytree(source, workdir / "results" / name, symlinks=True)


def run(mode: str, seed: int, samples: Path, workdir: Path) -> float:
    """Run the workflow in ``workdir``; return its wall time in seconds."""
    configs = [str(REPO / c) for c in MODES[mode]]
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", "--rerun-triggers", "mtime",
        "--configfile", *configs, "--config", f"samples={samples}", f"seed={seed}",
    ]  # fmt: skip
    start = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def row(mode: str, seed: int, wall: float | None, metrics: dict) -> dict:
    """The figures of one run."""
    patient = metrics["patient"]
    out = {"mode": mode, "seed": seed, "wall_min": None if wall is None else round(wall / 60, 2)}
    out["test_n"] = patient["test"]["n"]
    out["test_auc"] = patient["test"]["macro_auc"]
    out["cv_n"] = patient.get("cv", {}).get("n")
    out["cv_auc"] = patient.get("cv", {}).get("macro_auc")
    baseline = metrics.get("baseline", {}).get("patient", {})
    out["baseline_test_auc"] = baseline.get("test", {}).get("macro_auc")
    out["baseline_cv_auc"] = baseline.get("cv", {}).get("macro_auc")
    folds = (metrics.get("cv") or {}).get("summary", {}).get("macro_auc", {})
    out["fold_auc_mean"], out["fold_auc_sd"] = folds.get("mean"), folds.get("sd")
    calibration = metrics["calibration"]["splits"]["test"]
    out["test_ece_raw"] = calibration["raw"]["top_label"]
    out["test_ece_scaled"] = calibration["scaled"]["top_label"]
    out["temperature"] = metrics["calibration"]["temperature"]
    review = metrics["uncertainty"]["splits"]["test"]
    out["test_flagged"] = review["n_flagged"]
    out["acc_flagged"], out["acc_unflagged"] = (
        review["accuracy_flagged"],
        review["accuracy_unflagged"],
    )
    return out


def recorded_rows() -> list[dict]:
    """One row per run recorded under ``cv_runs/`` (a wall time only where ``wall.json`` is:
    runs measured beside other work have none)."""
    rows = []
    for folder in sorted(RECORDS.glob("*_seed*")):
        mode, seed = folder.name.rsplit("_seed", 1)
        metrics = json.loads((folder / "metrics.json").read_text())
        wall_file = folder / "wall.json"
        wall = json.loads(wall_file.read_text())["seconds"] if wall_file.is_file() else None
        rows.append(row(mode, int(seed), wall, metrics))
    return sorted(rows, key=lambda r: (r["mode"], r["seed"]))


def fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def spread(rows: list[dict], mode: str, key: str) -> str:
    """Mean, SD and range of one figure over the seeds of one mode."""
    values = [r[key] for r in rows if r["mode"] == mode and r[key] is not None]
    if not values:
        return "n/a"
    sd = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.3f} ± {sd:.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a finished demo run's folder")
    parser.add_argument("--samples", type=Path, help="the demo's samples.tsv")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / "bench_runs" / "cv")
    parser.add_argument(
        "--summarise", action="store_true", help="run nothing: tabulate the recorded runs"
    )
    args = parser.parse_args()
    if not args.summarise and (args.base is None or args.samples is None):
        parser.error("--base and --samples are needed to run (or --summarise)")
    seeds = [] if args.summarise else args.seeds
    for seed in seeds:
        for mode in MODES:
            workdir = args.work / f"{mode}_seed{seed}"
            prepare(args.base.resolve(), workdir)
            wall = run(mode, seed, args.samples.resolve(), workdir)
            metrics = json.loads((workdir / "results" / "metrics" / "metrics.json").read_text())
            record = RECORDS / f"{mode}_seed{seed}"
            record.mkdir(parents=True, exist_ok=True)
            (record / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
            (record / "wall.json").write_text(json.dumps({"seconds": round(wall, 1)}) + "\n")
            print(row(mode, seed, wall, metrics), flush=True)
    rows = recorded_rows()
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(fmt(r[c]) for c in columns) + " |")
    print()
    for mode, key in (
        ("single", "test_auc"), ("cv5", "test_auc"), ("cv5", "cv_auc"),
        ("cv5", "fold_auc_mean"), ("single", "wall_min"), ("cv5", "wall_min"),
    ):  # fmt: skip
        print(f"- {mode} {key}: mean ± SD (range) over seeds {spread(rows, mode, key)}")


if __name__ == "__main__":
    main()

"""Benchmark of the per-patient preprocessing chain at 1 mm (240 x 240 x 155), step by step.

Generates one demo patient at 1 mm (``glioma.demo``), resamples each sequence onto a BraTS-size
240 x 240 x 155 grid of 1 mm voxels (keeping each sequence's own orientation and head pose, and
the ROI on its sequence's grid), then runs every preprocessing step as the workflow's rules do:
each in a fresh Python process with the given thread count, so the wall time includes start-up
and imports, and the peak memory is that step's own (maximum resident set size).

Usage::

    PYTHONPATH=workflow_scripts python benchmarks/bench_preprocess.py --threads 2

Prints a Markdown table; results are recorded in ``benchmarks/preprocess.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = ("t1w", "t1c", "t2w", "flair")
SIZE = (240, 240, 155)

# Each step's import line and call, run in its own process; ``P`` holds the paths (``paths``),
# ``T`` the threads, ``M`` the brain extraction method and ``S`` the sequences.
STEPS = {
    "correct_bias": "from glioma.preprocess.bias import correct_bias_files as f\n"
    "f(P['raw'], P['n4'], threads=T)",
    "register_to_t1c": "from glioma.preprocess.register import register_files as f\n"
    "f(P['n4'], P['roi'], P['roi_on'], P['reg'], P['mats'], threads=T)",
    "extract_brain": "from glioma.preprocess.brain import extract_brain_file as f\n"
    "f(P['reg']['t1w'], P['brain'], method=M, threads=T)",
    "normalise_intensity": "from glioma.preprocess.normalise import normalise_files as f\n"
    "f({s: P['reg'][s] for s in S}, P['brain'], P['reg']['roi'], P['pre'])",
    "crop_roi": "from glioma.preprocess.crop import crop_file as f\n"
    "f({s: P['pre'][s] for s in S}, P['pre']['roi'], P['crop'], size=224)",
    "plot_qc": "from glioma.preprocess.qc import plot_qc_file as f\n"
    "f({s: P['reg'][s] for s in S}, P['pre']['brain_mask'], P['pre']['roi'], P['qc'])",
}

# The timer starts after the step's import, so "compute" excludes start-up and imports.
CHILD = """
import json, sys, time
P, T, M = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
S = ("t1w", "t1c", "t2w", "flair")
{imports}
start = time.perf_counter()
{call}
seconds = time.perf_counter() - start
# VmHWM is this process's own peak resident memory: ru_maxrss would also count the parent's
# peak, which Linux carries across fork and exec.
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({{"compute_s": seconds, "peak_mb": int(status["VmHWM"].split()[0]) / 1024}}))
"""


def make_patient(work: Path, seed: int) -> dict[str, Path | str]:
    """Generate a 1 mm demo patient and resample it onto 240 x 240 x 155 grids."""
    import numpy as np
    import pandas as pd
    import SimpleITK as sitk

    from glioma.demo import generate_cohort

    inputs = {c: work / "input" / f"{c}.nii.gz" for c in (*SEQUENCES, "roi")}
    if (work / "demo" / "samples.tsv").exists() and all(p.exists() for p in inputs.values()):
        row = pd.read_csv(work / "demo" / "samples.tsv", sep="\t").iloc[0]  # reuse (--work)
        return {"roi_on": row["roi_on"], **inputs}
    sheet = generate_cohort(work / "demo", n_patients=1, spacing=1.0, seed=seed, n_cohorts=1)
    row = sheet.iloc[0]
    raw: dict[str, Path | str] = {"roi_on": row["roi_on"]}
    grids = {}
    for column in (*SEQUENCES, "roi"):
        image = sitk.ReadImage(str(work / "demo" / row[column]))
        source = row["roi_on"] if column == "roi" else column
        if source not in grids:  # same centre and direction as the demo grid, BraTS size
            old = image
            direction = np.asarray(old.GetDirection()).reshape(3, 3)
            centre = old.TransformContinuousIndexToPhysicalPoint(
                [(n - 1) / 2 for n in old.GetSize()]
            )
            grid = sitk.Image(list(SIZE), sitk.sitkUInt8)
            grid.SetSpacing([1.0, 1.0, 1.0])
            grid.SetDirection(old.GetDirection())
            grid.SetOrigin((np.asarray(centre) - direction @ ((np.asarray(SIZE) - 1) / 2)).tolist())
            grids[source] = grid
        interp = sitk.sitkNearestNeighbor if column == "roi" else sitk.sitkLinear
        out = sitk.Resample(image, grids[source], sitk.Transform(), interp, 0)
        raw[column] = inputs[column]
        raw[column].parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(out, str(raw[column]))
    return raw


def paths(work: Path, raw: dict) -> dict:
    """Every input and output path of the chain, as JSON-ready strings."""
    res = work / "results"
    return {
        "raw": {s: str(raw[s]) for s in SEQUENCES},
        "roi": str(raw["roi"]),
        "roi_on": raw["roi_on"],
        "n4": {s: str(res / "n4" / f"{s}.nii.gz") for s in SEQUENCES},
        "reg": {n: str(res / "registered" / f"{n}.nii.gz") for n in (*SEQUENCES, "roi")},
        "mats": {s: str(res / "transforms" / f"{s}_to_t1c.mat") for s in ("t1w", "t2w", "flair")},
        "brain": str(res / "brain" / "brain_mask.nii.gz"),
        "pre": {
            n: str(res / "preprocessed" / f"{n}.nii.gz") for n in (*SEQUENCES, "brain_mask", "roi")
        },
        "crop": str(res / "crop.npz"),
        "qc": str(res / "qc.png"),
    }


def run_step(name: str, p: dict, threads: int, method: str) -> dict:
    """Run one step in a fresh process; return wall time, compute time and peak memory."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "workflow_scripts"),
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
    }
    imports, call = STEPS[name].split("\n", 1)
    code = CHILD.format(imports=imports, call=call)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(p), str(threads), method],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"step": name, "wall_s": wall, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", default="deepbet", choices=["deepbet", "hdbet", "none"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole chain")
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder, kept and reused (default: temp)"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "workflow_scripts"))
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        work = args.work or Path(tmp)
        raw = make_patient(work, args.seed)
        p = paths(work, raw)
        print(f"load before: {os.getloadavg()}, cpus: {os.cpu_count()}, threads: {args.threads}")
        print("| run | step | wall s | compute s | peak MB |\n|---|---|---|---|---|")
        for run in range(args.repeats):
            total = 0.0
            for name in STEPS:
                r = run_step(name, p, args.threads, args.method)
                total += r["wall_s"]
                print(
                    f"| {run + 1} | {name} | {r['wall_s']:.1f} | {r['compute_s']:.1f} "
                    f"| {r['peak_mb']:.0f} |",
                    flush=True,
                )
            print(f"| {run + 1} | **total** | **{total:.1f}** | | |", flush=True)
        print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

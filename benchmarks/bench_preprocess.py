"""Benchmark of the per-patient preprocessing at 1 mm (240 x 240 x 155), as the rules run it.

Generates one demo patient at 1 mm (``glioma.demo``), resamples each sequence onto a BraTS-size
240 x 240 x 155 grid of 1 mm voxels (keeping each sequence's own orientation and head pose, and
the ROI on its sequence's grid), then preprocesses it with ``config.yaml``'s settings in either
job layout (``preprocess.jobs``):

* ``patient`` (the default): one fresh Python process runs every step, as rule
  ``preprocess_patient`` does (:func:`glioma.preprocess.pipeline.preprocess_patient_files`);
* ``step``: each step in its own fresh process, as the six step rules do.

Wall times include interpreter start-up and imports (what a job costs); *compute* starts after
the step's imports; the peak memory is that process's own (``VmHWM``). The last column of the
patient layout gives each step's share, from the pipeline's log.

Usage::

    PYTHONPATH=workflow_scripts python benchmarks/bench_preprocess.py --threads 2 --jobs patient

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

# Each step as its rule's adapter calls it; ``P`` holds the paths (:func:`paths`), ``C`` the
# preprocess settings, ``T`` the threads and ``S`` the sequences.
STEPS = {
    "correct_bias": "from glioma.preprocess.bias import correct_bias_files as f\n"
    "f(P['raw'], P['out'].n4, **C['n4'], threads=T)",
    "register_to_t1c": "from glioma.preprocess.register import register_files as f\n"
    "r = C['registration']\n"
    "f(P['out'].n4, P['roi'], P['roi_on'], P['out'].registered, P['out'].transforms, "
    "reference_order=r['reference'], transform=r['transform'], resample_mm=r['resample_mm'], "
    "seed=42, threads=1)",
    "extract_brain": "from glioma.preprocess.brain import extract_brain_file as f\n"
    "b = C['brain_extraction']\n"
    "f(P['out'].registered[b['input']], P['out'].brain, method=b['method'], "
    "threshold=b['threshold'], hdbet_weights=b['hdbet_weights'], threads=T)",
    "normalise_intensity": "from glioma.preprocess.normalise import normalise_files as f\n"
    "o = P['out']\n"
    "f({s: o.registered[s] for s in S}, o.brain, o.registered['roi'], o.preprocessed, "
    "**C['normalisation'])",
    "crop_roi": "from glioma.preprocess.crop import crop_file as f\n"
    "o = P['out']\n"
    "f({s: o.preprocessed[s] for s in S}, o.preprocessed['roi'], o.crops, **C['crop'])",
    "plot_qc": "from glioma.preprocess.qc import plot_qc_file as f\n"
    "o = P['out']\n"
    "f({s: o.registered[s] for s in S}, o.preprocessed['brain_mask'], o.preprocessed['roi'], "
    "o.qc)",
    "preprocess_patient": "from glioma.preprocess.pipeline import preprocess_patient_files as f\n"
    "f({**P['raw'], 'roi': P['roi']}, P['out'], roi_on=P['roi_on'], n4=C['n4'], "
    "registration=C['registration'], brain_extraction=C['brain_extraction'], "
    "normalisation=C['normalisation'], crop=C['crop'], seed=42, threads=T, patient='P1')",
}
LAYOUTS = {
    "patient": ("preprocess_patient",),
    "step": tuple(name for name in STEPS if name != "preprocess_patient"),
}

# The timer starts after the step's import, so "compute" excludes start-up and imports.
CHILD = """
import json, logging, sys, time
from glioma.preprocess.pipeline import PatientOutputs
P, C, T = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
P["out"] = PatientOutputs.under(P["results"], "BENCH", "P1")
S = ("t1w", "t1c", "t2w", "flair")
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(created).3f %(message)s")
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
    """The inputs and the results folder of the chain, as JSON-ready strings."""
    return {
        "raw": {s: str(raw[s]) for s in SEQUENCES},
        "roi": str(raw["roi"]),
        "roi_on": raw["roi_on"],
        "results": str(work / "results"),
    }


def settings() -> dict:
    """``config.yaml``'s preprocess settings, as the rules pass them."""
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())["preprocess"]


def truth_folder(work: Path) -> Path:
    """The generator's truth of the benchmark patient (``glioma.demo``: transforms, masks, bias)."""
    import pandas as pd

    row = pd.read_csv(work / "demo" / "samples.tsv", sep="\t").iloc[0]
    return work / "demo" / "truth" / row["cohort"] / row["patient"]


def _on_grid(path: Path, grid, *, label: bool):
    """A truth image resampled onto ``grid`` (the same physical space; BraTS-size grid)."""
    import SimpleITK as sitk

    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out = sitk.Resample(sitk.ReadImage(str(path)), grid, sitk.Transform(), interp, 0)
    return sitk.GetArrayFromImage(out)


def registration_error(truth: Path, transforms: Path) -> dict[str, tuple[float, float]]:
    """Mean and max distance (mm) between found and true T1c-to-sequence maps, over the true
    brain (every 3rd voxel); ``transforms`` holds the ``{moving}_to_t1c.mat`` files."""
    import numpy as np
    import SimpleITK as sitk

    record = json.loads((truth / "truth.json").read_text())
    world = {k: np.asarray(v) for k, v in record["world_from_scanner"].items()}
    brain = sitk.ReadImage(str(truth / "brain_mask_t1c.nii.gz"))
    index = np.argwhere(sitk.GetArrayFromImage(brain) > 0)[::3][:, ::-1].astype(float)
    direction = np.asarray(brain.GetDirection()).reshape(3, 3)
    points = np.asarray(brain.GetOrigin()) + (index * brain.GetSpacing()) @ direction.T
    homogeneous = np.c_[points, np.ones(len(points))]
    errors = {}
    for mat in sorted(transforms.glob("*_to_t1c.mat")):
        sequence = mat.name.split("_to_")[0]
        expected = (np.linalg.inv(world[sequence]) @ world["t1c"] @ homogeneous.T).T[:, :3]
        found_map = sitk.ReadTransform(str(mat))
        found = np.array([found_map.TransformPoint(p) for p in points])
        distance = np.linalg.norm(found - expected, axis=1)
        errors[sequence] = (float(distance.mean()), float(distance.max()))
    return errors


def white_matter_cv(truth: Path, raw: Path, corrected: Path, sequence: str) -> tuple:
    """White-matter coefficient of variation: raw, after N4, and with the true field divided out."""
    import SimpleITK as sitk

    grid = sitk.ReadImage(str(raw))
    wm = _on_grid(truth / f"wm_mask_{sequence}.nii.gz", grid, label=True) > 0
    bias = _on_grid(truth / f"bias_{sequence}.nii.gz", grid, label=False)[wm]
    before = sitk.GetArrayFromImage(grid)[wm].astype(float)
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(corrected)))[wm]
    return tuple(float(v.std() / v.mean()) for v in (before, after, before / bias))


def brain_dice(truth: Path, mask: Path) -> float:
    """Dice of the extracted brain against the true brain (on the extracted mask's grid)."""
    import SimpleITK as sitk

    found_image = sitk.ReadImage(str(mask))
    found = sitk.GetArrayFromImage(found_image) > 0
    expected = _on_grid(truth / "brain_mask_t1c.nii.gz", found_image, label=True) > 0
    return float(2 * (found & expected).sum() / (found.sum() + expected.sum()))


def accuracy(work: Path, p: dict) -> str:
    """The run's accuracy against the generator's truth, as one Markdown line."""
    sys.path.insert(0, str(REPO / "workflow_scripts"))
    from glioma.preprocess.pipeline import PatientOutputs

    truth = truth_folder(work)
    out = PatientOutputs.under(p["results"], "BENCH", "P1")
    errors = registration_error(truth, Path(out.transforms))
    cvs = {s: white_matter_cv(truth, Path(p["raw"][s]), Path(out.n4[s]), s) for s in SEQUENCES}
    reg = ", ".join(f"{s} {m:.2f} (max {x:.2f})" for s, (m, x) in errors.items())
    cv = ", ".join(f"{s} {b:.3f} / {a:.3f} / {i:.3f}" for s, (b, a, i) in cvs.items())
    return (
        f"registration error mm, mean (max): {reg}; brain Dice "
        f"{brain_dice(truth, Path(out.brain)):.3f}; white-matter CV raw / N4 / true field "
        f"removed: {cv}"
    )


def step_shares(log: str) -> dict[str, float]:
    """Seconds per pipeline step from a patient job's log ("step k/6: ..." lines; the last step
    ends at the log's last line)."""
    marks, last = [], None
    for line in log.splitlines():
        stamp, _, message = line.partition(" ")
        try:
            last = float(stamp)
        except ValueError:
            continue  # a warning's continuation line
        if message.startswith("step ") and "/6: " in message:
            marks.append((last, message.split(": ", 1)[1]))
    ends = [t for t, _ in marks[1:]] + [last]
    return {name: end - start for (start, name), end in zip(marks, ends, strict=True)}


def run_step(name: str, p: dict, config: dict, threads: int) -> dict:
    """Run one step in a fresh process; return wall time, compute time, peak memory and log."""
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
        [sys.executable, "-c", code, json.dumps(p), json.dumps(config), str(threads)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"step": name, "wall_s": wall, "log": done.stderr, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", default="patient", choices=sorted(LAYOUTS))
    parser.add_argument(
        "--method", default=None, choices=["deepbet", "hdbet", "none"],
        help="brain extraction method (default: config.yaml's)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole chain")
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder, kept and reused (default: temp)"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "workflow_scripts"))
    config = settings()
    if args.method:
        config["brain_extraction"]["method"] = args.method
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        work = args.work or Path(tmp)
        raw = make_patient(work, args.seed)
        p = paths(work, raw)
        print(f"load before: {os.getloadavg()}, cpus: {os.cpu_count()}, threads: {args.threads}")
        print(f"jobs: {args.jobs}, settings: {json.dumps(config)}")
        print("| run | job | wall s | compute s | peak MB |\n|---|---|---|---|---|")
        for run in range(args.repeats):
            total = 0.0
            for name in LAYOUTS[args.jobs]:
                r = run_step(name, p, config, args.threads)
                total += r["wall_s"]
                print(
                    f"| {run + 1} | {name} | {r['wall_s']:.1f} | {r['compute_s']:.1f} "
                    f"| {r['peak_mb']:.0f} |",
                    flush=True,
                )
                shares = step_shares(r["log"])
                if shares:
                    print("  steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in shares.items()))
            print(f"| {run + 1} | **total** | **{total:.1f}** | | |", flush=True)
        print(f"load after: {os.getloadavg()}")
        print("accuracy (last run): " + accuracy(work, p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time and accuracy of N4 and registration settings on the 1 mm benchmark patient.

Runs on the work folder of ``bench_preprocess.py`` (its generated patient, its truth and the N4
images of its last run) and, for each setting, fits again in this process: registration of the
three moving sequences to T1c (ANTs on one thread, as the workflow runs it) for each
``preprocess.registration`` transform and ``resample_mm``, and N4 of each sequence for each
``preprocess.n4`` fitting grid and iteration schedule (one thread per fit, as the workflow).
Accuracy is against the generator's truth (``bench_preprocess.registration_error`` and
``white_matter_cv``).

Usage::

    PYTHONPATH=workflow_scripts python benchmarks/bench_preprocess.py --work /tmp/bench
    PYTHONPATH=workflow_scripts python benchmarks/bench_schedules.py --work /tmp/bench

Prints Markdown tables; results are recorded in ``benchmarks/preprocess.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_preprocess as bench

REGISTRATIONS = [("Rigid", 3.0), ("Rigid", 4.0), ("Rigid", 5.0), ("QuickRigid", 3.0)]
N4 = [(8.0, (50, 50, 30)), (10.0, (50, 50, 30)), (12.0, (50, 50, 30)), (8.0, (50, 50))]


def registration_rows(work: Path, n4: dict[str, Path], seed: int) -> list[str]:
    import SimpleITK as sitk

    from glioma.preprocess.register import downsample, register_rigid, single_thread_ants

    single_thread_ants()
    images = {s: sitk.ReadImage(str(path)) for s, path in n4.items()}
    truth = bench.truth_folder(work)
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: ANTs' first fit in a process is slower
        register_rigid(downsample(images["t1c"], 4.0), images["t1w"], Path(tmp) / "warm.mat")
    rows = []
    for transform, resample_mm in REGISTRATIONS:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            fixed = downsample(images["t1c"], resample_mm)
            for moving in ("t1w", "t2w", "flair"):
                register_rigid(
                    fixed, images[moving], Path(tmp) / f"{moving}_to_t1c.mat",
                    transform=transform, seed=seed, resample_mm=resample_mm,
                )  # fmt: skip
            seconds = time.perf_counter() - start
            errors = bench.registration_error(truth, Path(tmp))
        worst = max(mean for mean, _ in errors.values())
        peak = max(top for _, top in errors.values())
        rows.append(f"| {transform} | {resample_mm:g} | {seconds:.1f} | {worst:.2f} | {peak:.2f} |")
    return rows


def n4_rows(work: Path, raw: dict[str, Path], threads: int) -> list[str]:
    import SimpleITK as sitk

    from glioma.io import write_image
    from glioma.preprocess import configure_threads, in_parallel
    from glioma.preprocess.bias import n4_correct

    configure_threads(1)  # one thread per fit, sequences in parallel (correct_bias_files)

    truth = bench.truth_folder(work)
    images = {s: sitk.ReadImage(str(path)) for s, path in raw.items()}
    rows = []
    for spacing, iterations in N4:
        start = time.perf_counter()
        out = in_parallel(
            lambda s, sp=spacing, it=iterations: n4_correct(
                images[s], fit_spacing_mm=sp, iterations=it
            ),
            list(images),
            threads,
        )
        seconds = time.perf_counter() - start
        cvs = []
        with tempfile.TemporaryDirectory() as tmp:
            for sequence, image in zip(images, out, strict=True):
                write_image(image, Path(tmp) / f"{sequence}.nii.gz")
                before, after, ideal = bench.white_matter_cv(
                    truth, raw[sequence], Path(tmp) / f"{sequence}.nii.gz", sequence
                )
                cvs.append((before - after) / (before - ideal))
        rows.append(
            f"| {spacing:g} | {list(iterations)} | {seconds:.1f} | {min(cvs):.2f} "
            f"| {sum(cvs) / len(cvs):.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="bench_preprocess.py's folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    from glioma.preprocess import configure_threads
    from glioma.preprocess.pipeline import PatientOutputs

    configure_threads(args.threads)  # registration's smoothing; ANTs runs on one thread
    raw = {s: args.work / "input" / f"{s}.nii.gz" for s in bench.SEQUENCES}
    n4 = PatientOutputs.under(args.work / "results", "BENCH", "P1").n4
    print(f"load before: {os.getloadavg()}, threads: {args.threads}")
    print("| transform | resample mm | s (3 registrations) | worst mean error mm | max mm |")
    print("|---|---|---|---|---|")
    print("\n".join(registration_rows(args.work, {s: Path(p) for s, p in n4.items()}, args.seed)))
    print("\n| N4 fit mm | iterations | s (4 volumes) | min share of field removed | mean |")
    print("|---|---|---|---|---|")
    print("\n".join(n4_rows(args.work, raw, args.threads)))
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Dry-run (`snakemake -n`) wall time of the real workflow at 100, 1,000 and 5,000 patients.

Usage: python benchmarks/bench_dag.py [--sizes 100 1000 5000] [--modes step patient]
       [--cohorts 10] [--repeats 1] [--floor] [--directive script shell]

For each size it writes, in a temporary folder, a sheet of placeholder (empty) image files spread
over ``--cohorts`` cohorts and a copy of config.yaml pointing at it, then, for each
``preprocess.jobs`` mode (``--modes``, default ``patient`` alone: ``step`` at 5,000 patients takes
minutes), times ``snakemake -n --cores 1`` with the repository's Snakefile and its default target
(``--directory`` = the temporary folder, so nothing in the repository is touched). It prints the
job count, the wall and CPU time (best of ``--repeats``) and the load average before each run.

``--floor`` also times a dry run whose target is the validated sheet only: Snakemake's start-up,
parsing and the sheet's validation, without the per-patient jobs.

``--directive shell`` times a copy of the workflow in which ``preprocess_patient`` has a
``shell:`` directive instead of ``script:`` (only in ``patient`` mode): what ``script:`` costs the
dry run per job. The command in the copy is formatted (the profile prints shell commands) but
never run.

Goals (issue 4): <= 10 s at 1,000 patients, <= 40 s at 5,000. Results: benchmarks/dataset.md.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("t1w", "t1c", "t2w", "flair", "roi")
CLASSES = (("wildtype", ""), ("mutant", "codeleted"), ("mutant", "intact"))
SCRIPT = '        script:\n            "../workflow_scripts/preprocess_patient.py"\n'
SHELL = (
    '        shell:\n            "python -m glioma.preprocess.pipeline {input} {output} > {log}"\n'
)


def placeholder_sheet(folder: Path, patients: int, cohorts: int) -> Path:
    """Write ``patients`` rows of empty image files over ``cohorts`` cohorts; return the sheet."""
    rows = []
    for i in range(patients):
        cohort, patient = f"SITE{i % cohorts:02d}", f"P{i:05d}"
        base = folder / "raw" / cohort / patient
        base.mkdir(parents=True)
        for column in COLUMNS:
            (base / f"{column}.nii.gz").touch()
        idh, codeletion = CLASSES[i % 3]
        paths = {c: f"raw/{cohort}/{patient}/{c}.nii.gz" for c in COLUMNS}
        rows.append(
            {"patient": patient, "cohort": cohort, **paths, "idh": idh, "codeletion": codeletion}
            | {"grade": "4", "age": "55", "sex": "F"}
        )
    sheet = folder / "samples.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    return sheet


def shell_variant(folder: Path) -> Path:
    """Copy the workflow into ``folder`` with ``preprocess_patient`` as a ``shell:`` rule."""
    folder.mkdir()
    shutil.copy(REPO / "Snakefile", folder / "Snakefile")
    shutil.copytree(REPO / "rules", folder / "rules")
    for name in ("workflow_scripts", "schemas", "report", "envs", "config.yaml"):
        (folder / name).symlink_to(REPO / name)
    rules = folder / "rules" / "preprocess.smk"
    text = rules.read_text()
    if SCRIPT not in text:
        raise RuntimeError("preprocess_patient's script: directive not found in preprocess.smk")
    rules.write_text(text.replace(SCRIPT, SHELL))
    return folder / "Snakefile"


def dry_run(
    snakefile: Path, workdir: Path, config: Path, *targets: str
) -> tuple[float, float, int]:
    """Return (wall seconds, CPU seconds, planned jobs) of one ``snakemake -n`` in ``workdir``.

    CPU seconds (user + system of the child) vary less than wall time on a loaded machine.
    """
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        *targets,
        "--cores",
        "1",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{output[-3000:]}")
    totals = re.findall(r"^total\s+(\d+)", output, flags=re.MULTILINE)
    return seconds, cpu, int(totals[0]) if totals else 0


def write_config(workdir: Path, sheet: Path, mode: str) -> Path:
    """Write the repository's config.yaml with ``samples`` and ``preprocess.jobs`` set."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["samples"] = str(sheet)
    config["preprocess"]["jobs"] = mode
    path = workdir / f"config.{mode}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cases(modes: list[str], directives: list[str], floor: bool) -> list[tuple[str, str, bool]]:
    """The (mode, directive, floor) combinations to time; ``shell`` exists in patient mode only."""
    found = [(m, d, False) for m in modes for d in directives if d == "script" or m == "patient"]
    if floor:
        found.insert(0, (modes[0], "script", True))
    return found


def main() -> None:
    """Time dry runs for each sheet size and mode and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--modes", nargs="+", choices=["step", "patient"], default=["patient"])
    parser.add_argument("--directive", nargs="+", choices=["script", "shell"], default=["script"])
    parser.add_argument("--cohorts", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--floor", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shell_snakefile = None
        if "shell" in args.directive:
            shell_snakefile = shell_variant(Path(tmp) / "shell_workflow")
        for size in args.sizes:
            workdir = Path(tmp) / f"n{size}"
            workdir.mkdir()
            sheet = placeholder_sheet(workdir, size, args.cohorts)
            for mode, directive, floor in cases(args.modes, args.directive, args.floor):
                config = write_config(workdir, sheet, mode)
                snakefile = shell_snakefile if directive == "shell" else REPO / "Snakefile"
                targets = ["results/cohort/samples.tsv"] if floor else []
                load = os.getloadavg()[0]
                best = min(
                    dry_run(snakefile, workdir, config, *targets) for _ in range(args.repeats)
                )
                label = "sheet only (floor)" if floor else f"{mode}, {directive}:"
                rows.append((label, size, *best, load))
                print(f"{label} {size}: {best[2]} jobs, {best[0]:.1f} s", file=sys.stderr)
    print("\n| preprocess.jobs, directive | patients | jobs | wall (s) | CPU (s) | load |")
    print("|---|---|---|---|---|---|")
    for label, size, seconds, cpu, jobs, load in rows:
        print(f"| {label} | {size:,} | {jobs:,} | {seconds:.1f} | {cpu:.1f} | {load:.1f} |")


if __name__ == "__main__":
    main()

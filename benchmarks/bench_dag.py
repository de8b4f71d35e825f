"""Dry-run (`snakemake -n`) wall time for sample sheets of 100, 1,000 and 5,000 patients.

Usage: python benchmarks/bench_dag.py [--sizes 100 1000 5000] [--cohorts 10] [--full]

For each size it writes, in a temporary folder, a sheet of placeholder (empty) image files spread
over ``--cohorts`` cohorts, a copy of config.yaml pointing at it, and times
``snakemake -n --cores 1`` with the repository's Snakefile (``--directory`` = the temporary
folder, so nothing in the repository is touched). It prints the job count and the wall time.

``--full`` benchmarks the whole pipeline even before the Snakefile includes every rule file: it
writes a Snakefile in the temporary folder that includes every ``rules/*.smk`` of the repository
and asks for every patient's QC picture, every cohort's shards, the splits and the metrics.

Goals (issue 4): <= 10 s at 1,000 patients, <= 40 s at 5,000. Results: benchmarks/dataset.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = ("t1w", "t1c", "t2w", "flair", "roi")
RULE_ORDER = ("common", "cohort", "preprocess", "dataset", "model", "report")
CLASSES = (("wildtype", ""), ("mutant", "codeleted"), ("mutant", "intact"))


def placeholder_sheet(folder: Path, patients: int, cohorts: int) -> Path:
    """Write ``patients`` rows of empty image files over ``cohorts`` cohorts; return the sheet."""
    rows = []
    for i in range(patients):
        cohort, patient = f"SITE{i % cohorts:02d}", f"P{i:05d}"
        base = folder / "raw" / cohort / patient
        base.mkdir(parents=True)
        for sequence in SEQUENCES:
            (base / f"{sequence}.nii.gz").touch()
        idh, codeletion = CLASSES[i % 3]
        paths = {s: f"raw/{cohort}/{patient}/{s}.nii.gz" for s in SEQUENCES}
        rows.append(
            {"patient": patient, "cohort": cohort, **paths, "idh": idh, "codeletion": codeletion}
            | {"grade": "4", "age": "55", "sex": "F"}
        )
    sheet = folder / "samples.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    return sheet


def full_snakefile(folder: Path) -> Path:
    """Write a Snakefile in ``folder`` that includes every rule file of the repository."""
    present = {path.stem for path in (REPO / "rules").glob("*.smk")}
    names = [name for name in RULE_ORDER if name in present]
    names += sorted(present - set(names))
    includes = "\n".join(f'include: "{REPO}/rules/{name}.smk"' for name in names)
    targets = [
        '        per_patient("results/qc/{cohort}/{patient}.png"),',
        '        expand("results/shards/{cohort}", cohort=cohorts()),',
        '        "results/splits.tsv",',
    ]
    if "model" in present:
        targets.append('        "results/metrics/metrics.json",')
    text = (
        f'import sys\nsys.path.insert(0, "{REPO}/workflow_scripts")\n\n'
        'configfile: "config.yaml"\n\n\n'
        f"{includes}\n\n\n"
        "rule bench_all:\n    default_target: True\n    input:\n" + "\n".join(targets) + "\n"
    )
    path = folder / "Snakefile.full"
    path.write_text(text)
    return path


def dry_run(snakefile: Path, workdir: Path) -> tuple[float, int, str]:
    """Return (wall seconds, jobs, output tail) of one ``snakemake -n`` in ``workdir``."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--cores",
        "1",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{output[-3000:]}")
    totals = re.findall(r"^total\s+(\d+)", output, flags=re.MULTILINE)
    return seconds, int(totals[0]) if totals else 0, output[-500:]


def main() -> None:
    """Time dry runs for each sheet size and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--cohorts", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            snakefile = full_snakefile(workdir) if args.full else REPO / "Snakefile"
            config = yaml.safe_load((REPO / "config.yaml").read_text())
            config["samples"] = str(placeholder_sheet(workdir, size, args.cohorts))
            (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            best = min(dry_run(snakefile, workdir) for _ in range(args.repeats))
            rows.append((size, best[1], best[0]))
            print(f"{size} patients: {best[1]} jobs, {best[0]:.1f} s", file=sys.stderr)
    print(f"Snakefile: {'all rules/*.smk (--full)' if args.full else 'repository Snakefile'}")
    print("\n| patients | jobs | `snakemake -n` wall (s) | ms per job |")
    print("|---|---|---|---|")
    for size, jobs, seconds in rows:
        print(f"| {size:,} | {jobs:,} | {seconds:.1f} | {1000 * seconds / max(jobs, 1):.2f} |")


if __name__ == "__main__":
    main()

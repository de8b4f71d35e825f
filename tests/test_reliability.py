"""Reliability on the whole workflow: one bad patient, a fix and rerun, determinism."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIRST_COHORTS, planned_jobs, run_snakemake, write_config

pytestmark = pytest.mark.slow


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outputs_of(results: Path, cohort: str, patient: str) -> list[Path]:
    return sorted(p for p in results.rglob("*") if p.is_file() and f"{cohort}/{patient}" in str(p))


def test_one_corrupt_patient_fails_alone_and_a_fix_reruns_only_it(
    workflow_run: Path, tiny_cohort: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(workflow_run, workdir, symlinks=True)
    results = workdir / "results"
    sheet = pd.read_csv(tiny_cohort.parent / "first_two.tsv", sep="\t", dtype=str)
    bad = sheet.iloc[0]
    others = sheet.iloc[1:]
    before = {p: _digest(p) for p in results.rglob("*.nii.gz") if bad["patient"] not in str(p)}

    # A truncated download of one patient's T2w.
    original = tiny_cohort.parent / bad["t2w"]
    corrupt = original.with_name("t2w_truncated" + "".join(original.suffixes))
    corrupt.write_bytes(original.read_bytes()[: original.stat().st_size // 3])
    broken = sheet.copy()
    broken.loc[0, "t2w"] = str(corrupt.relative_to(tiny_cohort.parent))
    broken_sheet = tiny_cohort.parent / "broken.tsv"
    broken.to_csv(broken_sheet, sep="\t", index=False)
    write_config(workdir, broken_sheet)

    run = run_snakemake(workdir, "--keep-going")
    log = run.stdout + run.stderr
    assert run.returncode != 0
    error_log = (
        workdir / "logs" / "correct_bias" / bad["cohort"] / f"{bad['patient']}.log"
    ).read_text()
    assert bad["patient"] in error_log and "t2w" in error_log and corrupt.name in error_log, (
        error_log
    )
    assert not (results / "n4" / bad["cohort"] / bad["patient"]).exists(), "partial output left"
    for path, digest in before.items():
        assert _digest(path) == digest, f"{path} changed although its patient is fine"
    assert len(others) and "correct_bias" in log

    # Fixed: only the fixed patient's per-patient jobs and the aggregates are planned.
    fixed_sheet = tiny_cohort.parent / "fixed.tsv"
    sheet.to_csv(fixed_sheet, sep="\t", index=False)
    write_config(workdir, fixed_sheet)
    dry = run_snakemake(workdir, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    patients = {wc.get("patient") for _, wc in planned_jobs(dry.stdout + dry.stderr)} - {None}
    assert patients == {bad["patient"]}
    # The plan above covers the aggregates; running the patient's own chain is enough here
    # (retraining, saliency and pages would add minutes and test nothing new).
    own = [
        f"results/{kind}/{bad['cohort']}/{bad['patient']}.{ext}"
        for kind, ext in (("crops", "npz"), ("qc", "png"))
    ]
    rerun = run_snakemake(workdir, *own)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-5000:]
    assert all((workdir / target).is_file() for target in own)
    assert _outputs_of(results, bad["cohort"], bad["patient"])


def test_same_seed_same_bytes_and_metrics(
    workflow_run: Path, tiny_cohort: Path, tmp_path: Path
) -> None:
    """A second clean run gives byte-identical preprocessed volumes and identical metrics."""
    first = workflow_run / "results"
    workdir = tmp_path / "again"
    cohort = FIRST_COHORTS[0]
    sheet = tiny_cohort.parent / "first_two.tsv"
    write_config(workdir, sheet)
    patients = pd.read_csv(sheet, sep="\t", dtype=str).query("cohort == @cohort")["patient"]
    targets = [
        f"results/preprocessed/{cohort}/{p}/{n}.nii.gz"
        for p in patients
        for n in ("t1c", "flair", "brain_mask", "roi")
    ]
    run = run_snakemake(workdir, *targets)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    for target in targets:
        assert _digest(workdir / target) == _digest(workflow_run / target), target

    # Retrain, predict and evaluate from the first run's data: identical metrics on CPU.
    copy = tmp_path / "retrain"
    shutil.copytree(workflow_run, copy, symlinks=True)
    shutil.rmtree(copy / "results" / "model")
    rerun = run_snakemake(copy, "--forcerun", "train_classifier", "results/metrics/metrics.json")
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-5000:]
    assert json.loads((copy / "results/metrics/metrics.json").read_text()) == json.loads(
        (first / "metrics" / "metrics.json").read_text()
    )

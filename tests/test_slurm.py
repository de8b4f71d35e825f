"""The workflow on a real (local, single-node) SLURM cluster through profiles/slurm."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    ADDED_COHORT,
    FIRST_COHORTS,
    REPO,
    run_snakemake,
    write_config,
)
from slurm_cluster import local_slurm, missing_requirements

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

#: Overrides for a one-node test cluster without slurmdbd (so `squeue` for status) and no GPU.
CLUSTER_ARGS = (
    "--profile",
    str(REPO / "profiles" / "slurm"),
    "--jobs",
    "4",
    "--default-resources",
    "slurm_account=root",
    "slurm_partition=main",
    "mem_mb=1000",
    "runtime=30",
    "--set-resources",
    "train_classifier:slurm_partition=main",
    "train_classifier:gpu=0",
    "train_classifier:mem_mb=2000",
    "predict_slices:slurm_partition=main",
    "predict_slices:gpu=0",
    "predict_slices:mem_mb=2000",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
    "--latency-wait",
    "5",
)

#: The plugin's submission line; its log path names the rule and the wildcards (cohort_patient).
SUBMITTED = re.compile(
    r"Job \d+ has been submitted with SLURM jobid \d+ "
    r"\(log: .*?/slurm_logs/rule_(\w+)/(?:([^/]+)/)?\d+\.log\)"
)
PER_PATIENT = {
    "correct_bias",
    "register_to_t1c",
    "extract_brain",
    "normalise_intensity",
    "crop_roi",
}
TOTAL = re.compile(r"^total\s+(\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with local_slurm(tmp_path_factory.mktemp("slurm")) as state:
        yield state


def _run_log(workdir: Path) -> str:
    """Snakemake's own log of the latest run (it records each sbatch submission)."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1].read_text(encoding="utf-8")


def _cohort_sheet(tiny_cohort: Path, cohorts: list[str], per_cohort: int, name: str) -> Path:
    """A sheet beside the tiny cohort's with the first ``per_cohort`` patients of ``cohorts``."""
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    sheet = sheet[sheet["cohort"].isin(cohorts)].groupby("cohort").head(per_cohort)
    out = tiny_cohort.parent / name
    sheet.to_csv(out, sep="\t", index=False)
    return out


#: Through the cluster up to the per-cohort shards and the split manifest: every per-patient
#: rule and the aggregates that fan in, without training (tested elsewhere) to keep CI short.
TARGETS = ("results/splits.tsv", "results/cohort/table1.md")


@pytest.fixture(scope="module")
def first_run(cluster: Path, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One patient per first cohort through sbatch, up to the shards; returns the workdir."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    first = _cohort_sheet(tiny_cohort, FIRST_COHORTS, 1, "slurm_first.tsv")
    write_config(workdir, first)
    targets = [*TARGETS, *(f"results/shards/{c}" for c in FIRST_COHORTS)]
    run = run_snakemake(workdir, *CLUSTER_ARGS, *targets, timeout=1200)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:] + (cluster / "daemons.log").read_text()[-2000:]
    return workdir


def test_workflow_runs_through_sbatch(first_run: Path) -> None:
    run_log = _run_log(first_run)
    submitted = SUBMITTED.findall(run_log)
    assert len(submitted) == int(TOTAL.search(run_log).group(1)) > 0, "every job through sbatch"
    assert {rule for rule, _ in submitted} >= PER_PATIENT
    for cohort in FIRST_COHORTS:
        assert list((first_run / "results" / "shards" / cohort).glob("part-*.parquet"))


def test_adding_a_cohort_submits_only_its_jobs(
    first_run: Path, cluster: Path, tiny_cohort: Path
) -> None:
    shards = sorted((first_run / "results" / "shards").rglob("*.parquet"))
    before = {path: path.stat().st_mtime_ns for path in shards}
    cohorts = [*FIRST_COHORTS, ADDED_COHORT]
    sheet = _cohort_sheet(tiny_cohort, cohorts, 1, "slurm_added.tsv")
    write_config(first_run, sheet)
    targets = [*TARGETS, *(f"results/shards/{c}" for c in cohorts)]
    run = run_snakemake(first_run, *CLUSTER_ARGS, *targets, timeout=1200)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:] + (cluster / "daemons.log").read_text()[-2000:]

    submitted = SUBMITTED.findall(_run_log(first_run))
    added = pd.read_csv(sheet, sep="\t", dtype=str).query("cohort == @ADDED_COHORT")
    (patient,) = added["patient"]
    per_patient = {(rule, where) for rule, where in submitted if rule in PER_PATIENT}
    assert per_patient == {(rule, f"{ADDED_COHORT}_{patient}") for rule in PER_PATIENT}, log[:6000]
    shard_jobs = [where for rule, where in submitted if rule == "build_shards"]
    assert shard_jobs == [ADDED_COHORT], "only the new cohort's shards are built"
    assert {path: path.stat().st_mtime_ns for path in shards} == before, "old shards untouched"
    assert list((first_run / "results" / "shards" / ADDED_COHORT).glob("part-*.parquet"))

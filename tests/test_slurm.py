"""The workflow on a real (local, single-node) SLURM cluster through profiles/slurm."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_snakemake, subset_sheet, write_config
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

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with local_slurm(tmp_path_factory.mktemp("slurm")) as state:
        yield state


def test_workflow_runs_through_sbatch_and_adds_a_cohort_incrementally(
    cluster: Path, tiny_cohort: Path, tmp_path: Path
) -> None:
    first = subset_sheet(tiny_cohort, ["SITE-A", "SITE-B"], "slurm_first.tsv")
    write_config(tmp_path, first)
    run = run_snakemake(tmp_path, *CLUSTER_ARGS, timeout=1500)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:] + (cluster / "daemons.log").read_text()[-2000:]
    assert SUBMITTED.search(log), "no job went through sbatch"
    assert (tmp_path / "results" / "cohort" / "samples.tsv").exists()

    # Add the third cohort: only its patients' jobs and the aggregates are submitted.
    shutil.copy(tiny_cohort, tiny_cohort.parent / "slurm_all.tsv")
    write_config(tmp_path, tiny_cohort.parent / "slurm_all.tsv")
    rerun = run_snakemake(tmp_path, *CLUSTER_ARGS, timeout=1500)
    relog = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, relog[-5000:]
    new_patients = set(re.findall(r"DEMO-C-\d+", relog))
    old_patients = set(re.findall(r"DEMO-[AB]-\d+", relog))
    assert new_patients, "the new cohort's patients were not processed"
    assert not old_patients & set(re.findall(r"wildcards: .*patient=(DEMO-[AB]-\d+)", relog))

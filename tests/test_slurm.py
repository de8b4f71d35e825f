"""The whole workflow on a real (local, single-node) SLURM cluster through profiles/slurm.

One run submits every job of a training run through sbatch: the per-patient preprocessing steps
and QC pictures, the sheet, Table 1, shards and split, training, prediction, the baseline,
evaluation, the model bundle, the sequence ablation, saliency maps, patient pages and the report.
Dry runs through the profile then check that what those jobs wrote counts as done, and that
adding a cohort plans only its patients' jobs. The profile is used as it stands: the test only
adds what a one-node cluster without slurmdbd needs (`squeue` for job status, short polling
intervals, --cores for the node) and never overrides a resource.

The test cluster is made to accept the profile's requests (tests/slurm_cluster.py): its one node
is in every partition the profile names (`cpu`, `gpu`), declares enough CPUs and memory for the
largest job, and one fake GPU, a GRES bound to /dev/null. So training's ``--gpus=1`` on partition
`gpu` is really requested, accepted and granted by SLURM (which sets CUDA_VISIBLE_DEVICES=0 in
the job), but no GPU exists: PyTorch finds no CUDA device and trains on the CPU. What the test
checks of the resources is what SLURM recorded for each job (`scontrol show job`): partition,
CPUs per task, memory, time limit and GPUs, against the profile's set-threads/set-resources and,
for what the profile leaves alone, the rule's own threads and resources in rules/*.smk. Nothing
enforces those sizes on the test node (no cgroups), so it says nothing about whether they
suffice.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import (
    ADDED_COHORT,
    FIRST_COHORTS,
    REPO,
    planned_jobs,
    run_snakemake,
    write_config,
)
from slurm_cluster import local_slurm, missing_requirements

PROFILE_DIR = REPO / "profiles" / "slurm"
PROFILE: dict[str, Any] = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())

#: The smallest run that trains, evaluates and ablates: 2 patients per cohort (2 train, 1 val,
#: 1 test; AUCs are then NaN, which is not what this test is about), one epoch, few bootstrap
#: resamples, one saliency slice per patient.
SMALL: dict[str, Any] = {
    "model": {"epochs": 1, "min_epochs": 0},
    "evaluate": {"bootstrap": 10},
    "saliency": {"slices": 1},
}
FIRST_SHEET = dict.fromkeys(FIRST_COHORTS, 2)

#: The plugin's submission line: the SLURM job ID, and the log path naming the rule and the
#: wildcards (cohort_patient).
SUBMITTED = re.compile(
    r"Job \d+ has been submitted with SLURM jobid (\d+) "
    r"\(log: .*?/slurm_logs/rule_(\w+)/(?:([^/]+)/)?\d+\.log\)"
)
PER_PATIENT = {
    "correct_bias",
    "register_to_t1c",
    "extract_brain",
    "normalise_intensity",
    "crop_roi",
}
#: Every rule of a single-split training run in preprocess.jobs: step (the tests' setting).
TRAINING_RUN_RULES = PER_PATIENT | {
    "plot_qc",
    "check_samples",
    "make_table1",
    "build_shards",
    "make_splits",
    "train_classifier",
    "predict_slices",
    "fit_baseline",
    "evaluate_model",
    "write_bundle",
    "ablate_sequences",
    "explain_predictions",
    "render_patient_pages",
    "render_report",
}
TOTAL = re.compile(r"^total\s+(\d+)$", re.MULTILINE)

_RULE_START = re.compile(r"^\s*(?:rule (\w+)|use rule (\w+) as (\w+) with):", re.MULTILINE)


def rule_resources() -> dict[str, dict[str, int]]:
    """Each rule's own threads, mem_mb and runtime, read from rules/*.smk (``use rule ... with``
    inherits what its block does not set)."""
    rules: dict[str, dict[str, int]] = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        starts = list(_RULE_START.finditer(text))
        for start, end in itertools.pairwise([*starts, None]):
            block = text[start.end() : end.start() if end else None]
            name, parent, child = start.groups()
            own = dict(rules[parent]) if parent else {}
            for key, pattern in (
                ("threads", r"^\s*threads:\s*(\d+)"),
                ("mem_mb", r"^\s*mem_mb=(\d+)"),
                ("runtime", r"^\s*runtime=(\d+)"),
            ):
                found = re.search(pattern, block, re.MULTILINE)
                if found:
                    own[key] = int(found.group(1))
            rules[name or child] = own
    return rules


RULES = rule_resources()


def expected_request(rule: str) -> dict[str, Any]:
    """What a job of ``rule`` should ask SLURM for under the profile: set-threads and
    set-resources where the profile names the rule, else the rule's own threads and resources."""
    own = RULES[rule]
    profile = PROFILE.get("set-resources", {}).get(rule, {})
    defaults = PROFILE["default-resources"]
    return {
        "partition": profile.get("slurm_partition", defaults["slurm_partition"]),
        "cpus": PROFILE.get("set-threads", {}).get(rule, own.get("threads", 1)),
        "mem_mb": profile.get("mem_mb", own.get("mem_mb", defaults["mem_mb"])),
        "runtime": profile.get("runtime", own.get("runtime", defaults["runtime"])),
        "gpus": profile.get("gpu", 0),
    }


def _minutes(limit: str) -> int:
    """A SLURM time limit ([days-]hours:minutes:seconds) in whole minutes."""
    days, _, clock = limit.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def _megabytes(size: str) -> int:
    """A SLURM memory size (32000M, 32G) in MB."""
    return int(float(size[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[size[-1]])


def recorded(record: dict[str, str]) -> dict[str, Any]:
    """The same keys as expected_request, from a job's `scontrol show job -o` record."""
    gpus = re.fullmatch(r"gres[:/]gpu[:=](\d+)", record.get("TresPerJob", ""))
    return {
        "partition": record["Partition"],
        "cpus": int(record["CPUs/Task"]),
        "mem_mb": _megabytes(record["MinMemoryNode"]),
        "runtime": _minutes(record["TimeLimit"]),
        "gpus": int(gpus.group(1)) if gpus else 0,
    }


def job_records() -> dict[str, dict[str, str]]:
    """Every job the test cluster remembers (slurm.conf MinJobAge), by job ID."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True
    ).stdout
    records = {}
    for line in out.splitlines():
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


def _node_size() -> dict[str, int]:
    """CPUs, memory and GPUs for the largest job twice over, so two big jobs run side by side."""
    requests = [expected_request(rule) for rule in RULES if RULES[rule]]
    return {
        "cpus": 2 * max(r["cpus"] for r in requests),
        "memory_mb": 2 * max(r["mem_mb"] for r in requests),
        "gpus": max(r["gpus"] for r in requests),
    }


def _partitions() -> tuple[str, ...]:
    named = {r.get("slurm_partition") for r in PROFILE.get("set-resources", {}).values()}
    default = PROFILE["default-resources"]["slurm_partition"]
    return (default, *sorted(named - {None, default}))


NODE = _node_size()

#: Only what a one-node test cluster without slurmdbd needs; every resource is the profile's.
#: --cores replaces run_snakemake's 2, which would cap every job's threads (8 for training in
#: the profile) and the cores all running jobs may ask for together; a real run gives none.
CLUSTER_ARGS = (
    "--profile",
    str(PROFILE_DIR),
    "--cores",
    str(NODE["cpus"]),
    "--jobs",
    "8",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
    "--latency-wait",
    "5",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    with local_slurm(state, partitions=_partitions(), **NODE):
        yield state


def _run_log(workdir: Path) -> str:
    """Snakemake's own log of the latest run (it records each sbatch submission)."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1].read_text(encoding="utf-8")


def _cohort_sheet(tiny_cohort: Path, per_cohort: dict[str, int], name: str) -> Path:
    """A sheet beside the tiny cohort's with the first ``per_cohort[c]`` patients of cohort c."""
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    sheet = sheet[sheet["cohort"].isin(per_cohort)]
    rank = sheet.groupby("cohort").cumcount()
    sheet = sheet[rank < sheet["cohort"].map(per_cohort)]
    out = tiny_cohort.parent / name
    sheet.to_csv(out, sep="\t", index=False)
    return out


def _check(run: subprocess.CompletedProcess, cluster: Path) -> None:
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:] + (cluster / "daemons.log").read_text()[-2000:]


@pytest.fixture(scope="module")
def first_run(cluster: Path, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole workflow (default target) on 2 patients of each first cohort through sbatch."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    write_config(workdir, _cohort_sheet(tiny_cohort, FIRST_SHEET, "slurm_first.tsv"), **SMALL)
    _check(run_snakemake(workdir, *CLUSTER_ARGS, timeout=1800), cluster)
    return workdir


@pytest.mark.slurm
@pytest.mark.slow
def test_every_rule_runs_through_sbatch(first_run: Path) -> None:
    run_log = _run_log(first_run)
    submitted = SUBMITTED.findall(run_log)
    # Every job but the target rule `all`, which runs nothing.
    assert len(submitted) == int(TOTAL.search(run_log).group(1)) - 1 > 0, "every job via sbatch"
    assert {rule for _, rule, _ in submitted} == TRAINING_RUN_RULES
    results = first_run / "results"
    for cohort in FIRST_COHORTS:
        assert list((results / "shards" / cohort).glob("part-*.parquet"))
        assert (results / "patients" / cohort).is_dir()
        assert (results / "saliency" / cohort).is_dir()
    for done in ("report.html", "bundle", "metrics/ablation.tsv", "metrics/metrics.json"):
        assert (results / done).exists(), done


@pytest.mark.slurm
@pytest.mark.slow
def test_jobs_get_the_profiles_resources(first_run: Path) -> None:
    """Partition, CPUs, memory, time limit and GPUs of every job, as SLURM recorded them."""
    records = job_records()
    submitted = SUBMITTED.findall(_run_log(first_run))
    for slurm_id, rule, where in submitted:
        assert slurm_id in records, f"SLURM forgot job {slurm_id} ({rule}); raise MinJobAge"
        got = recorded(records[slurm_id])
        assert got == expected_request(rule), f"{rule} {where}: {records[slurm_id]}"
    # The profile's own values reach SLURM: every rule running the network asks for a GPU.
    by_rule = {rule: recorded(records[slurm_id]) for slurm_id, rule, _ in submitted}
    train = PROFILE["set-resources"]["train_classifier"]
    for rule in ("train_classifier", "predict_slices", "explain_predictions", "ablate_sequences"):
        assert by_rule[rule]["partition"] == train["slurm_partition"], rule
        assert by_rule[rule]["gpus"] >= 1, rule
    assert by_rule["train_classifier"] == {
        "partition": train["slurm_partition"],
        "cpus": PROFILE["set-threads"]["train_classifier"],
        "mem_mb": train["mem_mb"],
        "runtime": train["runtime"],
        "gpus": train["gpu"],
    }
    assert by_rule["correct_bias"]["cpus"] == PROFILE["set-threads"]["correct_bias"]


@pytest.mark.slurm
@pytest.mark.slow
def test_outputs_of_sbatch_jobs_are_up_to_date_and_a_new_cohort_plans_only_its_jobs(
    first_run: Path, tiny_cohort: Path
) -> None:
    """What the jobs wrote on the node (files and Snakemake's metadata) counts as done: the same
    run plans nothing, and after adding a cohort only its patients' jobs, its shards and the
    cohort-level aggregates. Dry runs through the profile: test_workflow.py's
    test_adding_a_cohort_processes_only_its_patients runs the addition and checks that no
    existing shard is rewritten."""
    again = run_snakemake(first_run, *CLUSTER_ARGS, "--dry-run")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert not planned_jobs(again.stdout + again.stderr), again.stdout[-3000:]

    sheet = _cohort_sheet(tiny_cohort, {**FIRST_SHEET, ADDED_COHORT: 1}, "slurm_added.tsv")
    write_config(first_run, sheet, **SMALL)
    dry = run_snakemake(first_run, *CLUSTER_ARGS, "--dry-run")
    log = dry.stdout + dry.stderr
    assert dry.returncode == 0, log[-4000:]
    jobs = planned_jobs(log)
    (patient,) = pd.read_csv(sheet, sep="\t", dtype=str).query("cohort == @ADDED_COHORT")["patient"]
    per_patient = {(rule, wc["cohort"], wc["patient"]) for rule, wc in jobs if "patient" in wc}
    assert per_patient == {(rule, ADDED_COHORT, patient) for rule in PER_PATIENT | {"plot_qc"}}, (
        log[-6000:]
    )
    assert [wc["cohort"] for rule, wc in jobs if rule == "build_shards"] == [ADDED_COHORT]
    assert {"check_samples", "train_classifier", "render_report"} <= {rule for rule, _ in jobs}


def test_profile_names_existing_rules_and_never_asks_less_than_they_do() -> None:
    """Every rule the profile sizes exists, and its memory and runtime are at least the rule's
    own; GPU rules go to a partition other than the default one."""
    named = set(PROFILE.get("set-threads", {})) | set(PROFILE.get("set-resources", {}))
    assert named <= set(RULES), f"not rules of the workflow: {sorted(named - set(RULES))}"
    default = PROFILE["default-resources"]["slurm_partition"]
    for rule, resources in PROFILE.get("set-resources", {}).items():
        for key in ("mem_mb", "runtime"):
            if key in resources and key in RULES[rule]:
                assert resources[key] >= RULES[rule][key], f"{rule} {key} below the rule's"
        if resources.get("gpu"):
            assert resources.get("slurm_partition", default) != default, rule

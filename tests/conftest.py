"""Shared fixtures: a tiny generated cohort and a tiny workflow run on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: Cohorts of the tiny generated cohort run first; the third is added by incremental tests.
FIRST_COHORTS = ["SITE-A", "SITE-B"]
ADDED_COHORT = "SITE-C"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _deep_update(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


#: A configuration small enough for a CI run: 32-pixel slices, the demo's network, 2 epochs.
TINY_OVERRIDES: dict[str, Any] = {
    # One job per step, so tests can see each step's rule; tests/test_preprocess_modes.py
    # runs preprocess.jobs: patient (the demo's setting) and checks both give the same files.
    "preprocess": {"jobs": "step", "registration": {"transform": "Rigid"}, "crop": {"size": 32}},
    "split": {"ratios": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "model": {"epochs": 2, "min_epochs": 0, "batch_size": 16, "patience": 5},
    "evaluate": {"bootstrap": 20},
}


def demo_config() -> dict[str, Any]:
    """The demo's settings: config.yaml with config/demo.yaml layered on top (as `make demo`)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return _deep_update(config, yaml.safe_load((REPO / "config" / "demo.yaml").read_text()))


def write_config(workdir: Path, samples: Path, **overrides: Any) -> Path:
    """Write the demo's config with the tiny overrides (and ``overrides``) into ``workdir``."""
    config = demo_config()
    _deep_update(config, TINY_OVERRIDES)
    _deep_update(config, overrides)
    config["samples"] = str(samples)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(
    workdir: Path, *args: str, timeout: float = 1800, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` with ``workdir/config.yaml`` (``env`` added)."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        command, capture_output=True, encoding="utf-8", errors="replace", env=env, timeout=timeout
    )


def subset_sheet(sheet: Path, cohorts: list[str], name: str) -> Path:
    """Write a copy of ``sheet`` (beside it, so relative paths hold) keeping ``cohorts`` only."""
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    out = sheet.parent / name
    df[df["cohort"].isin(cohorts)].to_csv(out, sep="\t", index=False)
    return out


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated cohort of 12 patients at 4 mm in 3 cohorts; returns its samples.tsv.

    Three patients lack one sequence each (as the demo's config allows): SITE-A-003 its T1c,
    SITE-B-001 its FLAIR (ROI drawn on T2w), SITE-C-001 its T1w; the shared workflow run trains
    on or predicts them (tests/test_workflow.py::test_patients_lacking_a_sequence_*).
    """
    from glioma.demo import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(out, n_patients=12, spacing=4.0, seed=3, n_cohorts=3, missing=0.25)
    return out / "samples.tsv"


_JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n?)*)", re.MULTILINE)


def planned_jobs(log: str) -> list[tuple[str, dict[str, str]]]:
    """The (rule, wildcards) of every job in a Snakemake (dry-)run log."""
    jobs = []
    for match in _JOB.finditer(log):
        found = re.search(r"^    wildcards: (.*)$", match.group(2), re.MULTILINE)
        wildcards = dict(kv.split("=", 1) for kv in found.group(1).split(", ")) if found else {}
        jobs.append((match.group(1), wildcards))
    return jobs


@pytest.fixture(scope="session")
def workflow_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole workflow run once on two of the tiny cohort's three cohorts; returns workdir."""
    workdir = tmp_path_factory.mktemp("workflow_run")
    sheet = subset_sheet(tiny_cohort, FIRST_COHORTS, "first_two.tsv")
    write_config(workdir, sheet)
    run = run_snakemake(workdir)
    assert run.returncode == 0, (run.stdout + run.stderr)[-8000:]
    return workdir

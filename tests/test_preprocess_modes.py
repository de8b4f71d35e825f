"""preprocess.jobs: one job per step or one per patient, with the same files either way."""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
import yaml
from conftest import REPO, planned_jobs, run_snakemake, write_config

from glioma.errors import InputError
from glioma.io import is_absent
from glioma.preprocess.bias import correct_bias_files
from glioma.preprocess.brain import extract_brain_file
from glioma.preprocess.crop import crop_file
from glioma.preprocess.normalise import normalise_files
from glioma.preprocess.pipeline import PatientOutputs, preprocess_patient_files
from glioma.preprocess.qc import plot_qc_file
from glioma.preprocess.register import register_files
from glioma.samples import validate_sheet

SEQUENCES = ("t1w", "t1c", "t2w", "flair")
STEP_RULES = (
    "correct_bias",
    "register_to_t1c",
    "extract_brain",
    "normalise_intensity",
    "crop_roi",
    "plot_qc",
)
COHORT = "SITE-A"


def _settings() -> dict:
    """The repository's preprocess config with small crops, as the rules receive it."""
    settings = yaml.safe_load((REPO / "config.yaml").read_text())["preprocess"]
    settings["crop"]["size"] = 32
    return settings


def _run_steps(raw: dict, roi_on: str, out: PatientOutputs, patient: str, title: str) -> None:
    """The six step rules' calls, one after the other (as workflow_scripts/<rule>.py make them)."""
    cfg = _settings()
    reg, brain = cfg["registration"], cfg["brain_extraction"]
    correct_bias_files({s: raw[s] for s in SEQUENCES}, out.n4, **cfg["n4"], threads=2)
    register_files(
        out.n4,
        raw["roi"],
        roi_on,
        out.registered,
        out.transforms,
        transform=reg["transform"],
        resample_mm=reg["resample_mm"],
        seed=42,
        threads=1,
        patient=patient,
    )
    extract_brain_file(
        out.registered[brain["input"]],
        out.brain,
        method=brain["method"],
        threshold=brain["threshold"],
        hdbet_weights=brain["hdbet_weights"],
        threads=2,
        patient=patient,
    )
    registered = {s: out.registered[s] for s in SEQUENCES}
    normalise_files(
        registered, out.brain, out.registered["roi"], out.preprocessed, **cfg["normalisation"]
    )
    pre = out.preprocessed
    crop_file({s: pre[s] for s in SEQUENCES}, pre["roi"], out.crops, **cfg["crop"])
    plot_qc_file(registered, pre["brain_mask"], pre["roi"], out.qc, title=title)


def _run_fused(raw: dict, roi_on: str, out: PatientOutputs, patient: str, title: str) -> None:
    cfg = _settings()
    preprocess_patient_files(
        raw,
        out,
        roi_on=roi_on,
        n4=cfg["n4"],
        registration=cfg["registration"],
        brain_extraction=cfg["brain_extraction"],
        normalisation=cfg["normalisation"],
        crop=cfg["crop"],
        seed=42,
        threads=2,
        patient=patient,
        title=title,
    )


def _content(path: Path) -> str:
    """Digest of a file's bytes; of an .npz, of its members (np.savez stamps the zip's times)."""
    if path.suffix != ".npz":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    with zipfile.ZipFile(path) as archive:
        return str(
            {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}
        )


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _content(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """One generated 4 mm patient: (raw paths, roi_on, cohort, patient ID)."""
    from glioma.demo import generate_cohort

    root = tmp_path_factory.mktemp("modes_patient")
    sheet = generate_cohort(root / "demo", n_patients=1, spacing=4.0, seed=5, n_cohorts=1)
    row = sheet.iloc[0]
    raw = {c: root / "demo" / row[c] for c in (*SEQUENCES, "roi")}
    return raw, row["roi_on"], row["cohort"], row["patient"]


@pytest.mark.slow
def test_fused_function_writes_the_step_functions_bytes(patient, tmp_path):
    raw, roi_on, cohort, pid = patient
    title = f"{cohort} / {pid}"
    steps, fused = tmp_path / "steps", tmp_path / "fused"
    _run_steps(raw, roi_on, PatientOutputs.under(steps, cohort, pid), pid, title)
    _run_fused(raw, roi_on, PatientOutputs.under(fused, cohort, pid), pid, title)
    expected = _tree(steps)
    # Every file of the contract: 4 N4, 5 registered + 3 transforms, brain, 6 preprocessed,
    # crops and QC.
    assert len(expected) == 21
    assert _tree(fused) == expected


def test_fused_function_names_the_patient_and_stops_at_the_failing_step(patient, tmp_path):
    raw, roi_on, cohort, pid = patient
    empty = tmp_path / "empty_roi.nii.gz"
    roi = sitk.ReadImage(str(raw["roi"]))
    sitk.WriteImage(roi * 0, str(empty))
    out = PatientOutputs.under(tmp_path / "results", cohort, pid)
    with pytest.raises(InputError) as caught:
        _run_fused({**raw, "roi": empty}, roi_on, out, pid, "")
    assert (caught.value.patient, caught.value.column) == (pid, "roi")
    assert caught.value.path == str(empty)
    assert all(Path(p).exists() for p in out.n4.values())  # N4 ran, then registration failed
    assert not Path(out.brain).exists() and not Path(out.crops).exists()


def _plan(log: str) -> Counter:
    """(rule, cohort, patient) counts of the per-patient jobs planned in a Snakemake log."""
    return Counter(
        (rule, wc["cohort"], wc["patient"]) for rule, wc in planned_jobs(log) if "patient" in wc
    )


def _included(sheet: Path) -> set[tuple[str, str]]:
    included = validate_sheet(sheet, missing_sequences="allow").included  # as the demo config
    return set(zip(included["cohort"], included["patient"], strict=True))


def test_dry_run_plans_one_job_per_patient_and_rule(tiny_cohort, tmp_path):
    patients = _included(tiny_cohort)
    assert len(patients) >= 6
    aggregates = {}
    for mode, rules in (("patient", ("preprocess_patient",)), ("step", STEP_RULES)):
        write_config(tmp_path / mode, tiny_cohort, preprocess={"jobs": mode})
        dry = run_snakemake(tmp_path / mode, "-n")
        log = dry.stdout + dry.stderr
        assert dry.returncode == 0, log[-3000:]
        assert _plan(log) == Counter((rule, c, p) for rule in rules for c, p in patients), mode
        aggregates[mode] = sorted(
            (rule, sorted(wc.items())) for rule, wc in planned_jobs(log) if "patient" not in wc
        )
    # Downstream rules read only the crops and QC pictures: the same jobs in both modes.
    assert aggregates["patient"] == aggregates["step"]
    assert ("build_shards", [("cohort", "SITE-A")]) in aggregates["step"]


@pytest.fixture(scope="module")
def patient_mode_run(tiny_cohort, tmp_path_factory):
    """The workflow up to one cohort's shards under preprocess.jobs: patient (two patients, the
    second without T1c)."""
    df = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    keep = sorted(p for c, p in _included(tiny_cohort) if c == COHORT)[1:3]
    assert df.set_index("patient").loc[keep[1], "t1c"] == ""
    sheet = tiny_cohort.parent / "patient_mode.tsv"
    df[(df["cohort"] == COHORT) & df["patient"].isin(keep)].to_csv(sheet, sep="\t", index=False)
    workdir = tmp_path_factory.mktemp("patient_mode")
    write_config(workdir, sheet, preprocess={"jobs": "patient"})
    run = run_snakemake(workdir, f"results/shards/{COHORT}", timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-8000:]
    return workdir, sheet, keep, run.stdout + run.stderr


@pytest.mark.slow
def test_patient_mode_runs_to_the_shards(patient_mode_run):
    workdir, _, keep, log = patient_mode_run
    assert _plan(log) == Counter(("preprocess_patient", COHORT, p) for p in keep)
    results = workdir / "results"
    for pid in keep:
        outputs = PatientOutputs.under(results, COHORT, pid)
        files = [
            *outputs.n4.values(),
            *outputs.registered.values(),
            *Path(outputs.transforms).glob("*.mat"),
            outputs.brain,
            *outputs.preprocessed.values(),
            outputs.crops,
            outputs.qc,
        ]
        assert all(Path(f).stat().st_size > 0 for f in files), pid
        assert (workdir / "logs" / "preprocess_patient" / COHORT / f"{pid}.log").is_file()
        assert (results / "benchmarks" / "preprocess_patient" / COHORT / f"{pid}.tsv").is_file()
    assert not any((workdir / "logs" / rule).exists() for rule in STEP_RULES)
    # The patient without T1c: registered to T1w, T1c's stand-in at every stage, and the brain
    # extracted from T1w as configured.
    gapped = PatientOutputs.under(results, COHORT, keep[1])
    assert sorted(p.name for p in Path(gapped.transforms).glob("*.mat")) == [
        "flair_to_t1w.mat",
        "t2w_to_t1w.mat",
    ]
    for stage in (gapped.n4, gapped.registered, gapped.preprocessed):
        assert is_absent(stage["t1c"]) and not is_absent(stage["t1w"])
    log_text = (workdir / "logs" / "preprocess_patient" / COHORT / f"{keep[1]}.log").read_text()
    assert "no t1c: registering to t1w instead" in log_text
    shards = sorted((results / "shards" / COHORT).glob("part-*.parquet"))
    patients = {
        p for shard in shards for p in pq.read_table(shard, columns=["patient"])[0].to_pylist()
    }
    assert patients == set(keep)


@pytest.mark.slow
def test_patient_mode_reruns_on_a_config_change_only(patient_mode_run):
    workdir, sheet, keep, _ = patient_mode_run
    target = f"results/shards/{COHORT}"
    same = run_snakemake(workdir, "-n", target)
    assert same.returncode == 0, same.stderr[-3000:]
    assert planned_jobs(same.stdout + same.stderr) == []
    # A setting of the last step (crop) reruns the whole patient job, then the shards.
    write_config(workdir, sheet, preprocess={"jobs": "patient", "crop": {"margin_mm": 6.0}})
    changed = run_snakemake(workdir, "-n", target)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert _plan(changed.stdout + changed.stderr) == Counter(
        ("preprocess_patient", COHORT, p) for p in keep
    )

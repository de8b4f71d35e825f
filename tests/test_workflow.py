"""The whole workflow on a tiny generated cohort: outputs, incremental runs, failures."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml
from conftest import (
    ADDED_COHORT,
    FIRST_COHORTS,
    planned_jobs,
    run_snakemake,
    subset_sheet,
    write_config,
)

pytestmark = pytest.mark.slow

PER_PATIENT_RULES = {
    "correct_bias",
    "register_to_t1c",
    "extract_brain",
    "normalise_intensity",
    "crop_roi",
    "plot_qc",
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_state(folder: Path) -> dict[str, tuple[float, str]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime, _digest(p)) for p in folder.rglob("*.*")
    }


def test_every_patient_has_every_output(workflow_run: Path) -> None:
    results = workflow_run / "results"
    sheet = pd.read_csv(
        results / "cohort" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    assert set(sheet["cohort"]) == set(FIRST_COHORTS)
    for row in sheet.itertuples():
        folder = results / "preprocessed" / row.cohort / row.patient
        for name in ("t1w", "t1c", "t2w", "flair", "brain_mask", "roi"):
            assert (folder / f"{name}.nii.gz").stat().st_size > 0
        crop = np.load(results / "crops" / row.cohort / f"{row.patient}.npz")
        assert crop["images"].dtype == np.float16 and crop["images"].shape[1:] == (4, 32, 32)
        assert (results / "qc" / row.cohort / f"{row.patient}.png").stat().st_size > 0
    for cohort in FIRST_COHORTS:
        assert list((results / "shards" / cohort).glob("part-*.parquet"))
    splits = pd.read_csv(results / "splits.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert set(splits["patient"]) == set(sheet["patient"])


#: The tiny cohort's patients that lack a sequence (conftest.tiny_cohort): the first two are in
#: the shared run, the third in the cohort added later.
LACKING = {"DEMO-A-003": "t1c", "DEMO-B-001": "flair", "DEMO-C-001": "t1w"}


def _check_lacking_patient(results: Path, cohort: str, patient: str, lacking: str) -> None:
    """One patient lacking a sequence: one grid for every output, its stand-in at every stage,
    a NaN channel in its crops, and a prediction."""
    from glioma.io import is_absent
    from glioma.preprocess.register import same_grid

    grid = sitk.ReadImage(str(results / "registered" / cohort / patient / "roi.nii.gz"))
    for stage in ("registered", "preprocessed"):
        for name in ("t1w", "t1c", "t2w", "flair", "roi"):
            path = results / stage / cohort / patient / f"{name}.nii.gz"
            assert same_grid(sitk.ReadImage(str(path)), grid), (patient, stage, name)
            assert is_absent(path) == (name == lacking), (patient, stage, name)
    assert is_absent(results / "n4" / cohort / patient / f"{lacking}.nii.gz")
    images = np.load(results / "crops" / cohort / f"{patient}.npz")["images"]
    absent = [bool(np.isnan(images[:, c]).all()) for c in range(4)]
    assert absent == [s == lacking for s in ("t1w", "t1c", "t2w", "flair")], patient
    assert not np.isnan(images[:, [s != lacking for s in ("t1w", "t1c", "t2w", "flair")]]).any()
    predictions = pd.read_csv(results / "predictions" / "predictions.csv")
    row = predictions[(predictions["cohort"] == cohort) & (predictions["patient"] == patient)]
    assert len(row) == 1 and row["n_slices"].iloc[0] == len(images)


def test_patients_lacking_a_sequence_are_kept_on_one_grid_and_predicted(
    workflow_run: Path,
) -> None:
    results = workflow_run / "results"
    sheet = pd.read_csv(
        results / "cohort" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False
    ).set_index("patient")
    splits = pd.read_csv(results / "splits.tsv", sep="\t", dtype=str, keep_default_na=False)
    in_run = {p: s for p, s in LACKING.items() if p in sheet.index}
    assert len(in_run) == 2
    metrics = json.loads((results / "metrics" / "metrics.json").read_text())
    for patient, lacking in in_run.items():
        cohort = sheet.loc[patient, "cohort"]
        assert sheet.loc[patient, lacking] == ""  # listed with what it lacked
        _check_lacking_patient(results, cohort, patient, lacking)
        # Trained on or scored like anyone else: its pattern has a row in its split.
        split = splits.set_index("patient").loc[patient, "split"]
        patterns = {row["missing"]: row for row in metrics["availability"][split]}
        assert patterns[lacking]["n_patients"] >= 1
    # A patient without T1c lands on its T1w grid (preprocess.registration.reference).
    transforms = results / "registered" / "SITE-A" / "DEMO-A-003" / "transforms"
    assert sorted(p.name for p in transforms.glob("*.mat")) == [
        "flair_to_t1w.mat",
        "t2w_to_t1w.mat",
    ]
    counts = sum(row["n_patients"] for rows in metrics["availability"].values() for row in rows)
    assert counts == len(splits)
    table = pd.read_csv(results / "metrics" / "table_availability.tsv", sep="\t")
    assert table["n_patients"].sum() == counts
    ablation = pd.read_csv(results / "metrics" / "ablation.tsv", sep="\t")
    assert list(ablation["sequence"]) == ["t1w", "t1c", "t2w", "flair"]
    assert (ablation["n_patients"] == (splits["split"] == "test").sum()).all()
    html = (results / "report.html").read_text()
    assert "Sequence ablation" in html


def test_with_exclude_the_same_patients_are_excluded_with_their_reason(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    write_config(tmp_path, tiny_cohort, inclusion={"missing_sequences": "exclude"})
    run = run_snakemake(tmp_path, "results/cohort/exclusions.tsv")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    exclusions = pd.read_csv(tmp_path / "results" / "cohort" / "exclusions.tsv", sep="\t")
    reasons = dict(zip(exclusions["patient"], exclusions["reason"], strict=True))
    assert {p: reasons.get(p) for p in LACKING} == {p: f"missing {s}" for p, s in LACKING.items()}
    assert set(exclusions["scope"][exclusions["patient"].isin(LACKING)]) == {"all"}
    included = pd.read_csv(tmp_path / "results" / "cohort" / "samples.tsv", sep="\t")
    assert not set(included["patient"]) & set(LACKING)


def test_metrics_and_predictions(workflow_run: Path) -> None:
    results = workflow_run / "results"
    metrics = json.loads((results / "metrics" / "metrics.json").read_text())
    for level in ("patient", "slice"):
        for split in ("train", "val", "test"):
            entry = metrics[level][split]
            assert {"n", "accuracy", "macro_auc", "classes"} <= set(entry)
            assert set(entry["classes"]) == {"IDHwt", "IDHmut-codel", "IDHmut-intact"}
    # The baseline is evaluated by the same code, over the same patients.
    for level in ("patient", "slice"):
        for split in ("train", "val", "test"):
            baseline = metrics["baseline"][level][split]
            assert set(baseline) == set(metrics[level][split])
            assert baseline["n"] == metrics[level][split]["n"]
    predictions = pd.read_csv(results / "predictions" / "predictions.csv")
    sheet = pd.read_csv(results / "cohort" / "samples.tsv", sep="\t")
    assert len(predictions) == len(sheet)
    probabilities = predictions[["p_IDHwt", "p_IDHmut-codel", "p_IDHmut-intact"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_training_settings_retrain_and_run_settings_do_not(
    workflow_run: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(workflow_run, workdir, symlinks=True)
    config_path = workdir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())

    def planned(**model: object) -> set[str]:
        changed = {**config, "model": {**config["model"], **model}}
        config_path.write_text(yaml.safe_dump(changed, sort_keys=False))
        dry = run_snakemake(workdir, "--dry-run")
        assert dry.returncode == 0, dry.stderr[-4000:]
        return {rule for rule, _ in planned_jobs(dry.stdout + dry.stderr)}

    assert not planned() & {"train_classifier", "predict_slices", "render_report"}
    # Settings that change the trained model retrain it, and what depends on it.
    assert {"train_classifier", "render_report"} <= planned(lr=config["model"]["lr"] * 2)
    assert "train_classifier" in planned(patient_weighting="slices")
    # Settings that only change how training runs do not.
    assert "train_classifier" not in planned(num_workers=3, processes=1)
    # The report shows what the model was trained with: results/model/config.yaml.
    trained = yaml.safe_load((workdir / "results" / "model" / "config.yaml").read_text())
    assert trained["model"] == config["model"]


def test_adding_a_cohort_processes_only_its_patients(
    workflow_run: Path, tiny_cohort: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "run"
    shutil.copytree(workflow_run, workdir, symlinks=True)
    before = _tree_state(workdir / "results" / "shards")
    write_config(workdir, tiny_cohort)

    dry = run_snakemake(workdir, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-4000:]
    jobs = planned_jobs(dry.stdout + dry.stderr)
    per_patient = [(rule, wc) for rule, wc in jobs if rule in PER_PATIENT_RULES]
    assert per_patient, "no per-patient job planned for the new cohort"
    assert {wc["cohort"] for _, wc in per_patient} == {ADDED_COHORT}
    shard_jobs = [wc["cohort"] for rule, wc in jobs if rule == "build_shards"]
    assert shard_jobs == [ADDED_COHORT]
    # Asking for the split manifest and the new cohort's shards (as the SLURM test does) must
    # plan them too while the validated sheet is to be rewritten: with the sheet as an ancient()
    # input of build_shards, Snakemake 9.27 left the new cohort's jobs out of such a DAG.
    only = run_snakemake(
        workdir, "--dry-run", "results/splits.tsv", f"results/shards/{ADDED_COHORT}"
    )
    only_jobs = planned_jobs(only.stdout + only.stderr)
    assert ("build_shards", {"cohort": ADDED_COHORT}) in only_jobs, only.stdout[-3000:]
    assert "check_samples" in {rule for rule, _ in only_jobs}

    run = run_snakemake(workdir)
    assert run.returncode == 0, (run.stdout + run.stderr)[-8000:]
    after = _tree_state(workdir / "results" / "shards")
    for name, state in before.items():
        assert after[name] == state, f"existing shard {name} was rewritten"
    assert any(name.startswith(ADDED_COHORT) for name in after)
    # The new cohort's patient without T1w: kept, on one grid, predicted.
    _check_lacking_patient(workdir / "results", ADDED_COHORT, "DEMO-C-001", "t1w")


def test_rule_scripts_import_this_workflows_library(tiny_cohort: Path, tmp_path: Path) -> None:
    """Another ``glioma`` earlier on PYTHONPATH (an old clone's editable install) is not used."""
    shadow = tmp_path / "shadow" / "glioma"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the shadow copy was imported')\n")
    workdir = tmp_path / "run"
    write_config(workdir, tiny_cohort)
    env = {"PYTHONPATH": str(shadow.parent)}
    run = run_snakemake(workdir, "results/cohort/samples.tsv", env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert (workdir / "results" / "cohort" / "samples.tsv").is_file()


# --- cross-validation (split.folds: 3) on the same preprocessed patients ------------------------


@pytest.fixture(scope="module")
def cv_run(workflow_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny run again with 3-fold cross-validation; returns the workdir and the run's log."""
    workdir = tmp_path_factory.mktemp("cv_run") / "run"
    shutil.copytree(workflow_run, workdir, symlinks=True)
    config_path = workdir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["split"]["folds"] = 3
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = run_snakemake(workdir)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]
    return workdir, log


def _read(path: Path, sep: str = "\t") -> pd.DataFrame:
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


def test_cross_validation_trains_one_model_per_fold(cv_run: tuple[Path, str]) -> None:
    workdir, log = cv_run
    jobs = planned_jobs(log)
    assert sorted(wc["fold"] for rule, wc in jobs if rule == "train_fold") == ["0", "1", "2"]
    assert sorted(wc["fold"] for rule, wc in jobs if rule == "predict_fold") == ["0", "1", "2"]
    ran = {rule for rule, _ in jobs}
    # Preprocessing and shards are reused; the single-split model is not trained again.
    assert not ran & (PER_PATIENT_RULES | {"build_shards", "train_classifier"})
    for fold in ("0", "1", "2"):
        assert (workdir / "results" / "model" / "folds" / fold / "best.pt").stat().st_size > 0


def test_every_development_patient_is_predicted_out_of_fold(cv_run: tuple[Path, str]) -> None:
    results = cv_run[0] / "results"
    splits = _read(results / "splits.tsv")
    predictions = _read(results / "predictions" / "predictions.csv", sep=",")
    assert len(predictions) == len(splits)
    merged = splits.merge(predictions, on=["cohort", "patient"], suffixes=("", "_predicted"))
    development = merged[merged["split"] == "cv"]
    assert len(development) and set(development["fold"]) == {"0", "1", "2"}
    assert (development["model"] == "fold-" + development["fold"]).all()
    assert (development["n_models"] == "1").all()
    others = merged[merged["split"] != "cv"]
    assert len(others) and (others["model"] == "ensemble").all()
    assert (others["n_models"] == "3").all()
    manifests = {
        fold: _read(results / "model" / "folds" / fold / "splits.tsv") for fold in ("0", "1", "2")
    }
    for row in merged.itertuples(index=False):
        for fold, manifest in manifests.items():
            listed = manifest[
                (manifest["cohort"] == row.cohort) & (manifest["patient"] == row.patient)
            ]
            if row.model == f"fold-{fold}":
                # The model that predicts a patient held it out: no training, no early stopping.
                assert list(listed["split"]) == ["test"], (row.patient, fold)
            elif row.split != "cv":
                # Test and unlabelled patients are in no fold's training data.
                assert listed.empty, (row.patient, fold)


def test_cross_validation_metrics_and_report(cv_run: tuple[Path, str]) -> None:
    results = cv_run[0] / "results"
    metrics = json.loads((results / "metrics" / "metrics.json").read_text())
    assert metrics["splits"] == ["cv", "test"]
    splits = _read(results / "splits.tsv")
    assert metrics["patient"]["cv"]["n"] == int((splits["split"] == "cv").sum())
    assert metrics["cv"]["n_folds"] == 3 and len(metrics["cv"]["folds"]) == 3
    assert metrics["baseline"]["patient"]["cv"]["n"] == metrics["patient"]["cv"]["n"]
    assert metrics["calibration"]["fitted_on"] == "cv"
    assert set(metrics["uncertainty"]["splits"]) == {"cv", "test"}
    for name in ("folds.png", "calibration_cv.png", "uncertainty_test.png", "table_folds.tsv"):
        assert (results / "metrics" / name).stat().st_size > 0
    page = (results / "report.html").read_text(encoding="utf-8")
    for text in ("Cross-validation", "out-of-fold", "Calibration", "review"):
        assert text in page, text


def test_adding_a_cohort_moves_no_patient_between_folds(tiny_cohort: Path, tmp_path: Path) -> None:
    split = {"folds": 3, "strata": "cohort_class"}
    first = tmp_path / "first"
    write_config(first, subset_sheet(tiny_cohort, FIRST_COHORTS, "two.tsv"), split=split)
    every = tmp_path / "every"
    write_config(every, tiny_cohort, split=split)
    manifests = []
    for workdir in (first, every):
        run = run_snakemake(workdir, "results/splits.tsv")
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        manifests.append(_read(workdir / "results" / "splits.tsv"))
    before, after = manifests
    merged = before.merge(after, on=["cohort", "patient"], suffixes=("_before", ""))
    assert len(merged) == len(before)
    assert (merged["split_before"] == merged["split"]).all()
    assert (merged["fold_before"] == merged["fold"]).all()
    assert set(after["cohort"]) - set(before["cohort"]) == {ADDED_COHORT}

"""Train once, predict elsewhere: a prediction-only run with the training run's model bundle.

The training run is the shared tiny run (cohorts SITE-A and SITE-B). In a fresh folder, a new
sheet holds the third cohort's patients (one given as DICOM series, one unlabelled) and one
SITE-A patient the training run also predicted; the run there must train nothing, predict and
explain every patient, write a page per patient, and give the shared patient the training
run's probabilities.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml
from cohort_fixtures import write_dicom_series
from conftest import ADDED_COHORT, REPO, planned_jobs, run_snakemake, write_config

from glioma.constants import SEQUENCES
from glioma.io import read_image
from glioma.model.saliency import METHODS

PROBS = ["p_IDHwt", "p_IDHmut-codel", "p_IDHmut-intact"]
TRAINING_RULES = {"train_classifier", "train_fold", "fit_baseline", "make_splits", "write_bundle"}


def _as_dicom(sheet: pd.DataFrame, row: int, folder: Path) -> None:
    """Rewrite one patient's four sequences as DICOM series folders (int16, as scanners do)."""
    for k, sequence in enumerate(SEQUENCES):
        image = read_image(Path(sheet.at[row, sequence]))
        series = folder / sequence
        write_dicom_series(sitk.Cast(sitk.Round(image), sitk.sitkInt16), series, series=k + 1)
        sheet.at[row, sequence] = str(series)


def _new_sheet(tiny_cohort: Path, out: Path) -> tuple[Path, str, str, str]:
    """The third cohort (one patient without T1w, one DICOM, one unlabelled) plus one SITE-A
    patient."""
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    for column in (*SEQUENCES, "roi"):
        sheet[column] = [
            str((tiny_cohort.parent / p).resolve()) if p else "" for p in sheet[column]
        ]
    shared = sheet[sheet["cohort"] == "SITE-A"].head(1)
    # The third cohort's first patient lacks its T1w (conftest.tiny_cohort): the bundle
    # predicts it too; the second is given as DICOM series, the third is unlabelled.
    new = sheet[sheet["cohort"] == ADDED_COHORT].reset_index(drop=True)
    assert new.at[0, "t1w"] == ""
    dicom, unlabelled = new.at[1, "patient"], new.at[2, "patient"]
    _as_dicom(new, 1, out / "dicom" / dicom)
    new.loc[2, ["idh", "codeletion"]] = ""
    table = pd.concat([new, shared], ignore_index=True)
    path = out / "new_patients.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path, dicom, unlabelled, str(shared["patient"].iloc[0])


@pytest.fixture(scope="module")
def predicted(
    workflow_run: Path, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """The prediction-only run: its folder, log, the copied bundle and the sheet's patients."""
    root = tmp_path_factory.mktemp("predict_bundle")
    bundle = root / "copied_bundle"
    shutil.copytree(workflow_run / "results" / "bundle", bundle)
    sheet, dicom, unlabelled, shared = _new_sheet(tiny_cohort, root)
    workdir = root / "run"
    write_config(workdir, sheet, predict={"bundle": str(bundle)})
    run = run_snakemake(workdir)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]
    return {
        "workdir": workdir,
        "log": log,
        "bundle": bundle,
        "sheet": sheet,
        "dicom": dicom,
        "unlabelled": unlabelled,
        "shared": shared,
    }


def test_no_training_job_runs(predicted: dict) -> None:
    rules = {rule for rule, _ in planned_jobs(predicted["log"])}
    assert "predict_with_bundle" in rules
    assert not rules & TRAINING_RULES
    assert not (predicted["workdir"] / "results" / "model").exists()


def test_every_patient_gets_prediction_saliency_and_page(predicted: dict) -> None:
    results = predicted["workdir"] / "results"
    sheet = pd.read_csv(predicted["sheet"], sep="\t", dtype=str, keep_default_na=False)
    predictions = pd.read_csv(results / "predictions" / "predictions.csv", dtype=str)
    assert sorted(predictions["patient"]) == sorted(sheet["patient"])
    assert set(predictions["model"]) == {"single"}
    by_patient = predictions.set_index("patient")
    assert by_patient.at[predicted["unlabelled"], "split"] == "unlabelled"
    assert by_patient.at[predicted["dicom"], "split"] == "external"
    for cohort, patient in zip(sheet["cohort"], sheet["patient"], strict=True):
        assert (results / "saliency" / cohort / f"{patient}.png").stat().st_size > 0
        page = (results / "patients" / cohort / f"{patient}.html").read_text()
        assert patient in page and "not a medical device" in page.lower()
    index = json.loads((results / "saliency" / ADDED_COHORT / "index.json").read_text())
    # resnet10t's last stage is 1x1 at the tiny run's crop size: "auto" may pick occlusion
    assert index["patients"][predicted["dicom"]]["method"] in METHODS


def test_shared_patient_is_predicted_as_in_the_training_run(
    predicted: dict, workflow_run: Path
) -> None:
    def probabilities(workdir: Path) -> np.ndarray:
        table = pd.read_csv(workdir / "results" / "predictions" / "predictions.csv")
        return table.set_index("patient").loc[predicted["shared"], PROBS].to_numpy(float)

    np.testing.assert_allclose(
        probabilities(predicted["workdir"]), probabilities(workflow_run), atol=1e-4
    )


def test_labelled_new_patients_are_scored_as_an_external_test(predicted: dict) -> None:
    results = predicted["workdir"] / "results"
    metrics = json.loads((results / "metrics" / "metrics.json").read_text())
    assert metrics["splits"] == ["external"]
    assert metrics["patient"]["external"]["n"] == 4  # 5 patients, one unlabelled
    assert metrics["calibration"]["fitted_on"] == "bundle"
    assert "baseline" not in metrics
    report = (results / "report.html").read_text()
    assert "This run trained nothing" in report


def _dry_run(predicted: dict, tmp_path: Path, bundle: Path, **overrides) -> str:
    """A dry run of the prediction-only workflow in a new folder; returns its log (it fails)."""
    workdir = tmp_path / "dry"
    write_config(workdir, predicted["sheet"], predict={"bundle": str(bundle)}, **overrides)
    run = run_snakemake(workdir, "-n")
    assert run.returncode != 0
    return run.stdout + run.stderr


def test_tampered_bundle_is_refused_naming_the_file(predicted: dict, tmp_path: Path) -> None:
    bundle = tmp_path / "tampered"
    shutil.copytree(predicted["bundle"], bundle)
    weights = bundle / "models" / "single" / "weights.pt"
    record = torch.load(weights, weights_only=True)
    name = next(iter(record["model"]))
    record["model"][name] = record["model"][name] * 2 + 1
    torch.save(record, weights)
    log = _dry_run(predicted, tmp_path, bundle)
    assert str(weights) in log and "differs from the checksum" in log


def test_conflicting_crop_size_is_refused_naming_the_key(predicted: dict, tmp_path: Path) -> None:
    trained = yaml.safe_load((predicted["bundle"] / "config.yaml").read_text())
    size = trained["preprocess"]["crop"]["size"]
    log = _dry_run(
        predicted, tmp_path, predicted["bundle"], preprocess={"crop": {"size": size * 2}}
    )
    assert f"preprocess.crop.size is {size * 2}" in log and f"trained with {size}" in log


def test_a_folder_without_a_config_takes_the_repositorys(predicted: dict, tmp_path: Path) -> None:
    """The README's way to predict beside a training run: --directory, no config.yaml there.
    The repository's real-cohort defaults are not explicit settings: the bundle's replace them."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(tmp_path / "new_run"), "--cores", "1", "-n",
        "--config", f"samples={predicted['sheet']}", f"predict={{bundle: {predicted['bundle']}}}",
    ]  # fmt: skip
    (tmp_path / "new_run").mkdir()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "predict_with_bundle" in log and "train_classifier" not in log

"""Fold ensemble: out-of-fold rows from their own fold's model, the folds' mean for the rest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glioma.constants import CLASSES
from glioma.errors import InputError
from glioma.model.ensemble import combine_folds
from glioma.model.evaluate import evaluate_predictions
from glioma.model.predict import PREDICTION_COLUMNS, PROB_COLUMNS

#: Development patients (split cv) of folds 0 and 1, a test and an unlabelled patient.
MANIFEST = pd.DataFrame(
    {
        "patient": ["P0", "P1", "P2", "P3", "T0", "U0"],
        "cohort": "A",
        "class": ["IDHwt", "IDHmut-codel", "IDHmut-intact", "IDHwt", "IDHwt", ""],
        "split": ["cv", "cv", "cv", "cv", "test", "unlabelled"],
        "fold": ["0", "0", "1", "1", "", ""],
    }
)


def _fold_slices(
    probs_of: dict[str, list[float]], manifest: pd.DataFrame = MANIFEST, slices: int = 2
) -> pd.DataFrame:
    """A fold model's slice table: ``slices`` identical slices per patient of ``manifest``."""
    rows = []
    listed_rows = manifest.set_index("patient")
    for patient, probs in probs_of.items():
        listed = listed_rows.loc[patient]
        for index in range(slices):
            row = {
                "cohort": "A",
                "patient": patient,
                "slice_index": index,
                "class": listed["class"],
                "split": listed["split"],
            }
            rows.append(row | dict(zip(PROB_COLUMNS, probs, strict=True)))
    return pd.DataFrame(rows)


def _two_folds() -> dict[str, pd.DataFrame]:
    patients = MANIFEST["patient"].tolist()
    fold0 = {p: [0.6, 0.3, 0.1] for p in patients}
    fold1 = {p: [0.2, 0.3, 0.5] for p in patients}
    fold0["P2"], fold1["P0"] = [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]
    return {"0": _fold_slices(fold0), "1": _fold_slices(fold1)}


def test_out_of_fold_rows_come_from_their_own_fold_and_the_rest_from_the_mean() -> None:
    slices, patients = combine_folds(_two_folds(), MANIFEST, review_threshold=0.6)
    assert list(patients.columns) == list(PREDICTION_COLUMNS)
    by_patient = patients.set_index("patient")
    # P0 is held out by fold 0, so fold 0 predicts it (fold 1's 1.0 would be a leak).
    assert by_patient.loc["P0", "model"] == "fold-0"
    np.testing.assert_allclose(
        by_patient.loc["P0", list(PROB_COLUMNS)].astype(float), [0.6, 0.3, 0.1]
    )
    assert by_patient.loc["P2", "model"] == "fold-1"
    np.testing.assert_allclose(
        by_patient.loc["P2", list(PROB_COLUMNS)].astype(float), [0.2, 0.3, 0.5]
    )
    for patient in ("T0", "U0"):
        assert by_patient.loc[patient, "model"] == "ensemble"
        assert by_patient.loc[patient, "n_models"] == 2
        np.testing.assert_allclose(
            by_patient.loc[patient, list(PROB_COLUMNS)].astype(float), [0.4, 0.3, 0.3]
        )
    # Ensemble rows: SD of the predicted class (IDHwt: 0.6 and 0.2) and disagreement.
    assert by_patient.loc["T0", "sd"] == pytest.approx(0.2)
    assert by_patient.loc["T0", "mutual_information"] > 0
    # Out-of-fold rows come from one model: no spread, but an entropy.
    assert math.isnan(by_patient.loc["P0", "sd"])
    assert by_patient.loc["P0", "n_models"] == 1
    entropy = -sum(p * math.log(p) for p in (0.6, 0.3, 0.1))
    assert by_patient.loc["P0", "entropy"] == pytest.approx(entropy)
    assert by_patient.loc["P0", "normalised_entropy"] == pytest.approx(entropy / math.log(3))
    assert bool(by_patient.loc["T0", "review"])  # (0.4, 0.3, 0.3) is near a uniform guess
    # The slice table carries the same choice per slice.
    assert set(slices.loc[slices["patient"] == "P0", "model"]) == {"fold-0"}
    assert len(slices) == 2 * len(MANIFEST)


def test_folds_that_predicted_other_slices_are_refused() -> None:
    folds = _two_folds()
    folds["1"] = folds["1"].iloc[:-1]
    with pytest.raises(InputError, match="other slices"):
        combine_folds(folds, MANIFEST, review_threshold=0.6, paths={"1": "fold1.parquet"})


def test_a_fold_without_predictions_is_refused() -> None:
    folds = _two_folds()
    del folds["1"]
    with pytest.raises(InputError, match=r"\['1'\]"):
        combine_folds(folds, MANIFEST, review_threshold=0.6)


def _cv_run(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, Path]:
    """A cross-validated run's slices, predictions and manifest: 3 folds of 12 patients."""
    rows = []
    for k in range(48):
        name = CLASSES[k % 3]
        split, fold = ("test", "") if k >= 36 else ("cv", str((k // 3) % 3))
        rows.append({"patient": f"P{k:02d}", "cohort": "A", "class": name, "split": split})
        rows[-1]["fold"] = fold
    manifest = pd.DataFrame(rows)
    folds = {}
    for fold in ("0", "1", "2"):
        probs = {}
        for row in rows:
            logits = rng.normal(0, 1, 3)
            logits[CLASSES.index(row["class"])] += 2.5
            probs[row["patient"]] = list(np.exp(logits) / np.exp(logits).sum())
        folds[fold] = probs
    tables = {fold: _fold_slices(p, manifest, slices=3) for fold, p in folds.items()}
    slices, patients = combine_folds(tables, manifest, review_threshold=0.6)
    paths = tmp_path / "slices.parquet", tmp_path / "predictions.csv", tmp_path / "splits.tsv"
    slices.to_parquet(paths[0], index=False)
    patients.to_csv(paths[1], index=False)
    manifest.to_csv(paths[2], sep="\t", index=False)
    return paths


def test_evaluation_of_a_cross_validated_run(tmp_path: Path) -> None:
    slices, predictions, splits = _cv_run(tmp_path, np.random.default_rng(0))
    out = tmp_path / "metrics"
    figures = {
        kind: {s: out / f"{kind}_{s}.png" for s in ("cv", "test")}
        for kind in ("roc", "confusion", "calibration", "uncertainty")
    }
    figures["folds"] = out / "folds.png"
    document = evaluate_predictions(
        slices,
        splits,
        out / "metrics.json",
        {"patient": out / "p.tsv", "slice": out / "s.tsv", "folds": out / "folds.tsv"},
        figures,
        n_boot=20,
        seed=0,
        predictions_path=predictions,
        review_threshold=0.6,
        calibration_bins=5,
    )
    assert document["splits"] == ["cv", "test"]
    assert "train" not in document["patient"]
    assert document["patient"]["cv"]["n"] == 36 and document["patient"]["test"]["n"] == 12
    cv = document["cv"]
    assert cv["scheme"] == "k-fold" and [f["fold"] for f in cv["folds"]] == ["0", "1", "2"]
    assert [f["n"] for f in cv["folds"]] == [12, 12, 12]
    aucs = [f["macro_auc"] for f in cv["folds"]]
    assert cv["summary"]["macro_auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert cv["summary"]["macro_auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    calibration = document["calibration"]
    assert calibration["fitted_on"] == "cv"
    assert (
        calibration["splits"]["cv"]["in_sample"] and not calibration["splits"]["test"]["in_sample"]
    )
    assert set(calibration["splits"]["test"]["raw"]) == {*CLASSES, "top_label", "nll"}
    review = document["uncertainty"]["splits"]["test"]
    assert review["n_flagged"] + review["n_unflagged"] == 12
    table = pd.read_csv(out / "folds.tsv", sep="\t")
    assert list(table["fold"].astype(str)) == ["0", "1", "2", "mean", "sd"]
    for paths in figures.values():
        for path in paths.values() if isinstance(paths, dict) else [paths]:
            assert path.stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["cv"]["n_folds"] == 3


def test_temperature_is_never_fitted_on_test(tmp_path: Path) -> None:
    from glioma.model.assessment import calibration_section

    with pytest.raises(ValueError, match="test"):
        calibration_section(pd.DataFrame(), ["test"], fit_on="test", n_bins=5)

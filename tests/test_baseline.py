"""The logistic-regression baseline: features, fit, tables, and its evaluation by the same code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_model_pipeline import COHORTS, make_config, shard_table

from glioma.constants import CLASSES
from glioma.dataset.loader import iter_patient_batches
from glioma.model.baseline import (
    FEATURE_NAMES,
    fit_baseline,
    fit_model,
    predict_proba,
    slice_features,
)
from glioma.model.evaluate import evaluate_predictions
from glioma.model.metrics import macro_auc
from glioma.model.predict import PATIENT_COLUMNS, PROB_COLUMNS, SLICE_COLUMNS
from glioma.model.summary import summary_lines
from glioma.report.tables import BASELINE_FEATURES


def test_slice_features_match_hand_computed_values() -> None:
    bright_centre = np.zeros((4, 4))
    bright_centre[1:3, 1:3] = 4.0
    ramp = np.arange(16.0).reshape(4, 4)
    images = np.stack([[bright_centre, ramp], [-bright_centre, -ramp]]).astype(np.float32)
    features = slice_features(images)
    assert features.shape == (2, 12) and features.dtype == np.float64
    # mean, SD, p10, p90, centre mean, fraction above 2; channel by channel
    np.testing.assert_allclose(
        features[0],
        [1.0, np.sqrt(3.0), 0.0, 4.0, 4.0, 0.25, 7.5, np.sqrt(21.25), 1.5, 13.5, 7.5, 13 / 16],
    )
    np.testing.assert_allclose(
        features[1],
        [-1.0, np.sqrt(3.0), -4.0, 0.0, -4.0, 0.0, -7.5, np.sqrt(21.25), -13.5, -1.5, -7.5, 0.0],
    )


def test_central_square_is_the_central_half() -> None:
    image = np.zeros((2, 1, 64, 64))
    image[:, 0, 16:48, 16:48] = 1.0  # exactly the central 32x32
    image[1, 0, 17:47, 17:47] = 0.0  # only its outer ring: a smaller square would miss it
    features = slice_features(image)
    assert features[0, 4] == 1.0 and features[0, 0] == 0.25
    assert features[1, 4] == pytest.approx(124 / 1024)
    with pytest.raises(ValueError, match="N, C, H, W"):
        slice_features(image[0])


def test_feature_names() -> None:
    assert len(FEATURE_NAMES) == 24 == BASELINE_FEATURES  # the report's caption says 24
    assert FEATURE_NAMES[:6] == (
        "t1w_mean",
        "t1w_sd",
        "t1w_p10",
        "t1w_p90",
        "t1w_centre_mean",
        "t1w_above2",
    )
    assert FEATURE_NAMES[6] == "t1c_mean" and FEATURE_NAMES[-1] == "flair_above2"


def test_class_absent_from_training_gets_probability_zero() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 2], 50)  # no IDHmut-codel
    features = rng.normal(size=(100, 3)) + 3.0 * (labels == 2)[:, None]
    model = fit_model(features, labels, c=1.0, max_iter=200, seed=0)
    probs = predict_proba(model, features)
    assert probs.shape == (100, 3)
    assert (probs[:, 1] == 0).all()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    # columns follow CLASSES: class-2 rows are predicted IDHmut-intact, not IDHmut-codel
    assert (probs.argmax(1) == labels).mean() > 0.95
    assert predict_proba(model, features[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="two classes"):
        fit_model(features[:50], labels[:50], c=1.0, max_iter=200, seed=0)


def test_labels_independent_of_images_stay_near_chance() -> None:
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(3000, 24)), rng.integers(0, 3, 3000)
    model = fit_model(features[:2000], labels[:2000], c=1.0, max_iter=1000, seed=0)
    held_out = macro_auc(labels[2000:], predict_proba(model, features[2000:]))
    assert abs(held_out - 0.5) < 0.05


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict:
    """Two cohorts x 3 classes x 4 patients, one unlabelled and one unlisted patient each."""
    root = tmp_path_factory.mktemp("baseline_data")
    rng = np.random.default_rng(0)
    manifest = []
    for cohort in COHORTS:
        patients = [("new1", ""), ("gone1", "")]  # gone1 is in the shards, not in the manifest
        manifest.append(("new1", cohort, "", "unlabelled"))
        for name in CLASSES:
            for i, split in enumerate(["train", "train", "val", "test"]):
                patients.append((f"{name.replace('-', '')}{i}", name))
                manifest.append((patients[-1][0], cohort, name, split))
        folder = root / "shards" / cohort
        folder.mkdir(parents=True)
        pq.write_table(shard_table(cohort, sorted(patients), rng), folder / "part-00000.parquet")
    splits = pd.DataFrame(manifest, columns=["patient", "cohort", "class", "split"])
    splits.to_csv(root / "splits.tsv", sep="\t", index=False)
    return {"root": root, "shards": [root / "shards" / c for c in COHORTS], "splits": splits}


def run_baseline(shards: dict, out: Path, splits: pd.DataFrame | None = None) -> dict:
    """Fit the baseline into ``out`` (with ``splits`` instead of the fixture's, if given)."""
    out.mkdir(parents=True, exist_ok=True)
    (splits if splits is not None else shards["splits"]).to_csv(
        out / "splits.tsv", sep="\t", index=False
    )
    paths = {name: out / name for name in ("slices.parquet", "predictions.csv", "model.json")}
    fit_baseline(
        shards["shards"],
        out / "splits.tsv",
        paths["slices.parquet"],
        paths["predictions.csv"],
        config=make_config(),
        model_out=paths["model.json"],
    )
    return {"splits": out / "splits.tsv", **paths}


@pytest.fixture(scope="module")
def fitted(shards, tmp_path_factory) -> dict:
    return run_baseline(shards, tmp_path_factory.mktemp("baseline"))


def test_tables_have_predict_columns_and_every_patient(fitted, shards) -> None:
    slices = pd.read_parquet(fitted["slices.parquet"])
    patients = pd.read_csv(fitted["predictions.csv"], keep_default_na=False)
    assert tuple(slices.columns) == SLICE_COLUMNS
    assert tuple(patients.columns) == PATIENT_COLUMNS
    in_shards = set()
    for folder in shards["shards"]:
        table = pq.read_table(folder / "part-00000.parquet", columns=["cohort", "patient"])
        in_shards |= set(
            zip(table["cohort"].to_pylist(), table["patient"].to_pylist(), strict=True)
        )
    assert set(zip(patients["cohort"], patients["patient"], strict=True)) == in_shards
    assert len(patients) == len(shards["splits"]) + len(COHORTS)
    split_of = patients.set_index(["cohort", "patient"])["split"]
    assert split_of[("SITE-A", "new1")] == "unlabelled"
    assert split_of[("SITE-A", "gone1")] == "excluded"
    np.testing.assert_allclose(slices[list(PROB_COLUMNS)].sum(1), 1, atol=1e-5)
    means = slices.groupby(["cohort", "patient"])[list(PROB_COLUMNS)].mean()
    indexed = patients.set_index(["cohort", "patient"])
    np.testing.assert_allclose(indexed.loc[means.index, list(PROB_COLUMNS)], means, atol=1e-6)


def test_baseline_separates_classes_that_differ_in_intensity(fitted) -> None:
    patients = pd.read_csv(fitted["predictions.csv"], keep_default_na=False)
    splits = pd.read_csv(fitted["splits"], sep="\t", keep_default_na=False)
    merged = patients.merge(splits, on=["cohort", "patient"], suffixes=("", "_m"))
    for split in ("train", "test"):
        part = merged[merged["split"] == split]
        labels = part["class"].map(CLASSES.index).to_numpy()
        assert macro_auc(labels, part[list(PROB_COLUMNS)].to_numpy()) > 0.95, split


def test_model_json_reproduces_the_probabilities(fitted, shards) -> None:
    model = json.loads(fitted["model.json"].read_text())
    assert model["features"] == list(FEATURE_NAMES) and model["classes"] == list(CLASSES)
    assert np.shape(model["coef"]) == (3, 24) and len(model["intercept"]) == 3
    assert model["C"] == 1.0 and model["max_iter"] == 1000
    assert model["train_slices"]["IDHwt"] > 0
    cohort, patient, images, slice_index = next(iter_patient_batches(shards["shards"]))
    scaled = (slice_features(images.numpy()) - model["scaler_mean"]) / model["scaler_scale"]
    logits = scaled @ np.asarray(model["coef"]).T + model["intercept"]
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    slices = pd.read_parquet(fitted["slices.parquet"])
    got = slices[(slices["cohort"] == cohort) & (slices["patient"] == patient)]
    assert got["slice_index"].tolist() == slice_index.tolist()
    np.testing.assert_allclose(got[list(PROB_COLUMNS)], expected, atol=1e-5)


def test_class_absent_from_train_split(shards, tmp_path) -> None:
    splits = shards["splits"].copy()
    codel_train = (splits["class"] == "IDHmut-codel") & (splits["split"] == "train")
    splits.loc[codel_train, "split"] = "val"
    paths = run_baseline(shards, tmp_path, splits)
    slices = pd.read_parquet(paths["slices.parquet"])
    assert (slices["p_IDHmut-codel"] == 0).all()
    np.testing.assert_allclose(slices[list(PROB_COLUMNS)].sum(1), 1, atol=1e-5)
    model = json.loads(paths["model.json"].read_text())
    assert model["classes"] == ["IDHwt", "IDHmut-intact"]
    assert model["train_slices"]["IDHmut-codel"] == 0


def evaluate(fitted: dict, out: Path, network: Path, *, baseline: bool = True) -> dict:
    tables = {level: out / f"table2_{level}.tsv" for level in ("patient", "slice")}
    if baseline:
        tables["baseline"] = out / "table2_baseline_patient.tsv"
    return evaluate_predictions(
        network,
        fitted["splits"],
        out / "metrics.json",
        tables,
        n_boot=20,
        seed=3,
        baseline_path=fitted["slices.parquet"] if baseline else None,
    )


@pytest.fixture(scope="module")
def evaluated(fitted, tmp_path_factory) -> dict:
    """Evaluate a poor 'network' (random probabilities) beside the baseline."""
    out = tmp_path_factory.mktemp("evaluated")
    network = pd.read_parquet(fitted["slices.parquet"])
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=len(network))
    network[list(PROB_COLUMNS)] = probs.astype(np.float32)
    network.to_parquet(out / "network.parquet")
    document = evaluate(fitted, out, out / "network.parquet")
    return {"out": out, "document": document}


def _keys(tree) -> object:
    """The nested keys of a JSON document, values dropped."""
    if isinstance(tree, dict):
        return {k: _keys(v) for k, v in tree.items()}
    return None


def test_baseline_section_is_scored_like_the_network(evaluated, fitted, tmp_path) -> None:
    document = evaluated["document"]
    written = json.loads((evaluated["out"] / "metrics.json").read_text())
    assert written == document
    assert set(document) == {"splits", "patient", "slice", "baseline"}
    network = {level: document[level] for level in ("patient", "slice")}
    assert document["baseline"]["splits"] == document["splits"]
    baseline = {level: document["baseline"][level] for level in ("patient", "slice")}
    assert _keys(baseline) == _keys(network)
    assert document["baseline"]["patient"]["test"]["macro_auc"] > 0.9
    assert document["patient"]["test"]["macro_auc"] < 0.9
    # The same code: the baseline evaluated as if it were the network gives the same section.
    alone = evaluate(fitted, tmp_path, fitted["slices.parquet"], baseline=False)
    assert document["baseline"] == alone
    table = pd.read_csv(evaluated["out"] / "table2_baseline_patient.tsv", sep="\t")
    network_table = pd.read_csv(evaluated["out"] / "table2_patient.tsv", sep="\t")
    assert list(table.columns) == list(network_table.columns) and len(table) == len(network_table)
    pd.testing.assert_frame_equal(table, pd.read_csv(tmp_path / "table2_patient.tsv", sep="\t"))


def test_summary_lines_show_network_and_baseline(evaluated) -> None:
    document = evaluated["document"]
    lines = summary_lines(document)
    compared = [line for line in lines if "vs baseline" in line]
    assert [line.split(":")[0] for line in compared] == [
        "patient train",
        "patient val  ",
        "patient test ",
    ]
    test = document["patient"]["test"]
    base = document["baseline"]["patient"]["test"]
    assert (
        f"network macro AUC {test['macro_auc']:.3f} vs baseline {base['macro_auc']:.3f}"
        in compared[-1]
    )
    codel = (
        f"IDHmut-codel {test['classes']['IDHmut-codel']['auc']:.3f} vs "
        f"{base['classes']['IDHmut-codel']['auc']:.3f}"
    )
    assert codel in compared[-1]
    without = {k: v for k, v in document.items() if k != "baseline"}
    assert summary_lines(without) == lines[: len(lines) - len(compared)]


def test_one_class_in_train_names_the_split_file(shards, tmp_path) -> None:
    splits = shards["splits"].copy()
    splits.loc[(splits["class"] != "IDHwt") & (splits["split"] == "train"), "split"] = "val"
    with pytest.raises(ValueError, match=r"splits\.tsv: the baseline needs training slices"):
        run_baseline(shards, tmp_path, splits)

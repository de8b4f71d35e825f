"""File-level tests: train a tiny Swin on tiny shards, resume after a kill, predict, evaluate."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from glioma.constants import CLASSES
from glioma.dataset.splits import slice_split
from glioma.errors import InputError
from glioma.model.evaluate import evaluate_predictions
from glioma.model.predict import PROB_COLUMNS, UNCERTAINTY_COLUMNS, predict_slices
from glioma.model.training import train_classifier

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SIZE = 16
COHORTS = ("SITE-A", "SITE-B")
TINY = {
    "img_size": SIZE,
    "patch_size": 4,
    "window_size": 2,
    "embed_dim": 8,
    "depths": [1, 1],
    "num_heads": [1, 2],
}


def make_config(**model) -> dict:
    """The repo's config with a tiny model, validated so every default is filled."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["model"].update(
        {
            "kwargs": dict(TINY),
            "epochs": 3,
            "batch_size": 8,
            "patience": 5,
            "min_epochs": 0,
            "select": "val_auc",
            "num_workers": 0,
            "lr": 0.003,
            "warmup_epochs": 1,
            **model,
        }
    )
    config["evaluate"]["bootstrap"] = 30
    validate(config, str(REPO / "schemas" / "config.schema.yaml"))
    return config


def shard_table(cohort: str, patients: list[tuple[str, str]], rng, size: int = SIZE) -> pa.Table:
    """One shard in the docs/architecture.md schema; a class lifts the mean of one channel."""
    rows = {
        k: []
        for k in (
            "patient",
            "cohort",
            "slice_index",
            "label",
            "class",
            "image",
            "height",
            "width",
            "roi_area",
            "spacing",
            "preprocess_hash",
        )
    }
    for patient, name in patients:
        label = CLASSES.index(name) if name else int(rng.integers(3))
        for s in range(int(rng.integers(3, 6))):
            image = rng.normal(0, 0.5, (4, size, size)).astype(np.float32)
            image[label] += 1.0
            rows["patient"].append(patient)
            rows["cohort"].append(cohort)
            rows["slice_index"].append(10 + s)
            rows["label"].append(CLASSES.index(name) if name else -1)
            rows["class"].append(name)
            rows["image"].append(image.astype("<f2").tobytes())
            rows["height"].append(size)
            rows["width"].append(size)
            rows["roi_area"].append(100.0)
            rows["spacing"].append([2.0, 2.0, 2.0])
            rows["preprocess_hash"].append("test")
    schema = pa.schema(
        [
            ("patient", pa.string()),
            ("cohort", pa.string()),
            ("slice_index", pa.int32()),
            ("label", pa.int8()),
            ("class", pa.string()),
            ("image", pa.binary(4 * size * size * 2)),
            ("height", pa.int16()),
            ("width", pa.int16()),
            ("roi_area", pa.float32()),
            ("spacing", pa.list_(pa.float32(), 3)),
            ("preprocess_hash", pa.string()),
        ]
    )
    return pa.Table.from_pydict(rows, schema=schema)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Two cohorts x 3 classes x 4 patients (2 train, 1 val, 1 test) plus 2 unlabelled patients."""
    root = tmp_path_factory.mktemp("model_data")
    rng = np.random.default_rng(0)
    manifest = []
    for cohort in COHORTS:
        patients = []
        for name in CLASSES:
            for i, split in enumerate(["train", "train", "val", "test"]):
                patients.append((f"{name.replace('-', '')}{i}", name))
                manifest.append((patients[-1][0], cohort, name, split))
        patients.append(("new1", ""))
        manifest.append(("new1", cohort, "", "unlabelled"))
        folder = root / "shards" / cohort
        folder.mkdir(parents=True)
        pq.write_table(
            shard_table(cohort, sorted(patients), rng),
            folder / "part-00000.parquet",
            row_group_size=20,
            use_dictionary=False,
        )
    splits = pd.DataFrame(manifest, columns=["patient", "cohort", "class", "split"])
    splits.to_csv(root / "splits.tsv", sep="\t", index=False)
    return {
        "root": root,
        "shards": [root / "shards" / c for c in COHORTS],
        "splits": root / "splits.tsv",
        "manifest": splits,
    }


def run_all(data: dict, out: Path, config: dict, splits: Path | None = None) -> dict:
    """Train, predict and evaluate into ``out``; return the paths."""
    splits = splits or data["splits"]
    paths = {
        "model": out / "model",
        "slices": out / "pred" / "slices.parquet",
        "patients": out / "pred" / "predictions.csv",
        "metrics": out / "m" / "metrics.json",
        "tables": {lv: out / "m" / f"table2_{lv}.tsv" for lv in ("patient", "slice")},
        "plots": {
            kind: {s: out / "m" / f"{kind}_{s}.png" for s in ("train", "val", "test")}
            for kind in ("roc", "confusion")
        },
    }
    paths["state"] = train_classifier(
        data["shards"], splits, paths["model"], config, progress=False
    )
    predict_slices(
        data["shards"],
        splits,
        paths["model"] / "best.pt",
        paths["slices"],
        paths["patients"],
        config=config,
    )
    evaluate_predictions(
        paths["slices"],
        splits,
        paths["metrics"],
        paths["tables"],
        paths["plots"],
        n_boot=30,
        seed=config["seed"],
    )
    return paths


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict:
    config = make_config()
    return {"config": config, **run_all(data, tmp_path_factory.mktemp("run"), config)}


def test_training_writes_model_folder(trained):
    model = trained["model"]
    history = pd.read_csv(model / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_slice_macro_auc",
        "val_patient_macro_auc",
        "lr",
        "seconds",
    ]
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    best = torch.load(model / "best.pt", weights_only=True)
    last = torch.load(model / "last.pt", weights_only=True)
    # Best = highest validation patient macro AUC, ties broken by the lowest validation loss.
    ranked = history.sort_values(["val_patient_macro_auc", "val_loss"], ascending=[False, True])
    assert best["epoch"] == int(ranked["epoch"].iloc[0])
    assert best["classes"] == list(CLASSES) and last["run"]["epoch"] == 3
    assert yaml.safe_load((model / "config.yaml").read_text()) == trained["config"]


def test_rerun_of_finished_training_does_nothing(trained, data):
    before = (trained["model"] / "history.csv").read_text()
    state = train_classifier(
        data["shards"], data["splits"], trained["model"], trained["config"], progress=False
    )
    assert state.epoch == 3
    assert (trained["model"] / "history.csv").read_text() == before


def test_predictions_cover_every_patient(trained, data):
    patients = pd.read_csv(trained["patients"], keep_default_na=False)
    slices = pd.read_parquet(trained["slices"])
    manifest = data["manifest"]
    assert len(patients) == len(manifest) == 26
    assert list(patients.columns) == [
        "patient",
        "cohort",
        *PROB_COLUMNS,
        "predicted_class",
        "n_slices",
        "split",
        *UNCERTAINTY_COLUMNS,
    ]
    assert (patients["model"] == "single").all() and (patients["n_models"] == 1).all()
    merged = patients.merge(manifest, on=["cohort", "patient"], suffixes=("", "_m"))
    assert (merged["split"] == merged["split_m"]).all()
    np.testing.assert_allclose(patients[list(PROB_COLUMNS)].sum(1), 1, atol=1e-5)
    means = slices.groupby(["cohort", "patient"])[list(PROB_COLUMNS)].mean()
    indexed = patients.set_index(["cohort", "patient"])
    np.testing.assert_allclose(indexed.loc[means.index, list(PROB_COLUMNS)], means, atol=1e-6)
    counts = slices.groupby(["cohort", "patient"]).size()
    assert (indexed.loc[counts.index, "n_slices"] == counts).all()
    argmax = np.array(CLASSES)[patients[list(PROB_COLUMNS)].to_numpy().argmax(1)]
    assert (patients["predicted_class"] == argmax).all()


def sklearn_split(frame: pd.DataFrame) -> dict:
    """Reference values computed with scikit-learn only."""
    labels = frame["class"].map(CLASSES.index).to_numpy()
    probs = frame[list(PROB_COLUMNS)].to_numpy()
    predicted = probs.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(labels, predicted, labels=[0, 1, 2])
    classes = {
        name: {
            "auc": roc_auc_score(labels == k, probs[:, k]),
            "precision": p[k],
            "recall": r[k],
            "f1": f[k],
            "average_precision": average_precision_score(labels == k, probs[:, k]),
        }
        for k, name in enumerate(CLASSES)
    }
    return {
        "n": len(labels),
        "accuracy": accuracy_score(labels, predicted),
        "macro_auc": roc_auc_score(labels, probs, multi_class="ovr", average="macro"),
        "classes": classes,
    }


def test_metrics_json_shape_and_values_agree_with_sklearn(trained):
    metrics = json.loads(trained["metrics"].read_text())
    slices = pd.read_parquet(trained["slices"])
    labelled = slices[slices["split"].isin(["train", "val", "test"])]
    patient_rows = labelled.groupby(["split", "cohort", "patient", "class"], as_index=False)[
        list(PROB_COLUMNS)
    ].mean()
    assert set(metrics) == {"splits", "patient", "slice"}
    assert metrics["splits"] == ["train", "val", "test"]
    for level, frame in (("patient", patient_rows), ("slice", labelled)):
        assert set(metrics[level]) == {"train", "val", "test"}
        for split in ("train", "val", "test"):
            got = metrics[level][split]
            assert {"n", "accuracy", "macro_auc", "classes"} <= set(got)
            want = sklearn_split(frame[frame["split"] == split])
            assert got["n"] == want["n"]
            assert got["accuracy"] == pytest.approx(want["accuracy"])
            assert got["macro_auc"] == pytest.approx(want["macro_auc"])
            for name in CLASSES:
                values = got["classes"][name]
                assert set(values) == {
                    "auc",
                    "auc_ci_low",
                    "auc_ci_high",
                    "precision",
                    "recall",
                    "f1",
                    "average_precision",
                }
                for key, expected in want["classes"][name].items():
                    assert values[key] == pytest.approx(expected), (level, split, name, key)
                assert values["auc_ci_low"] <= values["auc_ci_high"]


def test_tables_and_figures(trained):
    table = pd.read_csv(trained["tables"]["patient"], sep="\t", keep_default_na=False)
    assert len(table) == 3 * 4
    assert (table.loc[table["split"] == "train", "note"].str.contains("training data")).all()
    macro = table[(table["class"] == "macro") & (table["split"] == "test")]
    metrics = json.loads(trained["metrics"].read_text())
    assert float(macro["auc"].iloc[0]) == pytest.approx(metrics["patient"]["test"]["macro_auc"])
    for kind in trained["plots"].values():
        for path in kind.values():
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_class_gives_null_and_bad_class_names_patient(trained, data, tmp_path):
    slices = pd.read_parquet(trained["slices"])
    manifest = data["manifest"].copy()
    # No IDHmut-codel patient in val: its AUC is undefined there.
    dropped = (manifest["split"] == "val") & (manifest["class"] == "IDHmut-codel")
    manifest.loc[dropped, ["class", "split"]] = ["", "unlabelled"]
    manifest.to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    kept = slices.merge(
        manifest[["cohort", "patient", "class"]], on=["cohort", "patient"], suffixes=("_old", "")
    )
    kept.drop(columns="class_old").to_parquet(tmp_path / "slices.parquet")
    tables = {lv: tmp_path / f"{lv}.tsv" for lv in ("patient", "slice")}
    doc = evaluate_predictions(
        tmp_path / "slices.parquet",
        tmp_path / "splits.tsv",
        tmp_path / "m.json",
        tables,
        n_boot=10,
        seed=0,
    )
    assert doc["patient"]["val"]["classes"]["IDHmut-codel"]["auc"] is None
    assert json.loads((tmp_path / "m.json").read_text())["patient"]["val"]["macro_auc"] is None
    slices.loc[0, "class"] = "IDHwt" if slices.loc[0, "class"] != "IDHwt" else "IDHmut-codel"
    slices.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=slices.loc[0, "patient"]) as err:
        evaluate_predictions(
            tmp_path / "bad.parquet", data["splits"], tmp_path / "x.json", tables, n_boot=0, seed=0
        )
    assert err.value.column == "class" and "bad.parquet" in str(err.value)


KILL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    from glioma.model import state
    from glioma.model.training import train_classifier
    save = state.save_state
    def slow_save(*args, **kwargs):
        save(*args, **kwargs)
        time.sleep(300)  # the parent kills us here, right after the first epoch's checkpoint
    state.save_state = slow_save
    shards, splits, out, state, config = json.loads(sys.argv[1])
    train_classifier(shards, splits, out, config, state_path=state, progress=False)
""")


def test_killed_training_resumes(trained, data, tmp_path):
    out, state = tmp_path / "model", tmp_path / "model" / "resume_state.pt"
    args = json.dumps(
        [
            [str(p) for p in data["shards"]],
            str(data["splits"]),
            str(out),
            str(state),
            trained["config"],
        ]
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "workflow_scripts"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, args], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    _, stderr = proc.communicate()
    assert state.exists(), stderr[-3000:]
    killed = torch.load(state, weights_only=True)
    assert killed["run"]["epoch"] == 1 and not (out / "last.pt").exists()

    resumed = train_classifier(
        data["shards"], data["splits"], out, trained["config"], state_path=state, progress=False
    )
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert resumed.history[0] == killed["run"]["history"][0]  # epoch 1 was not trained again
    assert not state.exists() and (out / "last.pt").exists()
    # Same seed, settings and data: the interrupted run ends where the uninterrupted one did.
    uninterrupted = torch.load(trained["model"] / "last.pt", weights_only=True)["model"]
    final = torch.load(out / "last.pt", weights_only=True)["model"]
    for key, value in uninterrupted.items():
        # Loose enough for float summation order across processes, far below a retrained epoch.
        torch.testing.assert_close(final[key], value, rtol=1e-4, atol=1e-5)


def test_changed_settings_restart_from_scratch(trained, data, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "last.pt").write_bytes((trained["model"] / "last.pt").read_bytes())
    config = copy.deepcopy(trained["config"])
    config["model"]["epochs"] = 1
    state = train_classifier(data["shards"], data["splits"], out, config, progress=False)
    assert [row["epoch"] for row in state.history] == [1]


def test_slice_level_split_is_marked_leaky(data, tmp_path):
    manifest = data["manifest"].copy()
    manifest.loc[manifest["class"] != "", "split"] = "slice"
    manifest.to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    config = make_config(epochs=1)
    paths = run_all(data, tmp_path, config, splits=tmp_path / "splits.tsv")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["leaky_split"] is True and "leak" in metrics["warning"]
    slices = pd.read_parquet(paths["slices"])
    ratios = config["split"]["ratios"]
    labelled = slices[slices["class"] != ""]
    expected = [
        slice_split(config["seed"], c, p, i, ratios)
        for c, p, i in zip(
            labelled["cohort"], labelled["patient"], labelled["slice_index"], strict=True
        )
    ]
    assert labelled["split"].tolist() == expected
    assert set(slices.loc[slices["class"] == "", "split"]) == {"unlabelled"}
    table = pd.read_csv(paths["tables"]["slice"], sep="\t", keep_default_na=False)
    assert table["note"].str.contains("LEAKY").all()


def test_balanced_sampler_and_local_weights(trained, data, tmp_path):
    # Start from the trained model's weights, with class-balanced sampling instead of weights.
    config = make_config(
        epochs=1, balance="sampler", pretrained_weights=str(trained["model"] / "best.pt")
    )
    state = train_classifier(data["shards"], data["splits"], tmp_path, config, progress=False)
    assert [row["epoch"] for row in state.history] == [1]
    # Fine-tuning starts from the trained weights: one epoch beats the first epoch from scratch.
    scratch = pd.read_csv(trained["model"] / "history.csv")
    assert state.history[0]["val_loss"] < scratch["val_loss"].iloc[0]

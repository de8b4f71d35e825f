"""Sequence ablation: the table re-evaluates by hand, the paired CI, lacking patients, NaN tables.

Tiny shards of 32-pixel slices whose class is carried by the T2w channel alone (a central blob
dark, grey or bright) are predicted by two ResNet-10t models, one trained a few steps on such
slices, one untrained; everything runs on the CPU in seconds.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import demo_config

from glioma.constants import ABLATION_COLUMNS, CLASSES, SEQUENCES
from glioma.dataset.loader import iter_patient_batches
from glioma.dataset.shards import build_shards
from glioma.dataset.splits import SLICE_SPLIT, slice_split
from glioma.model import bundle as model_bundle
from glioma.model import checkpoint, state
from glioma.model.ablation import ablate, write_ablation
from glioma.model.metrics import macro_auc
from glioma.model.nets import build_model
from glioma.model.predict import predict_images

torch.set_num_threads(1)
SIZE = 32
CARRIER = SEQUENCES.index("t2w")
DEVICE = torch.device("cpu")
BATCH = 8
N_BOOT = 200
#: Test patients: the one lacking FLAIR in every slice, the one lacking T1w in one slice only.
NO_FLAIR, PARTIAL_T1W = "Ap003", "Ap004"


def _slices(label: int, n: int, rng: np.random.Generator, contrast: float = 1.5) -> np.ndarray:
    """``n`` noise slices (n, 4, SIZE, SIZE) whose T2w blob is dark, grey or bright by class
    (its mean ``contrast`` apart from one class to the next, in noise of SD 0.3)."""
    images = rng.normal(0.0, 0.3, size=(n, len(SEQUENCES), SIZE, SIZE))
    images[:, CARRIER, 8:24, 8:24] += (label - 1) * contrast
    return images.astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Shards of cohort A (12 test, 3 train, 1 unlabelled patient), the manifest, two models."""
    root = tmp_path_factory.mktemp("ablation")
    rng = np.random.default_rng(0)
    rows, crops = [], []
    for p in range(16):
        patient = f"Ap{p:03d}"
        label = p % 3
        split = "test" if p < 12 else "train"
        name = CLASSES[label]
        if p == 15:
            name, split = "", "unlabelled"
        # Each patient's contrast is drawn, so that the test AUC is short of 1.
        images = _slices(label, 3 + p % 2, rng, contrast=float(rng.uniform(0.0, 1.5)))
        if patient == NO_FLAIR:
            images[:, SEQUENCES.index("flair")] = np.nan
        if patient == PARTIAL_T1W:
            images[0, SEQUENCES.index("t1w")] = np.nan
        rows.append((patient, "A", name, split, ""))
        crops.append(root / "crops" / "A" / f"{patient}.npz")
        crops[-1].parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            crops[-1],
            images=images.astype(np.float16),
            slice_index=np.arange(10, 10 + len(images), dtype=np.int32),
            roi_area=np.ones(len(images), np.float32),
            spacing=np.ones(3, np.float32),
        )
    splits = pd.DataFrame(rows, columns=["patient", "cohort", "class", "split", "fold"])
    shards = root / "shards" / "A"
    build_shards(
        crops,
        dict(zip(splits["patient"], splits["class"], strict=True)),
        shards,
        cohort="A",
        config_hash="h",
        image_size=SIZE,
        rows_per_group=5,
    )
    splits_path = root / "splits.tsv"
    splits.to_csv(splits_path, sep="\t", index=False)
    return {
        "root": root,
        "shards": [shards],
        "splits": splits,
        "splits_path": splits_path,
        "models": {"fold-0": _trained_model(), "fold-1": _untrained_model()},
    }


def _trained_model() -> torch.nn.Module:
    """ResNet-10t after 40 Adam steps on fresh slices of the three classes: enough for its
    batch-norm running statistics to settle (after a handful the eval-mode model is unstable,
    and which sequence it leans on changed with the number of torch threads)."""
    torch.manual_seed(0)
    model = build_model("resnet10t")
    rng = np.random.default_rng(1)
    labels = torch.arange(48) % 3
    images = torch.from_numpy(np.concatenate([_slices(int(k), 1, rng) for k in labels]))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def _untrained_model() -> torch.nn.Module:
    """ResNet-10t as initialised under a fixed seed."""
    torch.manual_seed(1)
    return build_model("resnet10t").eval()


def _by_hand(data: dict, hidden: int | None, slices: dict | None = None) -> tuple[float, int]:
    """Macro AUC of the test patients with channel ``hidden`` set to NaN (None: as given),
    predicted slice by slice by each model with predict_images, averaged per patient and over
    the models; ``slices`` optionally maps a patient to the mask of its slices scored."""
    splits = data["splits"]
    test = splits[splits["class"] != ""].set_index("patient")
    means = {}
    for name, model in data["models"].items():
        for _, patient, images, _ in iter_patient_batches(data["shards"]):
            if patient not in test.index or (
                slices is None and test.at[patient, "split"] != "test"
            ):
                continue
            if slices is not None:
                if not slices[patient].any():
                    continue
                images = images[torch.from_numpy(slices[patient])]
            images = images.clone()
            if hidden is not None:
                images[:, hidden] = float("nan")
            probs = predict_images(model, images, DEVICE, BATCH).astype(np.float64).mean(axis=0)
            means.setdefault(patient, {})[name] = probs
    patients = sorted(means)
    probs = np.array([np.mean(list(means[p].values()), axis=0) for p in patients])
    labels = np.array([CLASSES.index(test.at[p, "class"]) for p in patients])
    return macro_auc(labels, probs), len(patients)


@pytest.fixture(scope="module")
def table(data: dict) -> pd.DataFrame:
    return ablate(
        data["models"],
        data["shards"],
        data["splits"],
        split="test",
        device=DEVICE,
        batch_size=BATCH,
        bootstrap=N_BOOT,
        seed=3,
    )


def test_table_matches_a_direct_re_evaluation(data: dict, table: pd.DataFrame) -> None:
    assert list(table.columns) == list(ABLATION_COLUMNS)
    assert list(table["sequence"]) == list(SEQUENCES)
    reference, n = _by_hand(data, None)
    assert n == 12 and (table["n_patients"] == 12).all()
    assert np.isfinite(reference)
    np.testing.assert_allclose(table["macro_auc_all"], reference, atol=1e-6)
    for k, sequence in enumerate(SEQUENCES):
        without, _ = _by_hand(data, k)
        row = table[table["sequence"] == sequence].iloc[0]
        assert row["macro_auc_without"] == pytest.approx(without, abs=1e-6), sequence
    # The class lives in T2w: hiding it costs the most.
    assert table.loc[table["delta_auc"].idxmin(), "sequence"] == "t2w"
    assert table.set_index("sequence").at["t2w", "delta_auc"] < 0


def test_delta_is_without_minus_all_and_the_paired_ci_brackets_it(table: pd.DataFrame) -> None:
    np.testing.assert_allclose(
        table["delta_auc"], table["macro_auc_without"] - table["macro_auc_all"], atol=1e-12
    )
    for row in table.itertuples():
        # Resamples lacking a class are skipped: most of 200 remain with 4 patients per class.
        assert N_BOOT // 2 < row.bootstrap <= N_BOOT
        assert row.ci_low <= row.delta_auc <= row.ci_high, row.sequence


def test_bootstrap_is_seeded_and_zero_resamples_give_nan_intervals(
    data: dict, table: pd.DataFrame
) -> None:
    kwargs = {"split": "test", "device": DEVICE, "batch_size": BATCH}
    again = ablate(
        data["models"], data["shards"], data["splits"], bootstrap=N_BOOT, seed=3, **kwargs
    )
    pd.testing.assert_frame_equal(again, table)
    none = ablate(data["models"], data["shards"], data["splits"], bootstrap=0, seed=3, **kwargs)
    assert none["ci_low"].isna().all() and none["ci_high"].isna().all()
    assert (none["bootstrap"] == 0).all()
    pd.testing.assert_series_equal(none["delta_auc"], table["delta_auc"])


def test_n_lacking_counts_patients_without_the_sequence_in_every_slice(table: pd.DataFrame) -> None:
    lacking = table.set_index("sequence")["n_lacking"].to_dict()
    # Ap003 lacks FLAIR throughout; Ap004 lacks T1w in one slice only, which does not count.
    assert lacking == {"t1w": 0, "t1c": 0, "t2w": 0, "flair": 1}


def test_a_split_without_labelled_patients_gives_nan_rows(
    data: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="glioma"):
        out = ablate(
            data["models"],
            data["shards"],
            data["splits"],
            split="external",
            device=DEVICE,
            batch_size=BATCH,
            bootstrap=N_BOOT,
            seed=3,
        )
    assert list(out.columns) == list(ABLATION_COLUMNS) and list(out["sequence"]) == list(SEQUENCES)
    assert (out["n_patients"] == 0).all() and (out["bootstrap"] == 0).all()
    numbers = ["macro_auc_all", "macro_auc_without", "delta_auc", "ci_low", "ci_high"]
    assert out[numbers].isna().all().all()
    assert "no labelled patient" in caplog.text


def test_a_split_lacking_a_class_gives_nan_aucs_with_counts(
    data: dict, caplog: pytest.LogCaptureFixture
) -> None:
    splits = data["splits"].copy()
    splits.loc[splits["class"] == CLASSES[2], "split"] = "train"
    with caplog.at_level(logging.WARNING, logger="glioma"):
        out = ablate(
            data["models"],
            data["shards"],
            splits,
            split="test",
            device=DEVICE,
            batch_size=BATCH,
            bootstrap=N_BOOT,
            seed=3,
        )
    assert (out["n_patients"] == 8).all()
    assert out.set_index("sequence").at["flair", "n_lacking"] == 1  # Ap003 is IDHwt
    assert out["macro_auc_all"].isna().all() and out["delta_auc"].isna().all()
    assert "needs all 3 classes" in caplog.text


def test_cv_split_and_no_model_are_refused(data: dict) -> None:
    kwargs = {"device": DEVICE, "batch_size": BATCH, "bootstrap": 0, "seed": 3}
    with pytest.raises(ValueError, match="out-of-fold"):
        ablate(data["models"], data["shards"], data["splits"], split="cv", **kwargs)
    with pytest.raises(ValueError, match="at least one model"):
        ablate({}, data["shards"], data["splits"], split="test", **kwargs)


def test_slice_level_manifest_scores_the_slices_drawn_into_the_split(data: dict) -> None:
    splits = data["splits"].copy()
    splits.loc[splits["class"] != "", "split"] = SLICE_SPLIT
    ratios = {"train": 0.5, "val": 0.0, "test": 0.5}
    out = ablate(
        data["models"],
        data["shards"],
        splits,
        split="test",
        device=DEVICE,
        batch_size=BATCH,
        bootstrap=0,
        seed=3,
        ratios=ratios,
    )
    masks = {
        patient: np.array([slice_split(3, "A", patient, int(i), ratios) == "test" for i in index])
        for _, patient, _, index in iter_patient_batches(data["shards"])
    }
    slice_data = {**data, "splits": splits}
    reference, n = _by_hand(slice_data, None, masks)
    assert (out["n_patients"] == n).all() and 0 < n < 15
    np.testing.assert_allclose(out["macro_auc_all"], reference, atol=1e-6, equal_nan=True)
    without, _ = _by_hand(slice_data, CARRIER, masks)
    assert out.at[CARRIER, "macro_auc_without"] == pytest.approx(without, abs=1e-6, nan_ok=True)
    with pytest.raises(ValueError, match="ratios"):
        ablate(data["models"], data["shards"], splits, split="test", device=DEVICE,
               batch_size=BATCH, bootstrap=0, seed=3)  # fmt: skip


def _bundle(data: dict) -> Path:
    """A real bundle of the two models (fold-0, fold-1), as write_bundle writes it."""
    root = data["root"] / "run"
    paths = {}
    for name, model in data["models"].items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "format": state.FORMAT,
            "model": model.state_dict(),
            "model_name": "resnet10t",
            "model_kwargs": {},
            "classes": list(CLASSES),
        }
        checkpoint.save(record, folder / "best.pt")
        (folder / "history.csv").write_text("epoch,train_loss\n1,1.0\n")
        (folder / "config.yaml").write_text("model: {}\n")
        paths[name] = folder / "best.pt"
    metrics = root / "metrics.json"
    metrics.write_text(json.dumps({"splits": ["test"], "patient": {}}))
    out = root / "bundle"
    # The demo's config (config.yaml and config/demo.yaml: resnet10t) holds every bundled setting.
    config = demo_config()
    config["seed"] = 3
    model_bundle.write_bundle(
        paths, out, config=config, splits=data["splits"], metrics_path=metrics
    )
    return out


def test_write_ablation_writes_the_bundles_table_as_tsv(
    data: dict, table: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    out = data["root"] / "metrics" / "ablation.tsv"
    with caplog.at_level(logging.INFO, logger="glioma"):
        written = write_ablation(
            data["shards"],
            data["splits_path"],
            _bundle(data),
            out,
            split="test",
            batch_size=BATCH,
            bootstrap=N_BOOT,
            seed=3,
            device="cpu",
        )
    read = pd.read_csv(out, sep="\t")
    assert list(read.columns) == list(ABLATION_COLUMNS)
    pd.testing.assert_frame_equal(read, written, check_dtype=False)
    # The bundle's models are the fixture's: the same table to float precision.
    numbers = ["macro_auc_all", "macro_auc_without", "delta_auc"]
    np.testing.assert_allclose(read[numbers], table[numbers], atol=1e-6)
    assert sum("without t2w: patient macro AUC" in m for m in caplog.messages) == 1
    assert not list(out.parent.glob(".*tmp*"))
    # An undefined table is written too, its numbers empty (NaN).
    empty = write_ablation(
        data["shards"],
        data["splits_path"],
        data["root"] / "run" / "bundle",
        out,
        split="external",
        batch_size=BATCH,
        bootstrap=N_BOOT,
        seed=3,
        device="cpu",
    )
    read = pd.read_csv(out, sep="\t")
    assert read["macro_auc_all"].isna().all() and len(read) == len(SEQUENCES)
    assert math.isnan(empty.at[0, "delta_auc"])

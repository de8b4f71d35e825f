"""The model bundle: written, verified, refused when tampered or incompatible, settings applied."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from glioma.constants import CLASSES
from glioma.errors import InputError
from glioma.model import bundle as model_bundle
from glioma.model import checkpoint, state
from glioma.model.nets import build_model

TINY_KWARGS = {"img_size": 32, "embed_dim": 12, "depths": [1], "num_heads": [1], "window_size": 4}
CONFIG = {
    "seed": 7,
    "preprocess": {
        "jobs": "step",
        "n4": {"fit_spacing_mm": 8.0, "iterations": [50, 50, 30], "tolerance": 0.001},
        "registration": {
            "transform": "Rigid",
            "resample_mm": 3.0,
            "reference": ["t1c", "t1w", "flair", "t2w"],
        },
        "brain_extraction": {
            "method": "deepbet",
            "input": "t1w",
            "hdbet_weights": "",
            "threshold": 0.5,
        },
        "normalisation": {"method": "zscore", "percentiles": [0.5, 99.5]},
        "crop": {"fov_mm": 0, "margin_mm": 10.0, "size": 32, "mask_to_roi": False},
        "per_cohort": {},
    },
    "model": {"name": "swin_tiny_patch4_window7_224", "kwargs": TINY_KWARGS},
    "split": {"level": "patient", "folds": 2},
    "evaluate": {"review_entropy": 0.6},
}


def _run(tmp_path: Path) -> dict[str, Path]:
    """Two fold models' best.pt (with history and config beside), a manifest and metrics."""
    torch.manual_seed(0)
    models = {}
    for fold in ("0", "1"):
        folder = tmp_path / "model" / fold
        folder.mkdir(parents=True)
        net = build_model("swin_tiny_patch4_window7_224", TINY_KWARGS)
        record = {
            "format": state.FORMAT,
            "model": net.state_dict(),
            "model_name": "swin_tiny_patch4_window7_224",
            "model_kwargs": TINY_KWARGS,
            "classes": list(CLASSES),
            "epoch": 3,
            "optimizer": {"not": "carried"},
        }
        checkpoint.save(record, folder / "best.pt")
        (folder / "history.csv").write_text("epoch,train_loss\n1,1.0\n")
        (folder / "config.yaml").write_text("model: {}\n")
        models[f"fold-{fold}"] = folder / "best.pt"
    metrics = tmp_path / "metrics.json"
    metrics.write_text(
        json.dumps(
            {
                "splits": ["cv", "test"],
                "patient": {"cv": {"macro_auc": 0.8}, "test": {"macro_auc": 0.7}},
                "calibration": {"temperature": 1.7, "fitted_on": "cv"},
            }
        )
    )
    return {**models, "metrics": metrics}


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    run = _run(tmp_path)
    splits = pd.DataFrame(
        {
            "patient": ["P1", "P2", "P3", "P4"],
            "cohort": ["A", "A", "B", "B"],
            "class": ["IDHwt", "IDHwt", "IDHmut-codel", ""],
            "split": ["cv", "cv", "test", "unlabelled"],
        }
    )
    out = tmp_path / "bundle"
    model_bundle.write_bundle(
        {k: v for k, v in run.items() if k != "metrics"},
        out,
        config=CONFIG,
        splits=splits,
        metrics_path=run["metrics"],
    )
    return out


def test_bundle_holds_what_prediction_needs(bundle_dir: Path) -> None:
    document = model_bundle.verify(bundle_dir)
    assert document["models"] == ["fold-0", "fold-1"]
    assert document["classes"] == list(CLASSES)
    assert document["temperature"] == 1.7
    assert document["settings"]["preprocess.crop"]["size"] == 32
    assert document["settings"]["model.kwargs"] == TINY_KWARGS
    assert document["training_cohort"] == {
        "cv": {"A": {"IDHwt": 2}},
        "test": {"B": {"IDHmut-codel": 1}},
    }
    assert document["metrics"] == {"cv": 0.8, "test": 0.7}
    assert {"torch", "timm", "glioma"} <= set(document["packages"])
    assert len(document["id"]) == 64
    for name in ("fold-0", "fold-1"):
        assert (bundle_dir / "models" / name / "history.csv").is_file()
    # Only the weights and their identity travel: no optimiser state.
    record = torch.load(bundle_dir / "models" / "fold-0" / "weights.pt", weights_only=True)
    assert "optimizer" not in record and record["model_name"] == "swin_tiny_patch4_window7_224"


def test_loaded_models_predict_like_the_trained_ones(tmp_path: Path, bundle_dir: Path) -> None:
    _, models = model_bundle.load_models(bundle_dir)
    original = build_model("swin_tiny_patch4_window7_224", TINY_KWARGS)
    original.load_state_dict(checkpoint.load(tmp_path / "model" / "0" / "best.pt")["model"])
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(models["fold-0"](x), original.eval()(x))


def test_changed_weights_are_refused_naming_the_file(bundle_dir: Path) -> None:
    weights = bundle_dir / "models" / "fold-1" / "weights.pt"
    record = torch.load(weights, weights_only=True)
    first = next(iter(record["model"]))
    record["model"][first] = record["model"][first] + 1
    torch.save(record, weights)
    with pytest.raises(InputError, match=r"fold-1/weights\.pt.*differs from the checksum"):
        model_bundle.verify(bundle_dir)
    with pytest.raises(InputError, match=r"weights\.pt"):
        model_bundle.load_models(bundle_dir)


def test_missing_file_other_version_and_no_manifest_are_refused(
    bundle_dir: Path, tmp_path: Path
) -> None:
    (bundle_dir / "models" / "fold-0" / "history.csv").unlink()
    with pytest.raises(InputError, match=r"history\.csv.*missing"):
        model_bundle.verify(bundle_dir)
    manifest = bundle_dir / "manifest.json"
    document = json.loads(manifest.read_text())
    document["version"] = model_bundle.VERSION + 1
    manifest.write_text(json.dumps(document))
    newer = model_bundle.VERSION + 1
    with pytest.raises(InputError, match=rf"manifest\.json.*version {newer} cannot be read"):
        model_bundle.verify(bundle_dir)
    with pytest.raises(InputError, match="not a model bundle"):
        model_bundle.verify(tmp_path / "model")


def test_bundle_settings_replace_defaults(bundle_dir: Path) -> None:
    bundle = model_bundle.verify(bundle_dir)
    config = copy.deepcopy(CONFIG)
    config["preprocess"]["crop"]["size"] = 224
    config["model"]["name"] = "resnet10t"
    config["preprocess"]["per_cohort"] = {"B": {"registration": "none"}}
    changed = model_bundle.apply_settings(config, {"samples": "x.tsv"}, bundle)
    assert changed == ["preprocess.crop", "model.name"]
    assert config["preprocess"]["crop"]["size"] == 32
    assert config["model"]["name"] == "swin_tiny_patch4_window7_224"
    # Settings about the input archive stay the user's.
    assert config["preprocess"]["per_cohort"] == {"B": {"registration": "none"}}


def test_explicit_conflicting_setting_is_an_error_naming_key_and_values(bundle_dir: Path) -> None:
    bundle = model_bundle.verify(bundle_dir)
    config = copy.deepcopy(CONFIG)
    config["preprocess"]["crop"]["size"] = 64
    explicit = {"preprocess": {"crop": {"size": 64}}}
    with pytest.raises(InputError, match=r"preprocess\.crop\.size is 64 .* trained with 32"):
        model_bundle.apply_settings(config, explicit, bundle)
    # The same value given explicitly is no conflict.
    config["preprocess"]["crop"]["size"] = 32
    model_bundle.apply_settings(config, {"preprocess": {"crop": {"size": 32}}}, bundle)


def test_every_scored_split_is_scored_with_its_own_bootstrap_seed() -> None:
    """An external test (a prediction-only run) is scored like any split, the same patients
    with another split name drawing other bootstrap resamples."""
    import numpy as np

    from glioma.constants import EVAL_SPLITS
    from glioma.model.evaluate import level_metrics
    from glioma.model.predict import PROB_COLUMNS

    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(len(CLASSES)), 4)
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=labels.size)
    frame = pd.DataFrame(probs, columns=list(PROB_COLUMNS))
    frame["label"], frame["key"] = labels, [f"P{k}" for k in range(labels.size)]
    scored = {}
    for split in EVAL_SPLITS:
        out = level_metrics(frame.assign(split=split), n_boot=50, seed=0, shown=(split,))
        scored[split] = out[split]
        assert out[split]["n"] == labels.size
    assert scored["external"]["macro_auc"] == scored["test"]["macro_auc"]
    intervals = {split: json.dumps(m["classes"], sort_keys=True) for split, m in scored.items()}
    assert len(set(intervals.values())) == len(EVAL_SPLITS)

"""Unit tests of the classifier library on in-memory tensors and arrays (no shards)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from glioma.constants import CLASSES
from glioma.model import checkpoint
from glioma.model.augment import AugmentSettings, augment_batch
from glioma.model.epoch import (
    class_weights,
    lr_factor,
    make_loss,
    make_optimizer,
    make_scheduler,
    patient_mean,
    train_one_epoch,
    validate,
)
from glioma.model.metrics import bootstrap_auc_ci, classification_metrics, macro_auc, rank_auc
from glioma.model.nets import build_model, check_input_size

torch.set_num_threads(1)
TINY = {
    "img_size": 16,
    "patch_size": 4,
    "window_size": 2,
    "embed_dim": 8,
    "depths": (1, 1),
    "num_heads": (1, 2),
}
SWIN = "swin_tiny_patch4_window7_224"


def tiny_model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SWIN, {**TINY, **overrides})


def batches(n_batches: int = 4, size: int = 6, seed: int = 0) -> list[dict]:
    """Separable synthetic batches: the class sets the mean of channel ``label``."""
    rng = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        labels = torch.arange(size) % 3
        images = torch.randn(size, 4, 16, 16, generator=rng) * 0.3
        images[torch.arange(size), labels] += 2.0
        patients = [f"P{(b * size + i) // 2}" for i in range(size)]
        out.append({"image": images, "label": labels, "patient": patients, "cohort": ["A"] * size})
    return out


# --- augmentation -------------------------------------------------------------------------------


def test_augment_is_seeded_and_keeps_shape():
    images = torch.randn(5, 4, 16, 16)
    settings = AugmentSettings()
    a = augment_batch(images, settings, torch.Generator().manual_seed(1))
    b = augment_batch(images, settings, torch.Generator().manual_seed(1))
    c = augment_batch(images, settings, torch.Generator().manual_seed(2))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, images)


def test_augment_off_is_identity_copy():
    images = torch.randn(3, 4, 8, 8)
    out = augment_batch(images, AugmentSettings(False, 0.0, 0.0), torch.Generator())
    assert torch.equal(out, images) and out is not images


def test_flip_only_permutes_pixels():
    images = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    out = augment_batch(images, AugmentSettings(True, 0.0, 0.0), torch.Generator().manual_seed(0))
    for i in range(2):
        candidates = [images[i], images[i].flip(-1), images[i].flip(-2), images[i].flip(-1, -2)]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_augment_rejects_non_batch():
    with pytest.raises(ValueError, match="B, C, H, W"):
        augment_batch(torch.zeros(4, 8, 8), AugmentSettings(), torch.Generator())


# --- metrics ------------------------------------------------------------------------------------


def random_predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + np.eye(3)[labels] * 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


def test_rank_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.3
    score = np.round(rng.random(200), 1)  # many ties
    assert rank_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
    assert math.isnan(rank_auc(np.zeros(5, bool), score[:5]))


def test_classification_metrics_match_sklearn():
    labels, probs = random_predictions(90, 1)
    groups = np.arange(90) // 3
    got = classification_metrics(labels, probs, groups, n_boot=50, seed=0)
    assert got["n"] == 90
    assert got["accuracy"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert got["macro_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    p, r, f, _ = precision_recall_fscore_support(labels, probs.argmax(1), labels=[0, 1, 2])
    for k, name in enumerate(CLASSES):
        values = got["classes"][name]
        assert values["auc"] == pytest.approx(roc_auc_score(labels == k, probs[:, k]))
        assert values["precision"] == pytest.approx(p[k])
        assert values["recall"] == pytest.approx(r[k])
        assert values["f1"] == pytest.approx(f[k])
        ap = average_precision_score(labels == k, probs[:, k])
        assert values["average_precision"] == pytest.approx(ap)
        assert values["auc_ci_low"] <= values["auc"] <= values["auc_ci_high"]
    assert np.array(got["confusion_matrix"]).sum() == 90


def test_absent_class_gives_none_not_crash():
    labels, probs = random_predictions(30, 2)
    keep = labels != 1
    got = classification_metrics(
        labels[keep], probs[keep], np.arange(keep.sum()), n_boot=20, seed=0
    )
    codel = got["classes"]["IDHmut-codel"]
    assert codel["auc"] is None and codel["auc_ci_low"] is None and codel["recall"] is None
    assert codel["average_precision"] is None
    assert got["macro_auc"] is None  # the published macro AUC needs every class
    assert got["classes"]["IDHwt"]["auc"] is not None
    empty = classification_metrics(
        np.zeros(0, int), np.zeros((0, 3)), np.zeros(0), n_boot=5, seed=0
    )
    assert empty["n"] == 0 and empty["accuracy"] is None
    assert all(v is None for v in empty["classes"]["IDHwt"].values())


def test_bootstrap_resamples_patients_and_is_seeded():
    labels, probs = random_predictions(60, 3)
    groups = np.arange(60) // 6
    a = bootstrap_auc_ci(labels, probs, groups, n_boot=100, seed=7)
    b = bootstrap_auc_ci(labels, probs, groups, n_boot=100, seed=7)
    c = bootstrap_auc_ci(labels, probs, groups, n_boot=100, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a[:, 0] <= a[:, 1])
    # One patient holding every slice: every resample is that patient, so the CI collapses.
    single = bootstrap_auc_ci(labels, probs, np.zeros(60), n_boot=20, seed=0)
    np.testing.assert_allclose(single[:, 0], single[:, 1])


def test_macro_auc_lenient_for_monitoring():
    labels, probs = random_predictions(40, 4)
    keep = labels != 2
    assert math.isnan(macro_auc(labels[keep], probs[keep], strict=True))
    assert math.isfinite(macro_auc(labels[keep], probs[keep], strict=False))


# --- training pieces ----------------------------------------------------------------------------


def test_class_weights_inverse_frequency():
    weights = class_weights([62, 13, 25])
    assert weights[1] > weights[2] > weights[0]
    assert float(weights.mean()) == pytest.approx(1.0, rel=1e-5)
    assert class_weights([10, 0, 10])[1] == 0


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)


def test_train_one_epoch_learns_separable_data():
    model = tiny_model()
    device = torch.device("cpu")
    optimizer = make_optimizer(model, lr=3e-3, weight_decay=0.0)
    scheduler = make_scheduler(optimizer, 0, 40)
    loss_fn = make_loss(None, 0.0)
    data = batches()
    before = validate(model, data, loss_fn, device)
    for epoch in range(10):
        row = train_one_epoch(
            model,
            data,
            optimizer,
            scheduler,
            loss_fn,
            device,
            augment=None,
            generator=torch.Generator().manual_seed(epoch),
        )
    after = validate(model, data, loss_fn, device)
    assert row["train_slices"] == 24
    assert after["val_loss"] < before["val_loss"]
    assert after["val_slice_macro_auc"] > 0.9
    assert 0 <= after["val_patient_macro_auc"] <= 1
    assert optimizer.param_groups[0]["lr"] < 3e-3  # the schedule stepped


def test_validate_on_nothing_is_nan():
    out = validate(tiny_model(), [], make_loss(None, 0.1), torch.device("cpu"))
    assert all(math.isnan(v) for v in out.values())


def test_patient_mean_groups_slices():
    probs = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    means, labels, keys = patient_mean(probs, np.array([2, 2, 0]), ["A/p1", "A/p1", "A/p2"])
    assert keys == ["A/p1", "A/p2"]
    np.testing.assert_allclose(means, [[0.5, 0.5, 0], [0, 0, 1]])
    np.testing.assert_array_equal(labels, [2, 0])


# --- networks and checkpoints -------------------------------------------------------------------


def test_build_model_shape_and_size_check():
    model = tiny_model()
    assert model(torch.zeros(2, 4, 16, 16)).shape == (2, 3)
    check_input_size(model, 16, 16)
    with pytest.raises(ValueError, match=r"crop\.size"):
        check_input_size(model, 24, 24)
    with pytest.raises(ValueError, match="not a timm model"):
        build_model("no_such_net", {})


def test_local_weights_exact_and_adapted(tmp_path):
    own = tiny_model()
    path = tmp_path / "own.pt"
    torch.save({"model": own.state_dict()}, path)
    loaded = build_model(SWIN, TINY, path)
    for key, value in own.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # An ImageNet-style file: 3-channel stem, 1000 classes -> stem adapted, head re-initialised.
    import timm

    rgb = timm.create_model(SWIN, in_chans=3, num_classes=1000, **TINY)
    rgb_path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), rgb_path)
    adapted = build_model(SWIN, TINY, rgb_path)
    stem = rgb.state_dict()["patch_embed.proj.weight"]
    new_stem = adapted.state_dict()["patch_embed.proj.weight"]
    # 8 network channels: the 4 sequences and their availability planes.
    assert new_stem.shape[1] == 8
    torch.testing.assert_close(new_stem[:, :3], stem * 3 / 8)
    assert adapted.state_dict()["head.fc.weight"].shape == (3, 8 * 2)
    key = "layers.0.blocks.0.attn.qkv.weight"
    assert torch.equal(adapted.state_dict()[key], rgb.state_dict()[key])
    with pytest.raises(FileNotFoundError, match="pretrained_weights"):
        build_model(SWIN, TINY, tmp_path / "missing.pt")


def test_rng_state_roundtrip_weights_only(tmp_path):
    checkpoint.seed_everything(3)
    path = tmp_path / "state.pt"
    checkpoint.save({"rng": checkpoint.rng_state()}, path)
    expected = (np.random.rand(), torch.rand(1).item(), __import__("random").random())
    checkpoint.seed_everything(99)
    checkpoint.set_rng_state(checkpoint.load(path)["rng"])
    got = (np.random.rand(), torch.rand(1).item(), __import__("random").random())
    assert got == expected


def test_config_hash_tracks_settings_and_files(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    (data / "part-00000.parquet").write_bytes(b"x" * 10)
    a = checkpoint.config_hash({"lr": 1e-3}, [data])
    assert a == checkpoint.config_hash({"lr": 1e-3}, [data])
    assert a != checkpoint.config_hash({"lr": 2e-3}, [data])
    (data / "part-00001.parquet").write_bytes(b"y")
    assert a != checkpoint.config_hash({"lr": 1e-3}, [data])


def test_monitor_follows_select_and_falls_back():
    from glioma.model.state import monitor

    nan = math.nan
    row = {"epoch": 2, "val_loss": 0.5, "val_patient_macro_auc": 1.0}
    better = {"epoch": 3, "val_loss": 0.4, "val_patient_macro_auc": 1.0}
    worse_auc = {"epoch": 4, "val_loss": 0.3, "val_patient_macro_auc": 0.8}
    # val_loss (the default): the lower loss wins, whatever the AUC.
    assert monitor(better)[0] == "-val_loss"
    assert tuple(monitor(worse_auc)[1]) > tuple(monitor(better)[1]) > tuple(monitor(row)[1])
    # val_auc: the AUC first, the loss breaks ties.
    assert tuple(monitor(better, "val_auc")[1]) > tuple(monitor(row, "val_auc")[1])
    assert tuple(monitor(better, "val_auc")[1]) > tuple(monitor(worse_auc, "val_auc")[1])
    no_auc = {"epoch": 2, "val_loss": 0.5, "val_patient_macro_auc": nan}
    assert monitor(no_auc, "val_auc")[0] == "-val_loss"
    # last, or nothing to validate on: the latest epoch.
    assert monitor(row, "last") == ("epoch", [2.0, 0.0])
    assert monitor({"epoch": 4, "val_loss": nan, "val_patient_macro_auc": nan}) == (
        "epoch",
        [4.0, 0.0],
    )


def test_min_epochs_and_patience_decide_best_and_stop():
    from glioma.model.settings import TrainSettings
    from glioma.model.state import RunState, update_best

    config = {"seed": 0, "model": {"name": SWIN, "kwargs": TINY, "pretrained_weights": ""}}
    defaults = {
        "epochs": 20, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "warmup_epochs": 0,
        "label_smoothing": 0.0, "balance": "none", "patient_weighting": "slices",
        "select": "val_loss", "min_epochs": 3, "patience": 2, "compile": False,
        "num_workers": 0, "processes": 0, "augment": {},
    }  # fmt: skip
    settings = TrainSettings.from_config({**config, "model": {**config["model"], **defaults}})
    run, model = RunState(), tiny_model()
    losses = [0.1, 0.9, 0.8, 0.7, 0.75, 0.72, 0.5]
    kept = []
    for epoch, loss in enumerate(losses, start=1):
        row = {"epoch": epoch, "val_loss": loss, "val_patient_macro_auc": 0.5}
        kept.append(update_best(run, row, model, settings))
        if run.stopped:
            break
    # Epoch 1's lucky loss is never kept (before min_epochs); 4 is best; 5 and 6 exhaust patience.
    assert kept == [False, False, True, True, False, False]
    assert run.best_epoch == 4 and run.stopped and run.epoch == 6


def test_summary_lines_flag_training_data_and_leaks() -> None:
    from glioma.model.summary import summary_lines

    entry = {
        "n": 3,
        "accuracy": 0.5,
        "macro_auc": None,
        "classes": {
            c: {"auc": 0.75, "auc_ci_low": 0.5, "auc_ci_high": None}
            for c in ("IDHwt", "IDHmut-codel", "IDHmut-intact")
        },
    }
    metrics = {"leaky_split": True, "patient": {"train": entry, "test": entry}}
    lines = summary_lines(metrics)
    assert lines[0].startswith("WARNING: slice-level split")
    assert "train (training data)" in lines[1] and "macro AUC n/a" in lines[1]
    assert "IDHwt 0.750 [0.500-n/a]" in lines[2]


def test_slice_loss_matches_torch_and_weighs_patients():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 0, 0, 1, 2])
    weights = class_weights([4, 1, 1])
    loss = make_loss(weights, 0.1)
    expected = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)(logits, labels)
    torch.testing.assert_close(loss(logits, labels), expected)
    # Slice weights of 0 drop slices: the loss is that of the remaining ones.
    keep = torch.tensor([1.0, 0, 0, 0, 1, 1])
    subset = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)(
        logits[keep > 0], labels[keep > 0]
    )
    torch.testing.assert_close(loss(logits, labels, keep), subset)
    # Doubling one slice's weight counts it twice.
    twice = torch.tensor([2.0, 1, 1, 1, 1, 1])
    repeated = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)(
        torch.cat([logits[:1], logits]), torch.cat([labels[:1], labels])
    )
    torch.testing.assert_close(loss(logits, labels, twice), repeated)


def test_patient_weights_give_every_patient_the_same_total():
    import pandas as pd

    from glioma.model.data import class_counts, patient_weights, with_weights

    per_patient = pd.DataFrame(
        {"cohort": ["A", "A", "B"], "patient": ["thin", "thick", "p"], "label": [0, 0, 1],
         "slices": [80, 10, 30]}
    )  # fmt: skip
    weights = patient_weights(per_patient)
    totals = {key: weights[key] * n for key, n in zip(weights, per_patient["slices"], strict=True)}
    assert totals == pytest.approx(dict.fromkeys(weights, 40.0))  # the mean slice count each
    assert class_counts(per_patient).tolist() == [90, 30, 0]
    assert class_counts(per_patient, by="patients").tolist() == [2, 1, 0]
    batch = {"cohort": ["A", "B"], "patient": ["thick", "p"], "label": torch.tensor([0, 1])}
    (weighted,) = with_weights([batch], weights)
    torch.testing.assert_close(weighted["weight"], torch.tensor([4.0, 4 / 3]))

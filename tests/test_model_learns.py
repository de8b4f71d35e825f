"""The training loop can fit, for the demo's network and for the default Swin-T.

Each model is trained by the real code path (timm network, timm AdamW, warm-up + cosine
schedule, :class:`SliceLoss`) on a fixed set of 64 slices, without augmentation or label
smoothing: the training loss must fall far below chance (ln 3 = 1.10) within a bounded number
of steps. A broken loop (no step, a detached loss, labels misaligned with images, a schedule
stuck at 0) fails this.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from glioma.constants import CLASSES
from glioma.model.epoch import make_loss, make_optimizer, make_scheduler, train_one_epoch, validate
from glioma.model.nets import build_model

#: Ratios of the generated cohort (48 train, 16 val, 32 test): train:val sets inner validation.
INNER_RATIOS = {"train": 0.5, "val": 1 / 6, "test": 1 / 3}

REPO = Path(__file__).resolve().parents[1]
N_SLICES, BATCH = 64, 16


def _model_settings(config_file: str) -> dict:
    """The ``model`` section of config.yaml, with ``config_file`` (an overlay) applied."""
    model = yaml.safe_load((REPO / "config.yaml").read_text())["model"]
    if config_file != "config.yaml":
        overlay = yaml.safe_load((REPO / config_file).read_text()).get("model", {})
        model = {**model, **overlay}
    return model


def _fixed_slices(size: int, seed: int = 0) -> list[dict]:
    """64 slices in 4 batches: smooth noise, and a class-specific blob in one sequence.

    The class sets which sequence carries a bright blob and where, as a tumour's look differs
    between classes; the blob's strength varies so the task is not a single threshold.
    """
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_SLICES) % 3
    images = torch.randn(N_SLICES, 4, size, size, generator=rng)
    images = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1) * 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i, label in enumerate(labels.tolist()):
        cy, cx = size * (0.3 + 0.2 * label), size * 0.5
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))
        images[i, label + 1] += (1.0 + torch.rand(1, generator=rng)) * 2 * blob
    return [
        {
            "image": images[b : b + BATCH],
            "label": labels[b : b + BATCH],
            "patient": [f"P{i // 4}" for i in range(b, b + BATCH)],
            "cohort": ["A"] * BATCH,
        }
        for b in range(0, N_SLICES, BATCH)
    ]


def _fit(model: torch.nn.Module, settings: dict, size: int, epochs: int) -> list[float]:
    """Train ``epochs`` passes over the fixed slices with the model's own lr and weight decay.

    Returns:
        The eval-mode loss before training, the mean training loss of each epoch, and the
        eval-mode loss after training.
    """
    device = torch.device("cpu")
    optimizer = make_optimizer(model, float(settings["lr"]), float(settings["weight_decay"]))
    steps = epochs * math.ceil(N_SLICES / BATCH)
    scheduler = make_scheduler(optimizer, steps // 10, steps)
    loss_fn = make_loss(None, 0.0)
    data = _fixed_slices(size)
    losses = [validate(model, data, loss_fn, device)["val_loss"]]  # before any step
    for epoch in range(epochs):
        row = train_one_epoch(
            model, data, optimizer, scheduler, loss_fn, device, augment=None,
            generator=torch.Generator().manual_seed(epoch),
        )  # fmt: skip
        losses.append(row["train_loss"])
    final = validate(model, data, loss_fn, device)
    return [*losses, final["val_loss"]]


@pytest.mark.parametrize(
    ("config_file", "size", "kwargs"),
    [
        # The demo's network at the demo's crop size.
        ("config/demo.yaml", 64, {}),
        # The real-cohort default (Swin-T), at 32 pixels so that it runs on a CPU in CI: the
        # same four stages, with windows of 2 (32 / 4 = 8 tokens a side, 1 at the last stage).
        ("config.yaml", 32, {"img_size": 32, "window_size": 2}),
    ],
    ids=["demo", "swin-t"],
)
def test_training_loop_fits_a_fixed_set_of_slices(config_file, size, kwargs):
    torch.manual_seed(0)
    settings = _model_settings(config_file)
    model = build_model(settings["name"], {**settings["kwargs"], **kwargs})
    losses = _fit(model, settings, size, epochs=8)  # 32 optimiser steps
    assert losses[0] > 0.8, losses  # it started near chance (ln 3 = 1.10)
    assert min(losses) < 0.3, f"{settings['name']}: training loss never fell below 0.3: {losses}"
    assert losses[-1] < 0.3, f"{settings['name']}: eval-mode loss after training: {losses[-1]}"


# --- a generated cohort: it learns, and with shuffled labels it does not ------------------------

COHORT_SIZE = 32  # crop size of the generated slices


def _cohort(root: Path, *, shuffle_labels: bool) -> tuple[list[Path], Path]:
    """96 patients (32 per class) of 4 slices; the class decides a visible blob's sequence.

    Train 48, val 16, test 32 patients, stratified. With ``shuffle_labels`` the classes are
    permuted among patients after the images are drawn, so labels say nothing about images.
    """
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from test_model_pipeline import shard_table

    rng = np.random.default_rng(7)
    names = [CLASSES[k % 3] for k in range(96)]
    splits = ["train"] * 48 + ["val"] * 16 + ["test"] * 32
    patients = [(f"P{k:03d}", name) for k, name in enumerate(names)]
    table = shard_table("SITE-A", patients, rng, size=COHORT_SIZE)
    labels = [name for _, name in patients]
    if shuffle_labels:
        labels = list(rng.permutation(labels))
        by_patient = dict(zip([p for p, _ in patients], labels, strict=True))
        column = [by_patient[p] for p in table.column("patient").to_pylist()]
        table = table.set_column(table.schema.get_field_index("class"), "class", pa_strings(column))
        table = table.set_column(
            table.schema.get_field_index("label"),
            "label",
            pa_labels([CLASSES.index(c) for c in column]),
        )
    folder = root / "shards" / "SITE-A"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000.parquet", row_group_size=50, use_dictionary=False)
    manifest = pd.DataFrame(
        {
            "patient": [p for p, _ in patients],
            "cohort": "SITE-A",
            "class": labels,
            "split": splits,
        }
    )
    manifest.to_csv(root / "splits.tsv", sep="\t", index=False)
    return [folder], root / "splits.tsv"


def pa_strings(values: list[str]):
    import pyarrow as pa

    return pa.array(values, pa.string())


def pa_labels(values: list[int]):
    import pyarrow as pa

    return pa.array(values, pa.int8())


def _train_and_score(root: Path, *, shuffle_labels: bool) -> dict:
    """Train the demo's network on the generated cohort; patient-level metrics per split."""
    from test_model_pipeline import make_config

    from glioma.model.evaluate import evaluate_predictions
    from glioma.model.predict import predict_slices
    from glioma.model.training import train_classifier

    settings = _model_settings("config/demo.yaml")
    config = make_config(
        name=settings["name"], kwargs=settings["kwargs"], epochs=8, batch_size=32, lr=1e-3
    )
    shards, splits = _cohort(root, shuffle_labels=shuffle_labels)
    train_classifier(shards, splits, root / "model", config, progress=False)
    predict_slices(
        shards, splits, root / "model" / "best.pt", root / "s.parquet", root / "p.csv",
        config=config,
    )  # fmt: skip
    tables = {"patient": root / "tp.tsv", "slice": root / "ts.tsv"}
    doc = evaluate_predictions(
        root / "s.parquet", splits, root / "m.json", tables, n_boot=0, seed=0
    )
    return {split: doc["patient"][split]["macro_auc"] for split in ("train", "val", "test")}


@pytest.mark.slow
def test_model_learns_visible_classes_and_not_shuffled_labels(tmp_path):
    learned = _train_and_score(tmp_path / "real", shuffle_labels=False)
    assert learned["train"] > 0.95, learned
    assert learned["test"] > 0.9, learned
    shuffled = _train_and_score(tmp_path / "shuffled", shuffle_labels=True)
    # 32 test patients: a model that learned nothing scores 0.5 give or take ~0.1.
    assert 0.3 < shuffled["test"] < 0.7, shuffled


@pytest.mark.slow
def test_cross_validated_auc_stays_near_chance_with_shuffled_labels(tmp_path):
    """Out-of-fold predictions of a model that memorised its patients' labels would score high
    on shuffled labels; a leak-free cross-validation scores them, and the ensemble's test
    patients, at chance."""
    import pandas as pd
    from test_model_pipeline import make_config

    from glioma.dataset.folds import deal_folds, write_fold_manifest
    from glioma.model.ensemble import ensemble_predictions
    from glioma.model.evaluate import evaluate_predictions
    from glioma.model.predict import predict_slices
    from glioma.model.training import train_classifier

    settings = _model_settings("config/demo.yaml")
    config = make_config(
        name=settings["name"], kwargs=settings["kwargs"], epochs=5, batch_size=32, lr=1e-3
    )
    shards, single = _cohort(tmp_path, shuffle_labels=True)
    manifest = pd.read_csv(single, sep="\t", dtype=str, keep_default_na=False)
    development = manifest["split"] != "test"
    manifest["fold"] = ""
    manifest.loc[development, "split"] = "cv"
    manifest.loc[development, "fold"] = deal_folds(manifest[development], folds=3, seed=0)
    splits = tmp_path / "cv_splits.tsv"
    manifest.to_csv(splits, sep="\t", index=False)
    predicted = {}
    for fold in ("0", "1", "2"):
        folder = tmp_path / "folds" / fold
        write_fold_manifest(splits, folder / "splits.tsv", fold, ratios=INNER_RATIOS, seed=0)
        train_classifier(shards, folder / "splits.tsv", folder, config, progress=False)
        predict_slices(
            shards, splits, folder / "best.pt", folder / "s.parquet", folder / "p.csv",
            config=config,
        )  # fmt: skip
        predicted[fold] = folder / "s.parquet"
    ensemble_predictions(
        predicted, splits, tmp_path / "s.parquet", tmp_path / "p.csv", review_threshold=0.6
    )
    tables = {"patient": tmp_path / "tp.tsv", "slice": tmp_path / "ts.tsv"}
    doc = evaluate_predictions(
        tmp_path / "s.parquet", splits, tmp_path / "m.json", tables, n_boot=0, seed=0
    )
    scores = {split: doc["patient"][split]["macro_auc"] for split in ("cv", "test")}
    assert doc["patient"]["cv"]["n"] == 64, doc["patient"]["cv"]
    # 64 out-of-fold and 32 test patients: chance is 0.5 give or take ~0.1.
    assert 0.3 < scores["cv"] < 0.7, scores
    assert 0.3 < scores["test"] < 0.7, scores

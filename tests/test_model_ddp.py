"""Data-parallel training: rank shares of an epoch, lockstep collectives, a 2-process torchrun run.

The torchrun run uses the gloo backend on the CPU: it resumes a one-process run killed after its
first epoch, trains the remaining epochs with two ranks, and must leave the same files, columns,
keys and metrics as one process.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from test_model_pipeline import COHORTS, make_config, shard_table

from glioma.constants import CLASSES
from glioma.dataset.loader import make_loader, partition
from glioma.dataset.splits import read_splits
from glioma.model import distributed, launch, state
from glioma.model.data import labelled_slice_counts
from glioma.model.distributed import Ranks
from glioma.model.evaluate import evaluate_predictions
from glioma.model.predict import predict_slices
from glioma.model.state import HISTORY_COLUMNS, monitor
from glioma.model.training import train_classifier

torch.set_num_threads(1)


# --- partition of an epoch among ranks -----------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
@pytest.mark.parametrize("counts", [[20, 20, 20], [7, 0, 13, 1, 30, 2], [1, 1], [0, 0, 9]])
def test_partition_shares_are_disjoint_equal_and_complete(counts, world_size):
    owner = {}
    sizes = []
    for rank in range(world_size):
        share = partition(counts, rank, world_size)
        items = [(unit, i) for unit, start, stop in share for i in range(start, stop)]
        for unit, start, stop in share:
            assert 0 <= start < stop <= counts[unit]
        for item in items:
            assert item not in owner, f"{item} in ranks {owner[item]} and {rank}"
            owner[item] = rank
        # A share is one contiguous run of the units laid end to end.
        flat = [sum(counts[:unit]) + i for unit, i in items]
        if flat:
            assert flat == list(range(flat[0], flat[0] + len(flat)))
        sizes.append(len(items))
    assert len(owner) == sum(counts)
    assert max(sizes) - min(sizes) <= 1


def test_partition_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank"):
        partition([3, 4], 2, 2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Two cohorts x 3 classes x 4 patients (2 train, 1 val, 1 test), row groups of 7 slices."""
    root = tmp_path_factory.mktemp("ddp_data")
    rng = np.random.default_rng(1)
    manifest = []
    for cohort in COHORTS:
        patients = []
        for name in CLASSES:
            for i, split in enumerate(["train", "train", "val", "test"]):
                patients.append((f"{name.replace('-', '')}{i}", name))
                manifest.append((patients[-1][0], cohort, name, split))
        folder = root / "shards" / cohort
        folder.mkdir(parents=True)
        pq.write_table(
            shard_table(cohort, sorted(patients), rng),
            folder / "part-00000.parquet",
            row_group_size=7,  # cuts fall inside row groups
            use_dictionary=False,
        )
    splits = pd.DataFrame(manifest, columns=["patient", "cohort", "class", "split"])
    splits.to_csv(root / "splits.tsv", sep="\t", index=False)
    return {"shards": [root / "shards" / c for c in COHORTS], "splits": root / "splits.tsv"}


def epoch_keys(data: dict, epoch: int, rank: int, world_size: int) -> list[tuple]:
    """The (cohort, patient, slice_index) of every train slice a rank reads in one epoch."""
    loader = make_loader(
        data["shards"],
        read_splits(data["splits"]),
        "train",
        batch_size=4,
        shuffle=True,
        seed=3,
        num_workers=2,
        rank=rank,
        world_size=world_size,
    )
    loader.dataset.set_epoch(epoch)
    keys = []
    for batch in loader:
        index = batch["slice_index"].tolist()
        keys.extend(zip(batch["cohort"], batch["patient"], index, strict=True))
    return keys


def test_ranks_read_disjoint_halves_of_each_epoch(data):
    everything = epoch_keys(data, 1, 0, 1)
    assert len(everything) == len(set(everything)) > 20
    shares = []
    for epoch in (1, 2):
        halves = [epoch_keys(data, epoch, rank, 2) for rank in (0, 1)]
        assert not set(halves[0]) & set(halves[1])
        assert sorted(halves[0] + halves[1]) == sorted(everything)
        assert abs(len(halves[0]) - len(halves[1])) <= 1
        shares.append(set(halves[0]))
    assert shares[0] != shares[1], "the shares should follow each epoch's shuffle"


# --- collectives between two real gloo processes -------------------------------------------------


def _collectives(rank: int, store: str, lengths: list[int], results) -> None:
    """One rank: lockstep over ``lengths[rank]`` batches, then reduce, broadcast and sync."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2
    )
    ranks = Ranks(rank, 2, rank, torch.distributed.group.WORLD)
    steps = len(list(distributed.lockstep(range(lengths[rank]), ranks)))
    reduced = distributed.reduce_epoch(
        {"train_loss": [1.0, 4.0][rank], "train_slices": [10, 30][rank], "seconds": rank + 1.0},
        ranks,
    )
    row = distributed.broadcast({"from": rank}, ranks)
    model = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(model.weight, float(rank))  # rank 1's weights differ
    try:
        distributed.check_in_sync(model, ranks)
        synced = "in sync"
    except RuntimeError as err:
        synced = str(err)
    results.put((rank, steps, reduced, row, synced))
    torch.distributed.destroy_process_group()


def test_lockstep_reduce_broadcast_and_sync_check_across_two_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    store = tmp_path / "store"
    workers = [
        context.Process(target=_collectives, args=(rank, str(store), [5, 3], results))
        for rank in (0, 1)
    ]
    for worker in workers:
        worker.start()
    got = sorted(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    for rank, steps, reduced, row, synced in got:
        assert steps == 3, "both ranks stop with the first one to run out"
        assert reduced["train_loss"] == pytest.approx((1.0 * 10 + 4.0 * 30) / 40)
        assert reduced["train_slices"] == 40 and reduced["seconds"] == 2.0
        assert row == {"from": 0}
        assert synced == "the weights of ranks [1] differ from rank 0's", rank


# --- launcher ------------------------------------------------------------------------------------


def test_process_count_follows_setting_and_visible_gpus(monkeypatch):
    assert launch.count_processes(0, "cpu") == 1
    assert launch.count_processes(3, "cpu") == 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert launch.count_processes(0) == 4
    assert launch.count_processes(2) == 2
    assert launch.count_processes(0, "cpu") == 1
    with pytest.raises(ValueError, match="sees 4 GPUs"):
        launch.count_processes(8)


def test_torchrun_command_and_failure_are_reported(tmp_path, caplog):
    command = launch.torchrun_command(
        2, ["s/A", "s/B"], "splits.tsv", "out", "out/config.yaml", state_path="st.pt", threads=3
    )
    assert command[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
    ]
    assert command[command.index("--shards") + 1 : command.index("--splits")] == ["s/A", "s/B"]
    assert command[command.index("--state") + 1] == "st.pt" and "--device" not in command
    caplog.set_level(logging.INFO, logger="glioma.model.launch")
    failing = [sys.executable, "-c", "print('rank says hello'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match="exit status 3"):
        launch.run_logged(failing, {"PATH": "/usr/bin:/bin"})
    assert "rank says hello" in caplog.text


# --- two ranks under torchrun --------------------------------------------------------------------


class Killed(Exception):
    """Stands for a kill right after the first epoch's checkpoint."""


def kill_after_first_epoch(save):
    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise Killed

    return save_then_die


def predict_and_evaluate(data: dict, model: Path, out: Path, config: dict) -> dict:
    predict_slices(
        data["shards"],
        data["splits"],
        model,
        out / "slices.parquet",
        out / "predictions.csv",
        config=config,
    )
    tables = {level: out / f"table2_{level}.tsv" for level in ("patient", "slice")}
    evaluate_predictions(
        out / "slices.parquet", data["splits"], out / "metrics.json", tables, n_boot=10, seed=0
    )
    return json.loads((out / "metrics.json").read_text())


def structure(value):
    """Keys (recursively) and value types of a JSON document, without the values; a number
    and null (an undefined metric, e.g. a precision without a predicted case) count alike."""
    if isinstance(value, dict):
        return {key: structure(item) for key, item in value.items()}
    if value is None or isinstance(value, float):
        return "number"
    return type(value).__name__


class Lines(logging.Handler):
    """Keeps the messages it receives."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def resumed(data, tmp_path_factory) -> dict:
    """One process killed after epoch 1, then two torchrun ranks (gloo) finish epochs 2-3."""
    root = tmp_path_factory.mktemp("ddp_run")
    config = make_config(epochs=3, processes=2)
    single, double = root / "single", root / "double"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state, "save_state", kill_after_first_epoch(state.save_state))
        with pytest.raises(Killed):
            train_classifier(
                data["shards"],
                data["splits"],
                single,
                config,
                state_path=single / "state.pt",
                progress=False,
            )
    double.mkdir()
    (double / "state.pt").write_bytes((single / "state.pt").read_bytes())
    handler = Lines()
    logger = logging.getLogger("glioma.model.launch")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_HUB_OFFLINE", "1")
            launch.launch_training(
                data["shards"],
                data["splits"],
                double,
                config,
                state_path=double / "state.pt",
                threads=2,
                device="cpu",
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    return {
        "config": config,
        "single": single,
        "double": double,
        "lines": handler.lines,
        "root": root,
    }


@pytest.mark.slow
def test_two_ranks_write_the_one_process_files(resumed):
    single, double = resumed["single"], resumed["double"]
    assert sorted(p.name for p in double.iterdir()) == [
        "best.pt",
        "config.yaml",
        "history.csv",
        "last.pt",
    ]
    assert yaml.safe_load((double / "config.yaml").read_text()) == resumed["config"]
    history = pd.read_csv(double / "history.csv")
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert np.isfinite(history.drop(columns="epoch").to_numpy()).all()
    # Epoch 1 is the killed process's, resumed rather than trained again.
    first = pd.read_csv(single / "history.csv")
    pd.testing.assert_frame_equal(history.iloc[:1], first)
    best = torch.load(double / "best.pt", weights_only=True)
    last = torch.load(double / "last.pt", weights_only=True)
    one_best = torch.load(single / "best.pt", weights_only=True)
    one_state = torch.load(single / "state.pt", weights_only=True)
    assert set(best) == set(one_best) and set(last) == set(one_state)
    assert set(last["run"]) == set(one_state["run"]) and last["run"]["epoch"] == 3
    assert set(best["model"]) == set(one_best["model"])  # bare weights: no DDP "module." prefix
    rows = history.to_dict("records")
    select = resumed["config"]["model"]["select"]
    assert best["epoch"] == max(rows, key=lambda row: tuple(monitor(row, select)[1]))["epoch"]
    trained = [not torch.equal(last["model"][k], one_state["model"][k]) for k in last["model"]]
    assert any(trained), "the two ranks did not change the weights"


@pytest.mark.slow
def test_each_rank_trained_half_of_every_epoch(resumed, data):
    counts = [
        json.loads(line.split("slices trained per rank: ")[1])
        for line in resumed["lines"]
        if "slices trained per rank: " in line
    ]
    splits = read_splits(data["splits"])
    config = resumed["config"]
    per_patient = labelled_slice_counts(data["shards"], splits, "train", config=config)
    total = int(per_patient["slices"].sum())
    batch = config["model"]["batch_size"] // 2  # per rank
    workers = max(1, config["model"]["num_workers"])
    assert len(counts) == 2  # epochs 2 and 3
    for per_rank in counts:
        # Whole batches only (drop_last), in lockstep: both ranks train the same number of
        # slices, and each worker leaves out less than one batch of its share.
        assert len(per_rank) == 2 and per_rank[0] == per_rank[1]
        assert per_rank[0] % batch == 0
        assert total - 2 * workers * batch < sum(per_rank) <= total


@pytest.mark.slow
def test_two_rank_model_has_the_one_process_metrics_contract(resumed, data):
    config, root = resumed["config"], resumed["root"]
    one = predict_and_evaluate(data, resumed["single"] / "best.pt", root / "eval1", config)
    two = predict_and_evaluate(data, resumed["double"] / "best.pt", root / "eval2", config)
    assert structure(two) == structure(one)
    assert set(two["patient"]) == {"train", "val", "test"}

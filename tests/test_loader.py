"""Streaming loader: exact values, filters, shuffling, workers, balance, leakage, bounded memory."""

from __future__ import annotations

import collections
import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from glioma.constants import CLASSES
from glioma.dataset.loader import (
    SliceDataset,
    iter_patient_batches,
    make_loader,
    shard_files,
    split_keys,
)
from glioma.dataset.shards import build_shards
from glioma.dataset.splits import assign_splits, slice_split
from glioma.errors import InputError

torch.set_num_threads(1)
SIZE = 8
RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


def make_cohorts(
    root: Path,
    patients: dict[str, list[tuple[str, int]]],
    *,
    size: int = SIZE,
    rows_per_group: int = 5,
    rows_per_file: int = 20,
) -> tuple[list[Path], pd.DataFrame, dict]:
    """Build shards for {cohort: [(class, slices), ...]}; return shard dirs, sheet and images.

    Every pixel of slice k of patient p equals a code of (cohort, p, k), so values are checkable.
    """
    rows, truth, dirs = [], {}, []
    for c, (cohort, members) in enumerate(patients.items()):
        crops = []
        for p, (name, slices) in enumerate(members):
            patient = f"{cohort}p{p:03d}"
            rows.append((patient, cohort, name))
            codes = np.array([c * 10 + (p % 10) + k / 64 for k in range(slices)], np.float16)
            images = np.broadcast_to(codes[:, None, None, None], (slices, 4, size, size))
            index = np.arange(3, 3 + slices, dtype=np.int32)
            crops.append(root / "crops" / cohort / f"{patient}.npz")
            crops[-1].parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                crops[-1],
                images=np.ascontiguousarray(images),
                slice_index=index,
                roi_area=np.ones(slices, np.float32),
                spacing=np.ones(3, np.float32),
            )
            truth.update(
                {(cohort, patient, int(i)): float(v) for i, v in zip(index, codes, strict=True)}
            )
        sheet = pd.DataFrame(rows, columns=["patient", "cohort", "class"])
        sheet.to_csv(root / "samples.tsv", sep="\t", index=False)
        out = root / "shards" / cohort
        build_shards(
            crops,
            root / "samples.tsv",
            out,
            cohort=cohort,
            config_hash="h",
            image_size=size,
            rows_per_group=rows_per_group,
            rows_per_file=rows_per_file,
        )
        dirs.append(out)
    return dirs, pd.DataFrame(rows, columns=["patient", "cohort", "class"]), truth


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[list[Path], pd.DataFrame, dict]:
    """Two cohorts, 26 patients (2 unlabelled), 3-9 slices each, several files and row groups."""
    rng = np.random.default_rng(0)
    members = {
        cohort: [
            (CLASSES[i % 3] if i not in (4, 11) else "", int(rng.integers(3, 10)))
            for i in range(13)
        ]
        for cohort in ("A", "B")
    }
    return make_cohorts(tmp_path_factory.mktemp("loader"), members)


def keys_of(samples) -> list[tuple[str, str, int]]:
    return [(s["cohort"], s["patient"], s["slice_index"]) for s in samples]


def test_every_labelled_slice_once_with_exact_values(data) -> None:
    dirs, sheet, truth = data
    files = shard_files(dirs)
    assert files == sorted(files) and len(files) > 2
    samples = list(SliceDataset(files, None))
    unlabelled = set(sheet.loc[sheet["class"] == "", "patient"])
    expected = [k for k in truth if k[1] not in unlabelled]
    assert sorted(keys_of(samples)) == sorted(expected)
    for sample in samples:
        key = (sample["cohort"], sample["patient"], sample["slice_index"])
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (4, SIZE, SIZE)
        assert torch.all(sample["image"] == truth[key])
        name = sheet.set_index("patient").loc[sample["patient"], "class"]
        assert sample["label"].dtype == torch.int64 and int(sample["label"]) == CLASSES.index(name)
    everything = list(SliceDataset(files, None, labelled_only=False))
    assert len(everything) == len(truth)


def test_key_filters_set_and_callable(data) -> None:
    dirs, _, truth = data
    files = shard_files(dirs)
    chosen = {("A", "Ap001"), ("B", "Bp012")}
    got = keys_of(SliceDataset(files, chosen))
    assert sorted(got) == sorted(k for k in truth if k[:2] in chosen)
    odd = keys_of(SliceDataset(files, lambda c, p, s: s % 2 == 1, labelled_only=False))
    assert sorted(odd) == sorted(k for k in truth if k[2] % 2 == 1)


def test_shuffle_is_deterministic_per_epoch_and_loses_nothing(data) -> None:
    files = shard_files(data[0])
    dataset = SliceDataset(files, None, shuffle=True, seed=3, buffer_size=8)
    first = keys_of(dataset)
    assert keys_of(dataset) == first
    dataset.set_epoch(1)
    second = keys_of(dataset)
    assert second != first and sorted(second) == sorted(first)
    assert keys_of(SliceDataset(files, None)) != first  # really shuffled


def test_two_workers_yield_every_slice_exactly_once(data) -> None:
    dirs, sheet, truth = data
    splits = sheet.assign(split="train")
    loader = make_loader(
        dirs, splits, "all", batch_size=7, shuffle=True, seed=1, num_workers=2, labelled_only=False
    )
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (4, SIZE, SIZE) and batch["image"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64 and batch["slice_index"].dtype == torch.int64
        seen += zip(batch["cohort"], batch["patient"], batch["slice_index"].tolist(), strict=True)
    assert collections.Counter(seen) == collections.Counter(list(truth))


def test_balance_gives_roughly_equal_class_counts(tmp_path: Path) -> None:
    members = {"A": [("IDHwt", 9)] * 60 + [("IDHmut-codel", 9)] * 12 + [("IDHmut-intact", 9)] * 4}
    dirs, _, _ = make_cohorts(tmp_path, members, size=4, rows_per_group=10, rows_per_file=200)
    files = shard_files(dirs)
    plain = collections.Counter(int(s["label"]) for s in SliceDataset(files, None, shuffle=True))
    assert plain[0] > 10 * plain[2]
    dataset = SliceDataset(files, None, shuffle=True, balance=True, seed=2, buffer_size=96)
    counts = collections.Counter(int(s["label"]) for s in dataset)
    assert sum(counts.values()) == sum(plain.values())
    for label in range(3):
        assert 0.25 < counts[label] / sum(counts.values()) < 0.42, counts


def test_balance_needs_labelled_slices(data) -> None:
    with pytest.raises(ValueError, match="labelled_only"):
        SliceDataset(shard_files(data[0]), None, balance=True, labelled_only=False)


def test_patient_level_splits_do_not_leak(data) -> None:
    dirs, sheet, _ = data
    splits = assign_splits(sheet, level="patient", ratios=RATIOS, seed=0)
    patients = {}
    for name in ("train", "val", "test", "unlabelled"):
        loader = make_loader(dirs, splits, name, batch_size=16, shuffle=False, seed=0)
        patients[name] = {
            (c, p) for b in loader for c, p in zip(b["cohort"], b["patient"], strict=True)
        }
        want = splits[splits["split"] == name]
        assert patients[name] == set(zip(want["cohort"], want["patient"], strict=True))
    names = list(patients)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not patients[a] & patients[b]


def test_slice_level_assigns_slices_stably_and_completely(data) -> None:
    dirs, sheet, truth = data
    splits = assign_splits(sheet, level="slice", ratios=RATIOS, seed=0)
    with pytest.raises(ValueError, match="ratios and split_seed"):
        make_loader(dirs, splits, "train", batch_size=4, shuffle=False, seed=0)
    got = {}
    for name in ("train", "val", "test"):
        loader = make_loader(
            dirs, splits, name, batch_size=64, shuffle=True, seed=0, ratios=RATIOS, split_seed=5
        )
        got[name] = {
            (c, p, s)
            for b in loader
            for c, p, s in zip(b["cohort"], b["patient"], b["slice_index"].tolist(), strict=True)
        }
    labelled = {k for k in truth if k[1] in set(sheet.loc[sheet["class"] != "", "patient"])}
    assert got["train"] | got["val"] | got["test"] == labelled
    assert sum(map(len, got.values())) == len(labelled)
    for name, members in got.items():
        assert all(slice_split(5, c, p, s, RATIOS) == name for c, p, s in members)
    # The leak the study had: one patient's slices in both train and test.
    assert {k[:2] for k in got["train"]} & {k[:2] for k in got["test"]}


def test_stale_shard_labels_fail_loudly(data) -> None:
    dirs, sheet, _ = data
    splits = assign_splits(sheet, level="patient", ratios=RATIOS, seed=0)
    splits.loc[splits["patient"] == "Ap000", "class"] = "IDHmut-codel"  # was IDHwt in the shards
    with pytest.raises(InputError, match="rebuild the shards") as caught:
        for _ in make_loader(dirs, splits, "all", batch_size=4, shuffle=False, seed=0):
            pass
    assert caught.value.patient == "Ap000" and caught.value.column == "label"


def test_bad_split_name_and_missing_folder(data, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        split_keys(data[1].assign(split="train"), "training")
    with pytest.raises(InputError, match="shard folder does not exist"):
        shard_files([tmp_path / "nope"])


def test_iter_patient_batches_groups_whole_patients(data) -> None:
    dirs, sheet, truth = data
    seen = []
    for cohort, patient, images, index in iter_patient_batches(dirs, None):
        seen.append((cohort, patient))
        want = sorted(k[2] for k in truth if k[:2] == (cohort, patient))
        assert index.tolist() == want and index.dtype == np.int64
        assert images.dtype == torch.float32 and images.shape == (len(want), 4, SIZE, SIZE)
        for image, i in zip(images, index, strict=True):
            assert torch.all(image == truth[(cohort, patient, int(i))])
    assert seen == sorted(set(zip(sheet["cohort"], sheet["patient"], strict=True)))
    some = [p for _, p, _, _ in iter_patient_batches(dirs, {("B", "Bp004"), ("A", "Ap002")})]
    assert some == ["Ap002", "Bp004"]


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peaks(files: list[Path]) -> tuple[int, int, int]:
    """Stream every slice; return peak traced (Python, numpy) bytes, Arrow bytes, RSS growth."""
    gc.collect()
    base_rss = _rss()
    dataset = SliceDataset(files, None, shuffle=True, buffer_size=16)
    tracemalloc.start()
    arrow = rss = 0
    for count, _ in enumerate(dataset):
        arrow = max(arrow, pa.total_allocated_bytes())
        if count % 10 == 0:
            rss = max(rss, _rss() - base_rss)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return traced, arrow, rss


def test_memory_stays_flat_as_shards_are_added(tmp_path: Path) -> None:
    members = {f"c{i:02d}": [("IDHwt", 25), ("IDHmut-codel", 25)] for i in range(40)}
    dirs, _, _ = make_cohorts(tmp_path, members, size=64, rows_per_group=50, rows_per_file=50)
    assert len(dirs) == 40  # 40 shards x 50 slices x 32 kB = 64 MB of images in all
    _peaks(shard_files(dirs[:4]))  # warm-up: imports, allocator arenas
    small = _peaks(shard_files(dirs[:4]))
    large = _peaks(shard_files(dirs))
    row_group = 50 * 4 * 64 * 64 * 2  # 1.6 MB
    assert large[0] < 1.5 * small[0] + 200_000, (small, large)  # Python objects and numpy
    assert large[1] <= 4 * row_group, (small, large)  # Arrow: a few row groups, of 40
    assert large[2] < small[2] + 8_000_000, (small, large)  # tensors (RSS)

"""Per-patient crops -> Parquet shards: schema, exact round trip, layout, atomic writes, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from glioma.dataset.shards import (
    build_shards,
    crop_table,
    preprocess_hash,
    read_crop,
    shard_schema,
)
from glioma.errors import InputError

SIZE = 8
CLASSES_OF = {"p01": "IDHwt", "p02": "IDHmut-codel", "p03": "", "p04": "IDHmut-intact"}
SLICES_OF = {"p01": 7, "p02": 3, "p03": 12, "p04": 1}


def write_crop(path: Path, slices: int, size: int = SIZE, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a crop file as ``crop_roi`` does and return its arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "images": (rng.standard_normal((slices, 4, size, size)) * 3).astype(np.float16),
        "slice_index": np.arange(20, 20 + slices, dtype=np.int32),
        "roi_area": (rng.random(slices) * 500).astype(np.float32),
        "spacing": np.array([0.9, 0.9, 3.0], np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def write_sheet(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """Write a sample sheet with the columns build_shards reads (plus one it ignores)."""
    frame = pd.DataFrame(rows, columns=["patient", "cohort", "class"]).assign(age="50")
    frame.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[list[Path], Path, dict[str, dict[str, np.ndarray]]]:
    """Four patients of cohort A (one unlabelled), their crop files and sheet."""
    arrays, paths = {}, []
    for seed, (patient, slices) in enumerate(SLICES_OF.items()):
        path = tmp_path / "crops" / "A" / f"{patient}.npz"
        arrays[patient] = write_crop(path, slices, seed=seed)
        paths.append(path)
    rows = [(p, "A", c) for p, c in CLASSES_OF.items()] + [("q01", "B", "IDHwt")]
    return paths, write_sheet(tmp_path / "samples.tsv", rows), arrays


def test_round_trip_is_exact(tmp_path: Path, cohort) -> None:
    paths, sheet, arrays = cohort
    out = tmp_path / "shards" / "A"
    written = build_shards(
        paths[::-1], sheet, out, cohort="A", config_hash="abc", image_size=SIZE, rows_per_group=5
    )
    assert written == sorted(out.glob("part-*.parquet")) and len(written) == 1
    table = pq.read_table(out)
    assert table.schema.equals(shard_schema(SIZE, SIZE))
    frame = table.drop_columns(["image"]).to_pandas()
    assert list(frame["patient"].unique()) == sorted(SLICES_OF)  # patient order, not input order
    images = np.frombuffer(table.column("image").combine_chunks().buffers()[1], np.float16)
    images = images[: table.num_rows * 4 * SIZE * SIZE].reshape(-1, 4, SIZE, SIZE)
    for patient, crop in arrays.items():
        rows = (frame["patient"] == patient).to_numpy()
        # Bitwise float16 equality: nothing was converted on the way.
        assert np.array_equal(images[rows].view(np.uint16), crop["images"].view(np.uint16))
        assert np.array_equal(frame.loc[rows, "slice_index"], crop["slice_index"])
        assert np.array_equal(frame.loc[rows, "roi_area"].to_numpy(np.float32), crop["roi_area"])
        expected_label = {"IDHwt": 0, "IDHmut-codel": 1, "IDHmut-intact": 2, "": -1}
        assert set(frame.loc[rows, "label"]) == {expected_label[CLASSES_OF[patient]]}
        assert set(frame.loc[rows, "class"]) == {CLASSES_OF[patient]}
    assert np.allclose(np.stack(frame["spacing"]), [0.9, 0.9, 3.0])
    assert set(frame["cohort"]) == {"A"} and set(frame["preprocess_hash"]) == {"abc"}
    assert set(frame["height"]) == {SIZE} and set(frame["width"]) == {SIZE}


def test_layout_row_groups_and_patient_boundaries(tmp_path: Path, cohort) -> None:
    paths, sheet, _ = cohort
    out = tmp_path / "shards" / "A"
    files = build_shards(
        paths,
        sheet,
        out,
        cohort="A",
        config_hash="h",
        image_size=SIZE,
        rows_per_group=4,
        rows_per_file=8,
    )
    # p01 (7) + p02 (3) fill file 0 past 8 rows; p03 (12) then file 1; p04 (1) file 2.
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [10, 12, 1]
    for path in files:
        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(size == 4 for size in sizes[:-1]) and 0 < sizes[-1] <= 4
    patients = [set(pq.read_table(f, columns=["patient"]).column(0).to_pylist()) for f in files]
    assert patients == [{"p01", "p02"}, {"p03"}, {"p04"}]
    options = pq.ParquetFile(files[0]).metadata.row_group(0)
    codecs = {options.column(i).path_in_schema: options.column(i).compression for i in range(11)}
    assert codecs["image"] == "LZ4"
    assert "PLAIN_DICTIONARY" not in options.column(5).encodings  # image column, no dictionary
    assert "RLE_DICTIONARY" not in options.column(5).encodings


def test_image_column_is_zero_copy() -> None:
    crop = {
        "images": np.ones((3, 4, SIZE, SIZE), np.float16),
        "slice_index": np.arange(3, dtype=np.int32),
        "roi_area": np.ones(3, np.float32),
        "spacing": np.ones(3, np.float32),
    }
    from glioma.dataset.shards import Crop

    table = crop_table(Crop(**crop), patient="p", cohort="c", class_name="IDHwt", config_hash="h")
    assert table.column("image").chunk(0).buffers()[1].address == crop["images"].ctypes.data


def test_empty_cohort_writes_one_empty_shard(tmp_path: Path) -> None:
    sheet = write_sheet(tmp_path / "samples.tsv", [("p1", "A", "IDHwt")])
    files = build_shards([], sheet, tmp_path / "A", cohort="A", config_hash="h", image_size=SIZE)
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == 0
    assert pq.read_schema(files[0]).equals(shard_schema(SIZE, SIZE))


def test_failure_mid_write_leaves_no_shard_folder(tmp_path: Path, cohort) -> None:
    paths, sheet, _ = cohort
    np.savez(paths[2], images=np.zeros((2, 4, SIZE, SIZE), np.float32))  # p03: broken
    out = tmp_path / "shards" / "A"
    with pytest.raises(InputError, match="p03"):
        build_shards(paths, sheet, out, cohort="A", config_hash="h", image_size=SIZE)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary folder left behind either


def test_existing_folder_is_replaced_whole(tmp_path: Path, cohort) -> None:
    paths, sheet, _ = cohort
    out = tmp_path / "A"
    out.mkdir()
    (out / "part-00007.parquet").write_text("stale")
    build_shards(paths, sheet, out, cohort="A", config_hash="h", image_size=SIZE)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "crops", "samples.tsv"]


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"images": np.zeros((2, 4, SIZE, SIZE), np.float32)}, "float16"),
        ({"images": np.zeros((2, 4, SIZE + 1, SIZE), np.float16)}, "preprocess.crop.size"),
        ({"images": np.zeros((2, 3, SIZE, SIZE), np.float16)}, "shape"),
        ({"slice_index": np.zeros(3, np.int32)}, "slice_index"),
        ({"spacing": np.zeros(2, np.float32)}, "spacing"),
        ({"roi_area": None}, "roi_area"),
    ],
)
def test_bad_crop_names_patient_column_and_file(tmp_path: Path, change, pattern: str) -> None:
    arrays = {
        "images": np.zeros((2, 4, SIZE, SIZE), np.float16),
        "slice_index": np.zeros(2, np.int32),
        "roi_area": np.zeros(2, np.float32),
        "spacing": np.ones(3, np.float32),
    }
    arrays.update(change)
    path = tmp_path / "p9.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(InputError, match=pattern) as caught:
        read_crop(path, patient="p9", image_size=SIZE)
    assert caught.value.patient == "p9" and caught.value.path == str(path)


def test_crop_of_patient_missing_from_sheet(tmp_path: Path) -> None:
    path = tmp_path / "crops" / "ghost.npz"
    write_crop(path, 2)
    sheet = write_sheet(tmp_path / "samples.tsv", [("ghost", "B", "IDHwt")])
    with pytest.raises(InputError, match="not a patient of cohort 'A'") as caught:
        build_shards([path], sheet, tmp_path / "A", cohort="A", config_hash="h", image_size=SIZE)
    assert caught.value.patient == "ghost"


def test_preprocess_hash_tracks_values_not_key_order() -> None:
    config = {"crop": {"size": 224, "margin_mm": 10.0}, "n4": {"shrink_factor": 4}}
    reordered = {"n4": {"shrink_factor": 4}, "crop": {"margin_mm": 10.0, "size": 224}}
    changed = {"crop": {"size": 128, "margin_mm": 10.0}, "n4": {"shrink_factor": 4}}
    assert preprocess_hash(config) == preprocess_hash(reordered)
    assert preprocess_hash(config) != preprocess_hash(changed)
    assert len(preprocess_hash(config)) == 64
    # How the work is split into jobs writes the same files: switching must not rebuild shards.
    assert preprocess_hash({**config, "jobs": "patient"}) == preprocess_hash(config)

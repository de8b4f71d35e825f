"""Per-patient slice crops -> Parquet shards, one folder per cohort.

The image column is built zero-copy from the crop's float16 array; the layout and the writer are
in :mod:`glioma.dataset.writer`. A patient never spans two part files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from glioma.constants import SEQUENCES, class_index
from glioma.dataset.hashing import preprocess_hash
from glioma.dataset.splits import read_sheet
from glioma.dataset.writer import (
    IMAGE_COLUMN,
    IMAGE_DTYPE,
    PART_PATTERN,
    ROWS_PER_FILE,
    ROWS_PER_GROUP,
    ShardWriter,
    atomic_dir,
    shard_schema,
)
from glioma.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_COLUMN",
    "IMAGE_DTYPE",
    "PART_PATTERN",
    "Crop",
    "build_shards",
    "crop_table",
    "preprocess_hash",
    "read_crop",
    "shard_schema",
]

CROP_KEYS = ("images", "slice_index", "roi_area", "spacing")


@dataclass(frozen=True)
class Crop:
    """One patient's slices as stored in ``results/crops/{cohort}/{patient}.npz``."""

    images: np.ndarray  # float16 (S, 4, H, W)
    slice_index: np.ndarray  # int32 (S,)
    roi_area: np.ndarray  # float32 (S,)
    spacing: np.ndarray  # float32 (3,)


def _check_shape(
    array: np.ndarray, expected: tuple[int, ...], *, patient: str, key: str, path: Path
) -> None:
    """Raise when ``array`` does not have the ``expected`` shape."""
    if array.shape != expected:
        raise InputError(
            f"has shape {array.shape}; expected {expected}", patient=patient, column=key, path=path
        )


def read_crop(path: str | Path, *, patient: str, image_size: int) -> Crop:
    """Read and check one patient's crop file.

    Raises:
        InputError: a key is missing, or a shape, dtype or slice size breaks the contract.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in CROP_KEYS if key in npz.files}
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot be read as a crop file ({err})", patient=patient, path=path
        ) from err
    for key in CROP_KEYS:
        if key not in arrays:
            raise InputError(
                "key is missing from the crop file", patient=patient, column=key, path=path
            )
    images = arrays["images"]
    where = {"patient": patient, "column": "images", "path": path}
    if images.ndim != 4 or images.shape[1:] != (len(SEQUENCES), image_size, image_size):
        raise InputError(
            f"has shape {images.shape}; expected (S, {len(SEQUENCES)}, {image_size}, "
            f"{image_size}) (preprocess.crop.size changed since the crops were made?)",
            **where,
        )
    if images.dtype != np.float16:
        raise InputError(f"has dtype {images.dtype}; expected float16", **where)
    for key, expected in [
        ("slice_index", (len(images),)),
        ("roi_area", (len(images),)),
        ("spacing", (3,)),
    ]:
        _check_shape(arrays[key], expected, patient=patient, key=key, path=path)
    return Crop(
        images=images.astype(IMAGE_DTYPE, copy=False),
        slice_index=arrays["slice_index"].astype(np.int32, copy=False),
        roi_area=arrays["roi_area"].astype(np.float32, copy=False),
        spacing=arrays["spacing"].astype(np.float32, copy=False),
    )


def crop_table(
    crop: Crop, *, patient: str, cohort: str, class_name: str, config_hash: str
) -> pa.Table:
    """Return one patient's slices as a shard table; the image column shares the crop's memory."""
    slices, _, height, width = crop.images.shape
    schema = shard_schema(height, width)
    images = np.ascontiguousarray(crop.images)
    image_array = pa.FixedSizeBinaryArray.from_buffers(
        schema.field(IMAGE_COLUMN).type, slices, [None, pa.py_buffer(images)]
    )
    spacing = pa.FixedSizeListArray.from_arrays(pa.array(np.tile(crop.spacing, slices)), 3)
    columns = [
        pa.array([patient] * slices, pa.string()),
        pa.array([cohort] * slices, pa.string()),
        pa.array(crop.slice_index),
        pa.array(np.full(slices, class_index(class_name), np.int8)),
        pa.array([class_name] * slices, pa.string()),
        image_array,
        pa.array(np.full(slices, height, np.int16)),
        pa.array(np.full(slices, width, np.int16)),
        pa.array(crop.roi_area),
        spacing,
        pa.array([config_hash] * slices, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _patient_of(path: Path) -> str:
    """Return the patient ID a crop file is named after (``{patient}.npz``)."""
    return path.name.removesuffix(".npz")


def build_shards(
    crop_paths: Sequence[str | Path],
    sheet: str | Path | Mapping[str, str],
    out_dir: str | Path,
    *,
    cohort: str,
    config_hash: str,
    image_size: int,
    rows_per_group: int = ROWS_PER_GROUP,
    rows_per_file: int = ROWS_PER_FILE,
    compression: str = "lz4",
) -> list[Path]:
    """Aggregate one cohort's crop files into Parquet shards under ``out_dir``, atomically.

    Patients are written in ID order, one crop file in memory at a time.

    Args:
        crop_paths: the cohort's ``results/crops/{cohort}/{patient}.npz`` files.
        sheet: the validated sample sheet, or the cohort's ``{patient: class}`` (as the rule
            passes it, so that the sheet being rewritten for another cohort rebuilds nothing
            here); a class is empty when unlabelled.
        out_dir: the shard folder ``results/shards/{cohort}``.
        cohort, config_hash: stored in every row (``preprocess_hash`` of the preprocess config).
        image_size: expected slice height and width (``preprocess.crop.size``).
        rows_per_group, rows_per_file, compression: shard layout; ``lz4`` decodes fastest
            (benchmarks/dataset.md), ``zstd`` (level 1) and ``none`` also work.

    Returns:
        The part files written. Raises InputError when a crop file breaks the contract or
        names a patient not in the sheet's cohort.
    """
    if isinstance(sheet, Mapping):
        classes = {str(patient): str(label) for patient, label in sheet.items()}
    else:
        table = read_sheet(sheet)
        members = table[table["cohort"] == cohort]
        classes = dict(zip(members["patient"], members["class"], strict=True))
    paths = sorted((Path(p) for p in crop_paths), key=_patient_of)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        writer = ShardWriter(
            tmp,
            shard_schema(image_size, image_size),
            rows_per_group=rows_per_group,
            rows_per_file=rows_per_file,
            compression=compression,
            compression_level=1 if compression == "zstd" else None,
        )
        slices = sum(
            _add_patient(
                writer, path, classes, cohort=cohort, config_hash=config_hash, image_size=image_size
            )
            for path in paths
        )
        names = [f.name for f in writer.close()]
    log.info(
        "cohort %s: %d patients, %d slices in %d part files", cohort, len(paths), slices, len(names)
    )
    return [out_dir / name for name in names]


def _add_patient(
    writer: ShardWriter,
    path: Path,
    classes: dict[str, str],
    *,
    cohort: str,
    config_hash: str,
    image_size: int,
) -> int:
    """Append one crop file's slices to ``writer``; return how many."""
    patient = _patient_of(path)
    if patient not in classes:
        raise InputError(
            f"is not a patient of cohort {cohort!r} in the sheet", patient=patient, path=path
        )
    crop = read_crop(path, patient=patient, image_size=image_size)
    writer.add(
        crop_table(
            crop,
            patient=patient,
            cohort=cohort,
            class_name=classes[patient],
            config_hash=config_hash,
        )
    )
    return len(crop.slice_index)

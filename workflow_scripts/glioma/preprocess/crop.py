"""Crop the tumour ROI into resized 2D axial slices, written per patient as an ``.npz``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from glioma.constants import SEQUENCES
from glioma.errors import InputError
from glioma.io import atomic_path, present_sequences, read_image
from glioma.preprocess import in_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Orientation:
    """How a grid's axes map onto the patient's L, P and S axes (LPS, as ITK uses).

    Attributes:
        axes: ``axes[p]`` is the grid axis (0 = x, 1 = y, 2 = z) closest to patient axis ``p``
            (0 = left, 1 = posterior, 2 = superior).
        flips: ``flips[p]`` is True when that grid axis runs against patient axis ``p``.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def axial(self) -> int:
        """The grid axis closest to the superior-inferior direction."""
        return self.axes[2]


def orientation(direction: Sequence[float]) -> Orientation:
    """Match grid axes to patient axes for any direction matrix (oblique, permuted, flipped).

    The assignment maximises the summed alignment over the six permutations, so two grid axes can
    never claim the same patient axis (a greedy choice can, on 45-degree obliques).
    """
    matrix = np.asarray(direction, float).reshape(3, 3)  # column j = grid axis j in LPS
    best = max(
        itertools.permutations(range(3)),
        key=lambda axes: sum(abs(matrix[p, axes[p]]) for p in range(3)),
    )
    flips = tuple(bool(matrix[p, best[p]] < 0) for p in range(3))
    return Orientation(axes=tuple(best), flips=flips)


def to_patient_axes(array_zyx: np.ndarray, orient: Orientation) -> np.ndarray:
    """Reorder a SimpleITK (z, y, x) array to (L, P, S) axes, each index increasing L, P, S."""
    xyz = array_zyx.transpose(2, 1, 0)
    out = xyz.transpose(orient.axes)
    for p, flip in enumerate(orient.flips):
        if flip:
            out = np.flip(out, axis=p)
    return out


def _box(roi_lps: np.ndarray, spacing_lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (voxel units) and extent (mm) along L and P of the ROI's in-plane bounding box."""
    in_plane = roi_lps.any(axis=2)
    centre, extent = [], []
    for p in range(2):
        hits = np.flatnonzero(in_plane.any(axis=1 - p))
        centre.append((hits[0] + hits[-1]) / 2)
        extent.append((hits[-1] - hits[0] + 1) * spacing_lp[p])
    return np.asarray(centre), np.asarray(extent)


def _half_side(extent_mm: np.ndarray, *, margin_mm: float, fov_mm: float) -> float:
    """Half the crop's side in mm: the ROI's square box plus margin, or the fixed field of view.

    A fixed field of view smaller than the ROI cuts it; the warning says by how much.
    """
    if fov_mm <= 0:
        return float(extent_mm.max()) / 2 + margin_mm
    outside = np.maximum(extent_mm - fov_mm, 0)
    if outside.any():
        log.warning(
            "ROI box %.1f x %.1f mm (L x P) is larger than fov_mm=%g: %.1f x %.1f mm of its "
            "extent falls outside the crop and is cut",
            *extent_mm, fov_mm, *outside,
        )  # fmt: skip
    return fov_mm / 2


def _sample(plane: np.ndarray, centre, half_mm: float, spacing_lp, size: int) -> np.ndarray:
    """Resample a (L, P) plane on a ``size`` x ``size`` square of side 2*half_mm: rows P, columns L.

    Rows run anterior to posterior and columns right to left (radiological view); outside the
    volume is 0.
    """
    step = 2 * half_mm / size
    offsets = (np.arange(size) + 0.5) * step - half_mm
    coord_l = centre[0] + offsets / spacing_lp[0]
    coord_p = centre[1] + offsets / spacing_lp[1]
    grid_p, grid_l = np.meshgrid(coord_p, coord_l, indexing="ij")
    return ndimage.map_coordinates(plane, [grid_l, grid_p], order=1, mode="constant", cval=0.0)


def _crop_channels(
    channels: list[np.ndarray],
    roi_lps: np.ndarray,
    keep: np.ndarray,
    spacing_lp: np.ndarray,
    *,
    margin_mm: float,
    fov_mm: float,
    size: int,
    mask_to_roi: bool,
) -> tuple[np.ndarray, float]:
    """Crop and resize the kept axial slices of (L, P, S) channels.

    A channel that is all NaN (a sequence that was not acquired) stays all NaN, which is how
    an absent sequence reaches the shards and the network (:mod:`glioma.model.availability`).

    Returns:
        The (S, C, size, size) float16 crops, and their pixel size in mm (square pixels).
    """
    centre, extent_mm = _box(roi_lps[:, :, keep], spacing_lp)
    half_mm = _half_side(extent_mm, margin_mm=margin_mm, fov_mm=fov_mm)
    images = np.zeros((keep.size, len(channels), size, size), np.float16)
    absent = [bool(np.isnan(channel).all()) for channel in channels]
    for c in np.flatnonzero(absent):
        images[:, c] = np.nan
    for i, k in enumerate(keep):
        for c, channel in enumerate(channels):
            if absent[c]:
                continue
            plane = channel[:, :, k].astype(np.float32)
            if mask_to_roi:
                plane = np.where(roi_lps[:, :, k], plane, 0)
            images[i, c] = _sample(plane, centre, half_mm, spacing_lp, size)
    return images, 2 * half_mm / size


def _kept_slices(roi_lps: np.ndarray, min_roi_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """ROI voxel count of every axial slice, and the slices holding at least ``min_roi_voxels``."""
    counts = roi_lps.sum(axis=(0, 1))
    keep = np.flatnonzero(counts >= min_roi_voxels)
    if keep.size == 0:
        raise InputError(
            f"no axial slice holds >= {min_roi_voxels} ROI voxels (largest: {counts.max()})",
            column="roi",
        )
    return counts, keep


def crop_slices(
    volumes: np.ndarray,
    roi: np.ndarray,
    spacing: Sequence[float],
    direction: Sequence[float],
    *,
    margin_mm: float = 10.0,
    fov_mm: float = 0.0,
    size: int = 224,
    mask_to_roi: bool = False,
    min_roi_voxels: int = 1,
) -> dict[str, np.ndarray]:
    """Crop every axial slice holding ROI to one square per patient, resized to ``size`` pixels.

    The square is centred on the ROI's in-plane bounding box over the kept slices. Its side is the
    box's longer side plus ``margin_mm`` on each side (``fov_mm`` 0: every tumour fills the crop),
    or ``fov_mm`` (a fixed field of view: the tumour's size on screen is its physical size).

    Args:
        volumes: (C, z, y, x) image arrays on one grid (SimpleITK order), channels in order;
            an absent sequence's channel is all NaN (and stays so).
        roi: (z, y, x) ROI mask on the same grid.
        spacing: grid spacing (x, y, z) in mm.
        direction: grid direction cosines (9 numbers, row-major, as SimpleITK gives them).
        margin_mm: margin around the ROI bounding box (``fov_mm`` 0 only).
        fov_mm: side of a fixed square field of view in mm; 0 sizes the square to the ROI. A
            larger ROI is cut at the square's edges, with a warning.
        size: output height and width.
        mask_to_roi: zero every voxel outside the ROI before resizing.
        min_roi_voxels: keep a slice when it holds at least this many ROI voxels.

    Returns:
        The ``.npz`` contents of docs/architecture.md: ``images``, ``slice_index``, ``roi_area``,
        ``spacing``, ``pixel_mm``; slices in increasing ``slice_index``.

    Raises:
        InputError: no slice holds ``min_roi_voxels`` ROI voxels.
    """
    orient = orientation(direction)
    roi_lps = to_patient_axes(roi.astype(bool), orient)
    spacing_lps = np.asarray(spacing, float)[list(orient.axes)]
    counts, keep = _kept_slices(roi_lps, min_roi_voxels)
    channels = [to_patient_axes(v, orient) for v in volumes]
    images, pixel_mm = _crop_channels(
        channels, roi_lps, keep, spacing_lps[:2],
        margin_mm=margin_mm, fov_mm=fov_mm, size=size, mask_to_roi=mask_to_roi,
    )  # fmt: skip
    # Slice indices count along the grid's own axial axis, which may run inferior-wards.
    index = roi_lps.shape[2] - 1 - keep if orient.flips[2] else keep
    order = np.argsort(index)
    return {
        "images": images[order],
        "slice_index": index[order].astype(np.int32),
        "roi_area": (counts[keep] * spacing_lps[0] * spacing_lps[1])[order].astype(np.float32),
        "spacing": np.asarray(spacing, np.float32),
        "pixel_mm": np.float32(pixel_mm),
    }


def _read_stack(images: Mapping[str, str | Path], roi: str | Path) -> tuple[np.ndarray, sitk.Image]:
    """Read the four sequences as a (C, z, y, x) stack and the ROI; check they share a grid.

    A sequence that was not acquired (its stand-in) is a channel of NaN.
    """
    try:
        roi_image = read_image(roi, mask=True)
    except InputError as err:
        raise in_context(err, column="roi") from err
    arrays = []
    present = present_sequences({s: images[s] for s in SEQUENCES})
    for sequence in SEQUENCES:
        if sequence not in present:
            arrays.append(np.full(roi_image.GetSize()[::-1], np.nan, np.float32))
            continue
        try:
            image = read_image(images[sequence])
        except InputError as err:
            raise in_context(err, column=sequence) from err
        if image.GetSize() != roi_image.GetSize():
            raise InputError(
                f"size {image.GetSize()} differs from the ROI's grid {roi_image.GetSize()}",
                column=sequence,
                path=images[sequence],
            )
        arrays.append(sitk.GetArrayFromImage(image))
    return np.stack(arrays), roi_image


def crop_file(
    images: Mapping[str, str | Path],
    roi: str | Path,
    out_path: str | Path,
    *,
    margin_mm: float = 10.0,
    fov_mm: float = 0.0,
    size: int = 224,
    mask_to_roi: bool = False,
    min_roi_voxels: int = 1,
    patient: str | None = None,
) -> None:
    """Read a patient's preprocessed sequences and ROI, crop them and write the ``.npz`` atomically.

    Args:
        images: preprocessed image path per sequence (T1c grid).
        roi: preprocessed ROI path.
        out_path: ``results/crops/{cohort}/{patient}.npz``.
        margin_mm: see :func:`crop_slices`.
        fov_mm: see :func:`crop_slices`.
        size: see :func:`crop_slices`.
        mask_to_roi: see :func:`crop_slices`.
        min_roi_voxels: see :func:`crop_slices`.
        patient: patient ID, for error messages.
    """
    try:
        stack, roi_image = _read_stack(images, roi)
        crops = crop_slices(
            stack,
            sitk.GetArrayFromImage(roi_image),
            roi_image.GetSpacing(),
            roi_image.GetDirection(),
            margin_mm=margin_mm,
            fov_mm=fov_mm,
            size=size,
            mask_to_roi=mask_to_roi,
            min_roi_voxels=min_roi_voxels,
        )
    except InputError as err:
        raise in_context(err, patient=patient, column="roi", path=roi) from err
    log.info(
        "%d axial slices with ROI, %dx%d, %.3f mm pixels",
        len(crops["slice_index"]),
        size,
        size,
        crops["pixel_mm"],
    )
    with atomic_path(out_path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **crops)

"""Intensity normalisation inside the brain mask, per sequence; zero outside the brain."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioma.constants import SEQUENCES
from glioma.errors import InputError
from glioma.io import present_sequences, read_image, write_absent, write_image
from glioma.preprocess import in_context

log = logging.getLogger(__name__)

METHODS = ("zscore", "percentile")


def zscore(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale to mean 0 and SD 1 over ``mask``; voxels outside ``mask`` become 0.

    Raises:
        InputError: the mask is empty or the intensity is constant inside it.
    """
    values = _inside(array, mask)
    sd = float(values.std())
    if sd == 0:
        raise InputError("intensity is constant inside the brain mask")
    out = (array - float(values.mean())) / sd
    return np.where(mask, out, 0).astype(np.float32)


def percentile_scale(
    array: np.ndarray, mask: np.ndarray, percentiles: Sequence[float] = (0.5, 99.5)
) -> np.ndarray:
    """Map the low/high brain percentiles to 0/1 (values beyond them are kept, not clipped).

    Raises:
        InputError: the mask is empty, the percentiles are not increasing, or they coincide.
    """
    low_q, high_q = (float(q) for q in percentiles)
    if not 0 <= low_q < high_q <= 100:
        raise InputError(
            f"percentiles must satisfy 0 <= low < high <= 100, got {list(percentiles)}",
            column="preprocess.normalisation.percentiles",
        )
    low, high = np.percentile(_inside(array, mask), [low_q, high_q])
    if high <= low:
        raise InputError("intensity is constant inside the brain mask")
    out = (array - low) / (high - low)
    return np.where(mask, out, 0).astype(np.float32)


def _inside(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return the voxels of ``array`` inside ``mask`` as float64 (stable statistics)."""
    if array.shape != mask.shape:
        raise InputError(f"image shape {array.shape} differs from mask shape {mask.shape}")
    values = array[mask].astype(np.float64)
    if values.size == 0:
        raise InputError("brain mask is empty")
    return values


def normalise(
    array: np.ndarray,
    mask: np.ndarray,
    *,
    method: str = "zscore",
    percentiles: Sequence[float] = (0.5, 99.5),
) -> np.ndarray:
    """Normalise one sequence with ``method`` (``zscore`` or ``percentile``) inside ``mask``."""
    if method == "zscore":
        return zscore(array, mask)
    if method == "percentile":
        return percentile_scale(array, mask, percentiles)
    raise InputError(
        f"unknown normalisation method {method!r}; expected one of {METHODS}",
        column="preprocess.normalisation.method",
    )


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image on ``reference``'s grid."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _read_on_grid(
    path: str | Path, reference: sitk.Image | None, column: str, *, mask: bool = False
) -> sitk.Image:
    """Read an image and check it is on the reference grid (all inputs here share the T1c grid)."""
    try:
        image = read_image(path, mask=mask)
    except InputError as err:
        raise in_context(err, column=column) from err
    if reference is not None and image.GetSize() != reference.GetSize():
        raise InputError(
            f"size {image.GetSize()} differs from the T1c grid {reference.GetSize()}",
            column=column,
            path=path,
        )
    return image


def apply_brain_mask(brain: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The mask applied to every sequence: the brain united with the ROI.

    Brain extractors trained on healthy brains may cut away part of a tumour; the tumour must
    survive skull stripping.
    """
    outside = int((roi & ~brain).sum())
    if outside:
        log.warning("%d ROI voxels lay outside the extracted brain; kept them", outside)
    return brain | roi


def normalise_files(
    images: Mapping[str, str | Path],
    brain_mask: str | Path,
    roi: str | Path,
    outputs: Mapping[str, str | Path],
    *,
    method: str = "zscore",
    percentiles: Sequence[float] = (0.5, 99.5),
    patient: str | None = None,
) -> None:
    """Skull-strip and normalise the registered sequences; write them, the mask and the ROI.

    A sequence that was not acquired (its stand-in, :func:`glioma.io.is_absent`) stays a
    stand-in.

    The mask applied (and written to ``outputs['brain_mask']``) is :func:`apply_brain_mask`.

    Args:
        images: registered image path per sequence (T1c grid).
        brain_mask: brain mask path (T1c grid).
        roi: registered ROI path (T1c grid).
        outputs: output path per sequence and for ``brain_mask`` and ``roi``.
        method: ``zscore`` or ``percentile``.
        percentiles: low and high percentiles of the percentile method.
        patient: patient ID, for error messages.

    Raises:
        InputError: unreadable input, grids differ, empty mask or constant image; names patient,
            column and file.
    """
    try:
        brain = _read_on_grid(brain_mask, None, "brain_mask", mask=True)
        roi_image = _read_on_grid(roi, brain, "roi", mask=True)
    except InputError as err:
        raise in_context(err, patient=patient) from err
    applied = apply_brain_mask(
        sitk.GetArrayFromImage(brain).astype(bool), sitk.GetArrayFromImage(roi_image).astype(bool)
    )
    normalised = {}
    present = present_sequences({s: images[s] for s in SEQUENCES})
    for sequence in present:
        try:
            image = _read_on_grid(images[sequence], brain, sequence)
            array = normalise(
                sitk.GetArrayFromImage(image), applied, method=method, percentiles=percentiles
            )
        except InputError as err:
            raise in_context(err, patient=patient, column=sequence, path=images[sequence]) from err
        normalised[sequence] = _like(array, brain)
    for sequence in SEQUENCES:
        if sequence not in normalised:
            write_absent(brain, outputs[sequence])
    for sequence, image in normalised.items():
        write_image(image, outputs[sequence])
    write_image(_like(applied.astype(np.uint8), brain), outputs["brain_mask"])
    write_image(roi_image, outputs["roi"])

"""N4 bias-field correction, fitted on a shrunk image inside a head mask."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioma.constants import SEQUENCES
from glioma.errors import InputError
from glioma.io import read_image, write_absent, write_image
from glioma.preprocess import configure_threads, in_context, in_parallel

log = logging.getLogger(__name__)

#: N4 needs a few voxels per axis on the shrunk grid to fit its B-spline field.
MIN_SHRUNK_SIZE = 8


def head_mask(image: sitk.Image) -> sitk.Image:
    """Return the head (uint8 0/1): Otsu foreground, closed, holes filled, largest component.

    Holes are filled before the largest component is chosen: bright scalp encloses dark skull and
    CSF, so the filled scalp is the whole head, whereas the largest unfilled piece may be the brain.

    Raises:
        InputError: the image has no foreground (for example it is constant).
    """
    foreground = sitk.OtsuThreshold(image, 0, 1)
    closed = sitk.BinaryMorphologicalClosing(foreground, [2, 2, 2])
    filled = sitk.BinaryFillhole(closed)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(filled), sortByObjectSize=True)
    largest = sitk.Cast(components == 1, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(largest).any():
        raise InputError("image has no foreground (constant intensity?)")
    return largest


def shrink_factors(image: sitk.Image, fit_spacing_mm: float) -> list[int]:
    """Per-axis integer shrink factors that bring each axis's spacing near ``fit_spacing_mm``.

    Thick slices (e.g. 4-5 mm FLAIR) are shrunk less along the slice axis, so the fitting grid is
    roughly isotropic; every axis keeps at least ``MIN_SHRUNK_SIZE`` voxels where it can.
    """
    factors = []
    for size, step in zip(image.GetSize(), image.GetSpacing(), strict=True):
        factor = max(1, round(fit_spacing_mm / step))
        factors.append(max(1, min(factor, size // MIN_SHRUNK_SIZE)))
    return factors


def n4_correct(
    image: sitk.Image,
    *,
    fit_spacing_mm: float = 10.0,
    iterations: Sequence[int] = (50, 50, 30),
    tolerance: float = 1e-3,
) -> sitk.Image:
    """Remove a smooth multiplicative bias field with N4, fitted on a shrunk copy of the image.

    The field is fitted on a ~``fit_spacing_mm`` grid inside the head mask of that grid (the
    field is smooth: at 1 mm, fitting at 10 mm corrects as well as at 8 mm, and 8 mm as well
    as 4 mm ~6x faster; benchmarks/preprocess.md), then evaluated on the full grid and divided
    out.

    Args:
        image: 3D MR image (any pixel type).
        fit_spacing_mm: target spacing of the fitting grid (see :func:`shrink_factors`).
        iterations: maximum iterations per fitting level (one level per entry).
        tolerance: N4 convergence threshold.

    The fitted field differs in its last digits with SimpleITK's thread count (its B-spline
    fit sums in another order); :func:`correct_bias_files` runs it on one thread.

    Returns:
        The corrected image, float32, on the input grid.

    Raises:
        InputError: the image has no foreground.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    small = sitk.Shrink(image, shrink_factors(image, fit_spacing_mm))
    # N4 fits log intensities: non-positive voxels carry no information about the field.
    mask = sitk.Cast((head_mask(small) > 0) & (small > 0), sitk.sitkUInt8)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.SetConvergenceThreshold(float(tolerance))
    corrector.Execute(small, mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    corrected = sitk.Divide(image, sitk.Exp(log_field))
    if log.isEnabledFor(logging.DEBUG):  # the range costs a pass over the full-size field
        log.debug("N4 on %s voxels, field %.3f-%.3f", small.GetSize(), *_range(log_field))
    return sitk.Cast(corrected, sitk.sitkFloat32)


def _range(image: sitk.Image) -> tuple[float, float]:
    """Return (min, max) of the exponentiated log field, for logging."""
    array = np.exp(sitk.GetArrayViewFromImage(image))
    return float(array.min()), float(array.max())


def correct_bias_files(
    inputs: Mapping[str, str | Path],
    outputs: Mapping[str, str | Path],
    *,
    fit_spacing_mm: float = 10.0,
    iterations: Sequence[int] = (50, 50, 30),
    tolerance: float = 1e-3,
    threads: int = 1,
    patient: str | None = None,
) -> None:
    """N4-correct the sequences of one patient.

    Args:
        inputs: raw image path per sequence the patient has (a subset of ``SEQUENCES``).
        outputs: output path per sequence of ``SEQUENCES``; a sequence without input gets the
            not-acquired stand-in (:func:`glioma.io.write_absent`) on the grid of the first
            sequence it has.
        fit_spacing_mm: see :func:`n4_correct`.
        iterations: see :func:`n4_correct`.
        tolerance: see :func:`n4_correct`.
        threads: sequences read and fitted in parallel (each fit on one thread, so the result
            does not depend on ``threads``).
        patient: patient ID, for error messages.

    Raises:
        InputError: an image is missing, unreadable or empty; names patient, column and file.
    """
    # One SimpleITK thread per fit and the sequences in parallel: N4's field depends on the
    # thread count, so the files do not depend on the job's threads (a cluster's set-threads
    # changes no result), and the tiny fitting grid gains little from threads anyway (0.96 s
    # on one, 0.66 s on two).
    configure_threads(1)
    present = [s for s in SEQUENCES if s in inputs]
    if not present:
        raise InputError("no sequence to correct", patient=patient)

    def read(sequence: str) -> sitk.Image:
        log.info("reading %s: %s", sequence, inputs[sequence])
        try:
            return read_image(inputs[sequence])
        except InputError as err:
            raise in_context(err, patient=patient, column=sequence) from err

    def correct(sequence: str) -> sitk.Image:
        log.info("N4 %s", sequence)
        try:
            return n4_correct(
                images.pop(sequence),  # released once corrected
                fit_spacing_mm=fit_spacing_mm,
                iterations=iterations,
                tolerance=tolerance,
            )
        except InputError as err:
            raise in_context(err, patient=patient, column=sequence, path=inputs[sequence]) from err

    # Every file is read and checked before any is corrected, and every sequence corrected
    # before any is written: a bad FLAIR fails in a second, not after three N4 fits, and an
    # image without foreground leaves no corrected T1w behind.
    images = dict(zip(present, in_parallel(read, present, threads), strict=True))
    for sequence in SEQUENCES:
        if sequence not in inputs:
            log.info("%s not acquired: writing its stand-in", sequence)
            write_absent(images[present[0]], outputs[sequence])
    corrected = in_parallel(correct, present, threads)
    for sequence, image in zip(present, corrected, strict=True):
        write_image(image, outputs[sequence])

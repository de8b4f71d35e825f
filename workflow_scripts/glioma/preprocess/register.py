"""Rigid mutual-information registration of T1w, T2w and FLAIR onto the T1c grid (ANTsPy)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioma.constants import SEQUENCES
from glioma.errors import InputError
from glioma.io import atomic_path, read_image, write_image
from glioma.preprocess import configure_threads, in_context

log = logging.getLogger(__name__)

#: The sequence every other sequence is registered to.
REFERENCE = "t1c"
#: Sequences registered to the reference, in order.
MOVING = tuple(s for s in SEQUENCES if s != REFERENCE)
#: Two grids are the same when spacing agrees to this relative tolerance ...
SPACING_RTOL = 1e-3
#: ... origins agree to this fraction of the finest voxel ...
ORIGIN_VOXEL_TOL = 0.1
#: ... and direction cosines to this absolute tolerance.
DIRECTION_ATOL = 1e-3


def to_ants(image: sitk.Image):
    """Convert a SimpleITK image to ANTs, keeping origin, spacing and direction (both LPS)."""
    import ants

    # SimpleITK arrays are (z, y, x); ANTs arrays are in ITK index order (x, y, z).
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    return ants.from_numpy(
        array,
        origin=list(image.GetOrigin()),
        spacing=list(image.GetSpacing()),
        direction=np.asarray(image.GetDirection()).reshape(3, 3),
    )


@contextlib.contextmanager
def _ants_seed(seed: int) -> Iterator[None]:
    """Seed ANTs' random metric sampling in the block (ANTsPy keeps the seed in a global)."""
    import ants

    previous = ants.config._random_seed
    ants.config._random_seed = int(seed)
    try:
        yield
    finally:
        ants.config._random_seed = previous


def downsample(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Smooth and resample ``image`` so no axis is finer than ``spacing_mm`` (same field of view).

    Axes already coarser are kept. The Gaussian's SD is the one that turns the old voxel size
    into the new (FWHM rule), so the coarse image is not aliased.
    """
    spacing = np.asarray(image.GetSpacing())
    new = np.maximum(spacing, spacing_mm)
    if spacing_mm <= 0 or np.allclose(new, spacing):
        return image
    variance = (new**2 - spacing**2) / 2.355**2  # zero along axes that keep their spacing
    smooth = sitk.DiscreteGaussian(sitk.Cast(image, sitk.sitkFloat32), variance.tolist())
    size = np.maximum(np.round(np.asarray(image.GetSize()) * spacing / new), 1).astype(int)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    grid = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    grid.SetSpacing(new.tolist())
    grid.SetDirection(image.GetDirection())
    # Keep the outer corner of the first voxel where it was.
    grid.SetOrigin((np.asarray(image.GetOrigin()) + direction @ ((new - spacing) / 2)).tolist())
    return sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, 0.0)


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    out_mat: str | Path,
    *,
    transform: str = "Rigid",
    seed: int = 42,
    resample_mm: float = 3.0,
) -> sitk.Transform:
    """Estimate the rigid transform that maps ``fixed`` points to ``moving`` points.

    Mattes mutual information, so contrasts may differ; ANTs starts from the centres of mass.
    Both images are first brought to ``resample_mm`` (:func:`downsample`): a rigid transform
    lives in physical space, so it applies unchanged to the full-resolution images.

    Args:
        fixed: the reference image (T1c).
        moving: the image to align (T1w, T2w or FLAIR).
        out_mat: where the ANTs/ITK ``.mat`` transform is written (atomically).
        transform: ANTs transform type: ``Rigid``, ``QuickRigid`` or ``DenseRigid``; ``none``
            for images that are already co-registered (writes and returns the identity).
        seed: seed of the metric's random sampling (reproducible results).
        resample_mm: spacing the fit runs at (0: native resolution).

    Returns:
        The transform, as SimpleITK reads it from ``out_mat`` (use it to resample ``moving``).
    """
    if transform == "none":
        # Already co-registered archives (UCSF-PDGM, EGD, BraTS): keep the scanner geometry,
        # only resample onto the T1c grid; the identity is kept as the transform of record.
        identity = sitk.Euler3DTransform()
        with atomic_path(out_mat) as target:
            sitk.WriteTransform(identity, str(target))
        return identity

    import ants

    with tempfile.TemporaryDirectory(prefix="glioma_reg_") as tmp, _ants_seed(seed):
        result = ants.registration(
            to_ants(downsample(fixed, resample_mm)),
            to_ants(downsample(moving, resample_mm)),
            type_of_transform=transform,
            outprefix=f"{tmp}/",
        )
        (mat,) = result["fwdtransforms"]
        with atomic_path(out_mat) as target:
            shutil.copyfile(mat, target)
    return sitk.ReadTransform(str(out_mat))


def resample_onto(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None,
    *,
    label: bool = False,
) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid in physical space (linear; nearest for labels).

    Args:
        image: image to resample.
        reference: target grid.
        transform: maps reference points to ``image`` points; None for identity (same space).
        label: nearest neighbour and uint8 output, for masks.
    """
    transform = transform if transform is not None else sitk.Transform()
    if label:
        return sitk.Resample(
            image, reference, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
    return sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Return True when two images share size, spacing, origin and direction (within tolerance)."""
    if a.GetSize() != b.GetSize():
        return False
    spacing_a, spacing_b = np.asarray(a.GetSpacing()), np.asarray(b.GetSpacing())
    if not np.allclose(spacing_a, spacing_b, rtol=SPACING_RTOL, atol=0):
        return False
    origin_tol = ORIGIN_VOXEL_TOL * float(spacing_b.min())
    if np.abs(np.subtract(a.GetOrigin(), b.GetOrigin())).max() > origin_tol:
        return False
    return np.allclose(a.GetDirection(), b.GetDirection(), atol=DIRECTION_ATOL)


def _describe(image: sitk.Image) -> str:
    """Short text of an image's grid, for error messages."""
    spacing = ", ".join(f"{s:.3g}" for s in image.GetSpacing())
    origin = ", ".join(f"{o:.4g}" for o in image.GetOrigin())
    return f"size {image.GetSize()}, spacing ({spacing}), origin ({origin})"


def check_roi_grid(
    roi: sitk.Image, images: Mapping[str, sitk.Image], roi_on: str, *, path: str | Path
) -> None:
    """Check the ROI lies on the grid of the sequence it was drawn on.

    Raises:
        InputError: naming column ``roi`` and the file; says which sequence's grid it does match.
    """
    if roi_on not in images:
        raise InputError(f"roi_on is {roi_on!r}; expected one of {list(images)}", column="roi_on")
    if same_grid(roi, images[roi_on]):
        return
    matches = [name for name, image in images.items() if same_grid(roi, image)]
    hint = (
        f"it matches the grid of {', '.join(matches)}: correct roi_on"
        if matches
        else "it matches no sequence's grid: resample the ROI onto the sequence it was drawn on"
    )
    raise InputError(
        f"ROI grid ({_describe(roi)}) differs from the {roi_on} grid it was drawn on "
        f"({_describe(images[roi_on])}); {hint}",
        column="roi",
        path=path,
    )


def register_images(
    images: Mapping[str, sitk.Image],
    roi: sitk.Image,
    roi_on: str,
    transform_paths: Mapping[str, str | Path],
    *,
    transform: str = "Rigid",
    seed: int = 42,
    resample_mm: float = 3.0,
) -> dict[str, sitk.Image]:
    """Register T1w, T2w and FLAIR to T1c and bring all sequences and the ROI onto the T1c grid.

    Args:
        images: N4-corrected images per sequence (native grids).
        roi: tumour mask on the grid of ``roi_on``.
        roi_on: the sequence the ROI was drawn on; the ROI follows that sequence's transform.
        transform_paths: output ``.mat`` path for each sequence in ``MOVING``.
        transform: ANTs rigid transform type.
        seed: random seed of the metric sampling.
        resample_mm: spacing the registration runs at (see :func:`register_rigid`).

    Returns:
        Images on the T1c grid per sequence (float32) and ``roi`` (uint8 0/1).

    Raises:
        InputError: the ROI is empty after resampling (column ``roi``).
    """
    fixed = images[REFERENCE]
    fixed_small = downsample(fixed, resample_mm)  # once, not once per moving sequence
    transforms: dict[str, sitk.Transform | None] = {REFERENCE: None}
    out = {REFERENCE: sitk.Cast(fixed, sitk.sitkFloat32)}
    for sequence in MOVING:
        log.info("registering %s to %s (%s)", sequence, REFERENCE, transform)
        transforms[sequence] = register_rigid(
            fixed_small,
            images[sequence],
            transform_paths[sequence],
            transform=transform,
            seed=seed,
            resample_mm=resample_mm,
        )
        out[sequence] = resample_onto(images[sequence], fixed, transforms[sequence])
    out["roi"] = resample_onto(roi, fixed, transforms[roi_on], label=True)
    voxels = int(sitk.GetArrayViewFromImage(out["roi"]).sum())
    if voxels == 0:
        raise InputError("ROI is empty on the T1c grid after registration", column="roi")
    log.info("ROI on the T1c grid: %d voxels (drawn on %s)", voxels, roi_on)
    return out


def _read_sequences(images: Mapping[str, str | Path], patient: str | None) -> dict[str, sitk.Image]:
    """Read the four N4-corrected images; errors name the patient and the sequence."""
    loaded = {}
    for sequence in SEQUENCES:
        try:
            loaded[sequence] = read_image(images[sequence])
        except InputError as err:
            raise in_context(err, patient=patient, column=sequence) from err
    return loaded


def register_files(
    images: Mapping[str, str | Path],
    roi: str | Path,
    roi_on: str,
    outputs: Mapping[str, str | Path],
    transforms: Mapping[str, str | Path],
    *,
    transform: str = "Rigid",
    seed: int = 42,
    resample_mm: float = 3.0,
    threads: int = 1,
    patient: str | None = None,
) -> None:
    """Read one patient's N4 images and raw ROI, register to T1c and write everything on its grid.

    Args:
        images: N4-corrected image path per sequence.
        roi: raw ROI path (NIfTI, NRRD/.seg.nrrd or DICOM), on the grid of ``roi_on``.
        roi_on: the sequence the ROI was drawn on.
        outputs: output path per sequence and for ``roi``.
        transforms: output ``.mat`` path per sequence in ``MOVING``.
        transform: ANTs rigid transform type.
        seed: random seed of the metric sampling.
        resample_mm: spacing the registration runs at (see :func:`register_rigid`).
        threads: the rule's threads. Registration itself always runs on one ITK thread:
            ANTs' multi-threaded metric sampling gives different transforms from run to run
            even with a fixed seed (measured: 1 thread reproducible, 2 threads not), and
            byte-identical reruns matter more than a ~2x faster step; patients run in parallel.
        patient: patient ID, for error messages.

    Raises:
        InputError: unreadable input, ROI on the wrong grid, or ROI empty; names patient, column
            and file.
    """
    if threads > 1:
        log.info("registration runs on 1 thread (of %d) for reproducible transforms", threads)
    configure_threads(1)
    loaded = _read_sequences(images, patient)
    try:
        roi_image = read_image(roi, mask=True)
        if not sitk.GetArrayViewFromImage(roi_image).any():
            raise InputError("ROI is empty (no non-zero voxel)")
        check_roi_grid(roi_image, loaded, roi_on, path=roi)
        registered = register_images(
            loaded,
            roi_image,
            roi_on,
            transforms,
            transform=transform,
            seed=seed,
            resample_mm=resample_mm,
        )
    except InputError as err:
        raise in_context(err, patient=patient, column="roi", path=roi) from err
    for name, image in registered.items():
        write_image(image, outputs[name])

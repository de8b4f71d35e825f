"""Rigid mutual-information registration of a patient's sequences onto one grid (ANTsPy).

The grid is T1c's, as in the study, or for a patient without T1c the first sequence it has in
``preprocess.registration.reference`` (:func:`reference_of`); a sequence that was not acquired
gets the not-acquired stand-in on that grid (:func:`glioma.io.write_absent`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioma.constants import SEQUENCES
from glioma.errors import InputError
from glioma.io import atomic_path, present_sequences, read_image, write_absent, write_image
from glioma.preprocess import configure_threads, in_context

log = logging.getLogger(__name__)

#: The sequence every other sequence is registered to, when the patient has it.
REFERENCE = "t1c"
#: Order in which sequences are tried as the reference (``preprocess.registration.reference``).
REFERENCE_ORDER: tuple[str, ...] = ("t1c", "t1w", "flair", "t2w")
#: Sequences registered to T1c when a patient has all four, in order.
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


def single_thread_ants() -> None:
    """Make ANTs run on one thread (reproducible transforms); SimpleITK keeps its own count.

    ANTs reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, at its first filter in the
    process (measured: a later change of the variable has no effect), so this must run before
    any ANTs call; ANTs and SimpleITK each carry their own ITK.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"


#: The ANTs seed that stands for the workflow's seed 0 (see :func:`ants_seed`).
ANTS_SEED_FOR_ZERO = 2**31 - 1


def ants_seed(seed: int) -> int:
    """The ``--random-seed`` ANTs gets for the workflow's ``seed``.

    ANTs takes 0 as "seed from the clock": two registrations with seed 0 gave different
    transforms (measured; the demo's default seed is 0), so 0 becomes
    :data:`ANTS_SEED_FOR_ZERO`. Every other seed passes unchanged.
    """
    return ANTS_SEED_FOR_ZERO if int(seed) == 0 else int(seed)


@contextlib.contextmanager
def _ants_seed(seed: int) -> Iterator[None]:
    """Seed ANTs' random metric sampling in the block (ANTsPy keeps the seed in a global)."""
    import ants

    previous = ants.config._random_seed
    ants.config._random_seed = ants_seed(seed)
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
    resample_mm: float = 4.0,
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


def reference_of(present: Sequence[str], order: Sequence[str] = REFERENCE_ORDER) -> str:
    """The registration reference of a patient with sequences ``present``: the first of
    ``order`` it has.

    Raises:
        InputError: the patient has none of ``order``.
    """
    for sequence in order:
        if sequence in present:
            return sequence
    raise InputError(f"none of the reference sequences {list(order)} is present")


def transform_file(moving: str, reference: str) -> str:
    """File name of the transform of ``moving`` onto ``reference`` in the transforms folder."""
    return f"{moving}_to_{reference}.mat"


def register_images(
    images: Mapping[str, sitk.Image],
    roi: sitk.Image,
    roi_on: str,
    transforms_dir: str | Path,
    *,
    reference_order: Sequence[str] = REFERENCE_ORDER,
    transform: str = "Rigid",
    seed: int = 42,
    resample_mm: float = 4.0,
) -> dict[str, sitk.Image]:
    """Register a patient's sequences to its reference and bring them and the ROI onto its grid.

    Args:
        images: N4-corrected images of the sequences the patient has (native grids).
        roi: tumour mask on the grid of ``roi_on``.
        roi_on: the sequence the ROI was drawn on; the ROI follows that sequence's transform.
        transforms_dir: folder the ``.mat`` of each registered sequence is written to
            (:func:`transform_file`).
        reference_order: the first of these in ``images`` is the reference (:func:`reference_of`).
        transform: ANTs rigid transform type.
        seed: random seed of the metric sampling.
        resample_mm: spacing the registration runs at (see :func:`register_rigid`).

    Returns:
        Images on the reference grid per sequence of ``images`` (float32) and ``roi``
        (uint8 0/1).

    Raises:
        InputError: the ROI is empty after resampling (column ``roi``).
    """
    reference = reference_of(list(images), reference_order)
    if reference != REFERENCE:
        log.warning("no %s: registering to %s instead", REFERENCE, reference)
    fixed = images[reference]
    fixed_small = downsample(fixed, resample_mm)  # once, not once per moving sequence
    transforms: dict[str, sitk.Transform | None] = {reference: None}
    out = {reference: sitk.Cast(fixed, sitk.sitkFloat32)}
    Path(transforms_dir).mkdir(parents=True, exist_ok=True)
    for sequence in (s for s in images if s != reference):
        log.info("registering %s to %s (%s)", sequence, reference, transform)
        transforms[sequence] = register_rigid(
            fixed_small,
            images[sequence],
            Path(transforms_dir) / transform_file(sequence, reference),
            transform=transform,
            seed=seed,
            resample_mm=resample_mm,
        )
        out[sequence] = resample_onto(images[sequence], fixed, transforms[sequence])
    out["roi"] = resample_onto(roi, fixed, transforms[roi_on], label=True)
    voxels = int(sitk.GetArrayViewFromImage(out["roi"]).sum())
    if voxels == 0:
        raise InputError(f"ROI is empty on the {reference} grid after registration", column="roi")
    log.info("ROI on the %s grid: %d voxels (drawn on %s)", reference, voxels, roi_on)
    return out


def _read_sequences(images: Mapping[str, str | Path], patient: str | None) -> dict[str, sitk.Image]:
    """Read the N4-corrected images of the sequences a patient has (not-acquired stand-ins are
    skipped); errors name the patient and the sequence."""
    loaded = {}
    for sequence in present_sequences({s: images[s] for s in SEQUENCES}):
        try:
            loaded[sequence] = read_image(images[sequence])
        except InputError as err:
            raise in_context(err, patient=patient, column=sequence) from err
    if not loaded:
        raise InputError("no sequence was acquired", patient=patient)
    return loaded


def register_files(
    images: Mapping[str, str | Path],
    roi: str | Path,
    roi_on: str,
    outputs: Mapping[str, str | Path],
    transforms: str | Path,
    *,
    reference_order: Sequence[str] = REFERENCE_ORDER,
    transform: str = "Rigid",
    seed: int = 42,
    resample_mm: float = 4.0,
    threads: int = 1,
    patient: str | None = None,
) -> None:
    """Read one patient's N4 images and raw ROI, register them and write everything on one grid.

    Args:
        images: N4-corrected image path per sequence (a not-acquired stand-in where absent).
        roi: raw ROI path (NIfTI, NRRD/.seg.nrrd or DICOM), on the grid of ``roi_on``.
        roi_on: the sequence the ROI was drawn on.
        outputs: output path per sequence and for ``roi``; an absent sequence's is its stand-in
            on the reference grid.
        transforms: folder of the ``.mat`` transforms, ``{moving}_to_{reference}.mat``.
        reference_order: the patient's first present sequence of these is the grid.
        transform: ANTs rigid transform type.
        seed: random seed of the metric sampling.
        resample_mm: spacing the registration runs at (see :func:`register_rigid`).
        threads: SimpleITK threads (smoothing and resampling, the same result at any count).
            ANTs' registration itself always runs on one thread: its multi-threaded metric
            sampling gives different transforms from run to run even with a fixed seed
            (measured: 1 thread reproducible, 2 threads not), and byte-identical reruns matter
            more than a ~2x faster fit; patients run in parallel.
        patient: patient ID, for error messages.

    Raises:
        InputError: unreadable input, ROI on the wrong grid or on an absent sequence, or ROI
            empty; names patient, column and file.
    """
    if threads > 1:
        log.info("ANTs registration runs on 1 thread (of %d) for reproducible transforms", threads)
    configure_threads(threads)
    single_thread_ants()
    loaded = _read_sequences(images, patient)
    if roi_on not in loaded:
        raise InputError(
            f"the ROI was drawn on {roi_on}, which was not acquired",
            patient=patient,
            column="roi_on",
        )
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
            reference_order=reference_order,
            transform=transform,
            seed=seed,
            resample_mm=resample_mm,
        )
    except InputError as err:
        raise in_context(err, patient=patient, column="roi", path=roi) from err
    grid = registered["roi"]
    for sequence in SEQUENCES:
        if sequence not in registered:
            write_absent(grid, outputs[sequence])
    for name, image in registered.items():
        write_image(image, outputs[name])

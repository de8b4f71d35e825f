"""Synthetic heads with known truth for the preprocessing tests (and tests of the phantom itself).

The brain comes from nilearn's MNI152 2009a template (shipped in its wheel, offline): T1-like
intensities from the template, other contrasts from its grey/white-matter maps. Around it are CSF,
skull (bone and marrow) and scalp shells, and inside it a spherical tumour with a rim and oedema.
Each sequence is "acquired" on its own scanner grid (any spacing and direction cosines) after a
known rigid head motion, so the true T1c-to-sequence transform is known exactly.

Other preprocessing test files import the helpers here (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: Centre of the MNI head box in LPS mm, used as grid centre and rotation centre.
HEAD_CENTRE = (0.0, 18.0, 20.0)
#: Tumour centre (LPS mm): right frontal white matter.
TUMOUR_CENTRE = (-28.0, -12.0, 22.0)
#: Tumour radii (mm): necrotic core, enhancing rim (the ROI), oedema.
TUMOUR_RADII = (7.0, 12.0, 17.0)

# Intensities per tissue: wm, gm, csf, bone, marrow, scalp, core, rim, oedema.
# None for wm/gm means "use the T1 template", which gives realistic T1 texture.
CONTRASTS: dict[str, tuple] = {
    "t1w": (None, None, 0.15, 0.04, 0.65, 0.85, 0.30, 0.55, 0.55),
    "t1c": (None, None, 0.15, 0.04, 0.65, 0.85, 0.30, 1.30, 0.55),
    "t2w": (0.40, 0.62, 1.00, 0.04, 0.45, 0.55, 0.95, 0.75, 0.80),
    "flair": (0.45, 0.65, 0.08, 0.04, 0.40, 0.60, 0.55, 0.80, 0.90),
}


@dataclass(frozen=True)
class World:
    """Noise-free head on a 1-2 mm world grid (identity direction, LPS)."""

    images: dict[str, sitk.Image]  # per sequence, float32
    brain: sitk.Image  # uint8 0/1
    wm: sitk.Image  # uint8 0/1 (white matter probability > 0.9, outside the tumour)
    roi: sitk.Image  # uint8 0/1, tumour incl. enhancing rim


def _from_nifti(img) -> sitk.Image:
    """Convert a nibabel image (RAS affine) to SimpleITK (LPS), keeping the geometry."""
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    out = sitk.GetImageFromArray(np.asarray(img.get_fdata(), np.float32).transpose(2, 1, 0))
    out.SetSpacing(spacing.tolist())
    out.SetOrigin(affine[:3, 3].tolist())
    out.SetDirection((affine[:3, :3] / spacing).flatten().tolist())
    return out


def make_grid(
    spacing: Sequence[float],
    *,
    extent_mm: Sequence[float] = (216.0, 250.0, 216.0),
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    flip: Sequence[int] = (1, 1, 1),
    centre: Sequence[float] = HEAD_CENTRE,
    pixel: int = sitk.sitkFloat32,
) -> sitk.Image:
    """Return an empty image whose grid covers ``extent_mm`` around ``centre``.

    ``rotation_deg`` (about x, y, z) and ``flip`` (axis signs, e.g. (-1, -1, 1) for a RAS-like
    header) set the direction cosines: oblique and flipped scanner grids.
    """
    spacing = np.asarray(spacing, float)
    size = np.maximum(np.round(np.asarray(extent_mm) / spacing).astype(int), 4)
    rot = sitk.Euler3DTransform()
    rot.SetRotation(*np.deg2rad(rotation_deg))
    direction = np.asarray(rot.GetMatrix()).reshape(3, 3) @ np.diag(flip)
    grid = sitk.Image([int(s) for s in size], pixel)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.flatten().tolist())
    half = direction @ (spacing * (size - 1) / 2)
    grid.SetOrigin((np.asarray(centre) - half).tolist())
    return grid


def motion(rotation_deg: Sequence[float], translation_mm: Sequence[float]) -> sitk.Transform:
    """Rigid head motion (scanner point -> world point) about the head centre."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(HEAD_CENTRE)
    transform.SetRotation(*np.deg2rad(rotation_deg))
    transform.SetTranslation(list(translation_mm))
    return transform


def _distance_from(mask: np.ndarray, spacing: float) -> np.ndarray:
    """Distance in mm of every voxel from ``mask`` (0 inside)."""
    return ndimage.distance_transform_edt(~mask, sampling=spacing)


def _tissues(t1: np.ndarray, brain, gm, wm, spacing: float) -> dict[str, np.ndarray]:
    """Tissue fractions and shells on the world grid (arrays in SimpleITK z, y, x order)."""
    distance = _distance_from(brain, spacing)
    csf_in = np.clip(brain - gm - wm, 0, 1) * brain
    shells = {
        "csf": csf_in + ((distance > 0) & (distance <= 3)),
        "bone": ((distance > 3) & (distance <= 4.5)) | ((distance > 6.5) & (distance <= 8)),
        "marrow": (distance > 4.5) & (distance <= 6.5),
        "scalp": (distance > 8) & (distance <= 13),
    }
    return {k: np.asarray(v, np.float32) for k, v in shells.items()}


def _tumour(grid: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core, rim and oedema masks of the spherical tumour on ``grid`` (z, y, x arrays)."""
    size = grid.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), -1).reshape(-1, 3)
    direction = np.asarray(grid.GetDirection()).reshape(3, 3)
    points = np.asarray(grid.GetOrigin()) + (index * grid.GetSpacing()) @ direction.T
    radius = np.linalg.norm(points - TUMOUR_CENTRE, axis=1).reshape(size).transpose(2, 1, 0)
    r_core, r_rim, r_oedema = TUMOUR_RADII
    return (
        radius <= r_core,
        (radius > r_core) & (radius <= r_rim),
        (radius > r_rim) & (radius <= r_oedema),
    )


@functools.lru_cache(maxsize=4)
def world_head(spacing: float = 2.0) -> World:
    """Build the noise-free head on an isotropic world grid of ``spacing`` mm (cached)."""
    from nilearn import datasets

    grid = make_grid([spacing] * 3)
    maps = {
        "t1": datasets.load_mni152_template(resolution=1),
        "brain": datasets.load_mni152_brain_mask(resolution=1),
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
    }
    arrays = {}
    for name, img in maps.items():
        smooth = sitk.SmoothingRecursiveGaussian(_from_nifti(img), spacing / 2.5)
        arrays[name] = sitk.GetArrayFromImage(sitk.Resample(smooth, grid, sitk.Transform()))
    brain = arrays["brain"] > 0.5
    gm, wm = (np.clip(arrays[k], 0, 1) * brain for k in ("gm", "wm"))
    shells = _tissues(arrays["t1"], brain, gm, wm, spacing)
    core, rim, oedema = _tumour(grid)
    tumour_any = (core | rim | oedema) & brain
    images = {}
    for sequence, (v_wm, v_gm, *rest) in CONTRASTS.items():
        v_csf, v_bone, v_marrow, v_scalp, v_core, v_rim, v_oedema = rest
        if v_wm is None:
            tissue = arrays["t1"] * brain * (1 - shells["csf"]) + v_csf * shells["csf"] * brain
        else:
            tissue = v_wm * wm + v_gm * gm + v_csf * shells["csf"] * brain
        outside = v_csf * shells["csf"] * ~brain + v_bone * shells["bone"]
        outside = outside + v_marrow * shells["marrow"] + v_scalp * shells["scalp"]
        value = np.where(tumour_any, 0.0, tissue) + outside
        value = value + tumour_any * (v_core * core + v_rim * rim + v_oedema * oedema)
        images[sequence] = _image(value.astype(np.float32), grid)
    # Deep white matter only (eroded), so partial volume with grey matter does not count as bias.
    wm_core = ndimage.binary_erosion(
        (wm > 0.9) & ~tumour_any, iterations=max(1, round(3 / spacing))
    )
    return World(
        images=images,
        brain=_image(brain.astype(np.uint8), grid),
        wm=_image(wm_core.astype(np.uint8), grid),
        roi=_image(((core | rim) & brain).astype(np.uint8), grid),
    )


def _image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    """Wrap a (z, y, x) array as an image on ``grid``."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid)
    return image


def bias_field(grid: sitk.Image, strength: float = 0.35) -> np.ndarray:
    """A smooth multiplicative field on ``grid``: exp of a tilted quadratic (+-``strength``)."""
    size = grid.GetSize()
    idx = np.meshgrid(*[np.linspace(-1, 1, s) for s in size], indexing="ij")
    log_field = strength * (0.8 * idx[0] + 0.5 * idx[1] ** 2 - 0.4 * idx[2] * idx[1])
    return np.exp(log_field).transpose(2, 1, 0).astype(np.float32)


def acquire(
    image: sitk.Image,
    grid: sitk.Image,
    head_pose: sitk.Transform | None = None,
    *,
    label: bool = False,
    bias: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    pixel: int | None = None,
    scale: float = 1.0,
) -> sitk.Image:
    """Sample a world image on a scanner ``grid`` after head motion ``head_pose`` (scanner->world).

    Args:
        image: world image.
        grid: scanner grid (size, spacing, origin, direction).
        head_pose: rigid transform mapping scanner points to world points (identity if None).
        label: nearest-neighbour sampling, uint8 output.
        bias: strength of a multiplicative bias field (0 for none).
        noise: Gaussian noise SD (in image units, before ``scale``).
        seed: noise seed.
        pixel: output pixel type (e.g. ``sitk.sitkInt16``); default float32 or uint8.
        scale: multiply intensities before casting (e.g. 1000 for int16).
    """
    transform = head_pose if head_pose is not None else sitk.Transform()
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    out = sitk.Resample(image, grid, transform, interp, 0.0)
    if label:
        return sitk.Cast(out, sitk.sitkUInt8)
    array = sitk.GetArrayFromImage(out).astype(np.float32)
    if bias:
        array *= bias_field(grid, bias)
    if noise:
        array += np.random.default_rng(seed).normal(0, noise, array.shape).astype(np.float32)
    array = np.clip(array, 0, None) * scale
    result = _image(array, grid)
    return sitk.Cast(result, pixel if pixel is not None else sitk.sitkFloat32)


def true_map(fixed_pose: sitk.Transform, moving_pose: sitk.Transform, points: np.ndarray):
    """Map T1c scanner points to the moving sequence's scanner points, as the truth says."""
    inverse = moving_pose.GetInverse()
    return np.array([inverse.TransformPoint(fixed_pose.TransformPoint(p)) for p in points])


def grid_points(image: sitk.Image, mask: np.ndarray, every: int = 1) -> np.ndarray:
    """Physical points (LPS mm) of the voxels where ``mask`` (z, y, x) is set."""
    index = np.argwhere(mask)[::every][:, ::-1].astype(float)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * image.GetSpacing()) @ direction.T


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays."""
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


# ---- tests of the phantom itself: the other tests rely on its truth ----


def test_world_head_has_brain_skull_and_tumour():
    world = world_head(3.0)
    brain = sitk.GetArrayFromImage(world.brain).astype(bool)
    t1 = sitk.GetArrayFromImage(world.images["t1w"])
    roi = sitk.GetArrayFromImage(world.roi).astype(bool)
    assert 0.9e6 < brain.sum() * 27 < 2.0e6  # adult brain volume, mm^3
    assert (t1[~brain] > 0.5).sum() > 0.1 * brain.sum()  # bright scalp/marrow outside the brain
    assert roi.sum() * 27 > 0.5 * 4 / 3 * np.pi * TUMOUR_RADII[1] ** 3
    assert (roi & ~brain).sum() == 0


def test_acquire_and_true_map_agree():
    world = world_head(3.0)
    fixed_pose, moving_pose = motion((0, 0, 0), (0, 0, 0)), motion((4, -3, 5), (3, -2, 4))
    grid = make_grid([3.0] * 3, rotation_deg=(8, 0, 0), flip=(-1, -1, 1))
    moved = acquire(world.roi, grid, moving_pose, label=True)
    # The ROI centre, taken to the moving scanner's space with the true map, lands on the ROI there.
    centre = true_map(fixed_pose, moving_pose, np.array([TUMOUR_CENTRE]))[0]
    index = moved.TransformPhysicalPointToIndex(centre.tolist())
    assert moved[index] == 1
    assert np.linalg.norm(centre - TUMOUR_CENTRE) > 5  # the motion is large enough to matter

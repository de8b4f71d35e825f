"""Atlas anatomy of the demo heads: tissue fractions of brain, skull and scalp on one grid.

Everything here lives in *atlas space*: the physical (LPS) space of nilearn's shipped MNI152
2009a template, resampled to the requested voxel spacing. Each patient is this atlas seen
through a small random affine (see ``cohort.py``), so the atlas is built once per spacing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: Tissues whose fractions sum to at most 1 in every atlas voxel (air makes up the rest).
TISSUES: tuple[str, ...] = (
    "csf",
    "gm",
    "wm",
    "vessel",
    "dura",
    "bone",
    "marrow",
    "muscle",
    "fat",
)

#: Scalp and skull layers outside the brain envelope: (tissue, outer distance in mm).
#: Thicknesses follow an adult head: a thin CSF/dura gap, a three-layer calvarium (inner
#: table, diploe, outer table), galea and muscle, subcutaneous fat, skin.
SHELL_LAYERS: tuple[tuple[str, float], ...] = (
    ("csf", 1.5),
    ("dura", 2.5),
    ("bone", 4.5),
    ("marrow", 7.5),
    ("bone", 9.0),
    ("muscle", 10.5),
    ("fat", 14.0),
    ("muscle", 15.5),
)


@dataclass(frozen=True)
class Atlas:
    """Tissue fractions and landmarks of the synthetic head on the atlas grid.

    Attributes:
        reference: an image carrying the atlas grid geometry (origin, spacing, direction).
        fractions: tissue name -> float32 array (z, y, x) of the voxel's fraction of that tissue.
        brain: float32 array, fraction of the voxel inside the brain (GM + WM + inner CSF).
        depth: float32 array, signed depth below the brain envelope in mm (positive inside).
        coords: three float32 arrays (x, y, z) of voxel centres in LPS mm, each (z, y, x).
        head_centre: LPS point (mm) at the middle of the head, where scanners centre their FOV.
    """

    reference: sitk.Image
    fractions: dict[str, np.ndarray]
    brain: np.ndarray
    depth: np.ndarray
    coords: tuple[np.ndarray, np.ndarray, np.ndarray]
    head_centre: np.ndarray

    @property
    def spacing(self) -> float:
        """Isotropic voxel spacing of the atlas grid in mm."""
        return float(self.reference.GetSpacing()[0])


def _to_sitk(nifti) -> sitk.Image:
    """Convert a nibabel image (RAS affine, axis-aligned) to a SimpleITK image in LPS."""
    array = np.asarray(nifti.dataobj, dtype=np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    affine = np.diag([-1.0, -1.0, 1.0]) @ nifti.affine[:3]  # RAS -> LPS
    spacing = np.linalg.norm(affine[:, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((affine[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(affine[:, 3].tolist())
    return image


@functools.cache
def _mni_maps() -> dict[str, sitk.Image]:
    """Load nilearn's 1 mm MNI152 T1 brain mask, GM and WM maps (shipped, no download)."""
    from nilearn import datasets

    return {
        "brain": _to_sitk(datasets.load_mni152_brain_mask(resolution=1)),
        "gm": _to_sitk(datasets.load_mni152_gm_template(resolution=1)),
        "wm": _to_sitk(datasets.load_mni152_wm_template(resolution=1)),
    }


def _downsample(image: sitk.Image, spacing: float) -> sitk.Image:
    """Average ``image`` onto an isotropic grid of ``spacing`` mm covering the same box."""
    old_spacing = np.array(image.GetSpacing())
    old_size = np.array(image.GetSize())
    size = np.maximum(1, np.floor(old_size * old_spacing / spacing)).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # Keep the box centre fixed so the grid does not drift with the spacing.
    centre = np.array(image.GetOrigin()) + direction @ (old_spacing * (old_size - 1) / 2)
    origin = centre - direction @ (spacing * (size - 1) / 2)
    sigma = max(0.0, (spacing - old_spacing.min()) / 2.355)
    smooth = sitk.SmoothingRecursiveGaussian(image, sigma) if sigma > 0.1 else image
    reference = sitk.Image(size.tolist(), sitk.sitkFloat32)
    reference.SetSpacing([spacing] * 3)
    reference.SetDirection(image.GetDirection())
    reference.SetOrigin(origin.tolist())
    return sitk.Resample(smooth, reference, sitk.Transform(), sitk.sitkLinear, 0.0)


def _voxel_coords(reference: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return LPS coordinates (x, y, z) of every voxel centre, each shaped (z, y, x)."""
    size = reference.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    points = index * np.array(reference.GetSpacing()) @ direction.T + reference.GetOrigin()
    return tuple(
        np.ascontiguousarray(points[..., a].transpose(2, 1, 0), np.float32) for a in range(3)
    )


def _envelope_distance(brain: np.ndarray, spacing: float) -> np.ndarray:
    """Signed distance (mm, positive outside) to a smooth, closed envelope around the brain."""
    mask = brain >= 0.5
    radius = max(1, round(8.0 / spacing))
    ball = ndimage.generate_binary_structure(3, 1)
    ball = ndimage.iterate_structure(ball, radius)
    pad = radius + 1
    padded = np.pad(mask, pad)
    closed = ndimage.binary_closing(padded, structure=ball)[pad:-pad, pad:-pad, pad:-pad]
    envelope = ndimage.binary_fill_holes(closed | mask)
    outside = ndimage.distance_transform_edt(~envelope, sampling=spacing)
    inside = ndimage.distance_transform_edt(envelope, sampling=spacing)
    distance = np.where(envelope, -inside + spacing / 2, outside - spacing / 2)
    return ndimage.gaussian_filter(distance, 1.0).astype(np.float32)


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Smooth 0 -> 1 step centred on 0, ``width`` mm wide (partial-volume edges)."""
    return np.clip(x / width + 0.5, 0.0, 1.0)


def _shell(distance: np.ndarray, spacing: float) -> dict[str, np.ndarray]:
    """Fractions of the extra-cerebral layers from the signed envelope distance."""
    fractions: dict[str, np.ndarray] = {}
    inner = 0.0
    for tissue, outer in SHELL_LAYERS:
        layer = _ramp(distance - inner, spacing) - _ramp(distance - outer, spacing)
        fractions[tissue] = fractions.get(tissue, 0.0) + layer.astype(np.float32)
        inner = outer
    return fractions


def _vessels(csf: np.ndarray, coords, depth: np.ndarray, spacing: float) -> np.ndarray:
    """Fraction of enhancing vessels: a sagittal sinus and veins winding through sulcal CSF."""
    x, _, z = coords
    rng = np.random.default_rng(20240601)  # fixed: the atlas is the same for every seed
    field = ndimage.gaussian_filter(rng.standard_normal(csf.shape), 3.0 / spacing)
    field /= field.std()
    veins = np.clip((np.abs(field) < 0.12) * csf * 1.5, 0, 1)
    # The superior sagittal sinus runs in the dura along the top of the midline.
    sinus = np.exp(-((x / 3.0) ** 2) - ((depth + 1.0) / 3.0) ** 2) * (z > 0)
    return np.clip(veins + sinus * 0.8, 0, 1).astype(np.float32)


@functools.cache
def load_atlas(spacing: float) -> Atlas:
    """Build the synthetic head on an isotropic atlas grid of ``spacing`` mm.

    Args:
        spacing: voxel size in mm (e.g. 2 for the demo, 4 for tests).

    Returns:
        The atlas; arrays are read-only because the result is cached and shared.
    """
    maps = {name: _downsample(image, spacing) for name, image in _mni_maps().items()}
    reference = maps["brain"]
    arrays = {name: sitk.GetArrayFromImage(image).clip(0, 1) for name, image in maps.items()}
    brain = arrays["brain"]
    gm = np.minimum(arrays["gm"], brain)
    wm = np.clip(np.minimum(arrays["wm"], brain - gm), 0, 1)
    csf = np.clip(brain - gm - wm, 0, 1)
    distance = _envelope_distance(brain, spacing)
    coords = _voxel_coords(reference)
    shell = _shell(distance, spacing)
    outside = 1.0 - brain
    fractions = {name: (shell.get(name, 0.0) * outside).astype(np.float32) for name in TISSUES}
    fractions["csf"] = fractions["csf"] + csf
    fractions["gm"], fractions["wm"] = gm, wm
    vessel = np.minimum(_vessels(csf, coords, -distance, spacing), fractions["csf"])
    fractions["vessel"] = vessel
    fractions["csf"] = fractions["csf"] - vessel
    head = sum(fractions.values()) > 0.5
    centre = np.array([c[head].mean() for c in coords])
    for array in (*fractions.values(), brain, distance, *coords):
        array.setflags(write=False)
    return Atlas(reference, fractions, brain, -distance, coords, centre)

"""Scanners of the demo cohorts: voxel grids, head motion, bias fields, noise and file formats.

Each sequence has its own *scanner space* (the LPS physical space its header describes) and
grid. ``world_from_scanner`` (4x4) is the rigid head motion between that sequence and the
patient's anatomy; sampling the anatomy for a scanner point ``p`` reads the atlas at
``atlas_from_world @ world_from_scanner @ p``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

#: Field of view along the LPS axes (left-right, anterior-posterior, inferior-superior), mm.
FOV_MM = np.array([200.0, 224.0, 184.0])

#: Base slice orientations as direction matrices (columns: i, j, k axes in LPS).
ORIENTATIONS: dict[str, np.ndarray] = {
    "axial_ras": np.diag([-1.0, -1.0, 1.0]),  # NIfTI's RAS+ as most converters write it
    "axial_lps": np.eye(3),  # DICOM patient axes
    "coronal": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),  # slices along A-P
}


@dataclass(frozen=True)
class Scanner:
    """How one site acquires and stores the four sequences.

    Attributes:
        suffix: image file suffix (``.nii.gz``, ``.nii`` or ``.nrrd``).
        roi_suffix: ROI file suffix (``.seg.nrrd`` for 3D Slicer-style sites).
        pixel: stored voxel type (``float32``, ``int16``, ``uint16``).
        gain: scanner units of a relative signal of 1.
        noise: noise standard deviation relative to white matter signal.
        bias: peak-to-centre amplitude of the log bias field.
        inplane: in-plane voxel size as a multiple of the requested spacing.
        flair_thickness: FLAIR slice thickness as a multiple of the requested spacing.
        orientation: sequence -> (base orientation, oblique tilt in degrees about L-R).
        gamma: sequence -> contrast exponent (field strength and sequence tuning differ).
    """

    suffix: str
    roi_suffix: str
    pixel: str
    gain: float
    noise: float
    bias: float
    inplane: float
    flair_thickness: float
    orientation: dict[str, tuple[str, float]]
    gamma: dict[str, float]


SCANNERS: tuple[Scanner, ...] = (
    Scanner(
        suffix=".nii.gz",
        roi_suffix=".nii.gz",
        pixel="float32",
        gain=1000.0,
        noise=0.025,
        bias=0.3,
        inplane=1.0,
        flair_thickness=2.0,
        orientation={
            "t1w": ("axial_ras", 0.0),
            "t1c": ("axial_ras", 15.0),
            "t2w": ("axial_ras", 0.0),
            "flair": ("axial_ras", 0.0),
        },
        gamma={"t1w": 1.0, "t1c": 1.0, "t2w": 1.0, "flair": 1.0},
    ),
    Scanner(
        suffix=".nii",
        roi_suffix=".nii",
        pixel="int16",
        gain=2400.0,
        noise=0.045,
        bias=0.35,
        inplane=1.1,
        flair_thickness=3.0,
        orientation={
            "t1w": ("axial_lps", 4.0),
            "t1c": ("axial_lps", 11.0),
            "t2w": ("axial_lps", 6.0),
            "flair": ("axial_lps", 5.0),
        },
        gamma={"t1w": 0.85, "t1c": 0.85, "t2w": 0.9, "flair": 1.1},
    ),
    Scanner(
        suffix=".nrrd",
        roi_suffix=".seg.nrrd",
        pixel="uint16",
        gain=3000.0,
        noise=0.035,
        bias=0.45,
        inplane=0.95,
        flair_thickness=2.5,
        orientation={
            "t1w": ("axial_lps", 0.0),
            "t1c": ("axial_lps", 18.0),
            "t2w": ("coronal", 0.0),
            "flair": ("axial_lps", 0.0),
        },
        gamma={"t1w": 1.15, "t1c": 1.15, "t2w": 1.1, "flair": 0.9},
    ),
)


@dataclass(frozen=True)
class Grid:
    """A voxel grid in scanner space: SimpleITK geometry plus the voxel size."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    def reference(self) -> sitk.Image:
        """Return an empty float32 image carrying this grid's geometry."""
        image = sitk.Image(list(self.size), sitk.sitkFloat32)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction.ravel().tolist())
        return image


def make_grid(
    scanner: Scanner, seq: str, spacing: float, centre: np.ndarray, tilt_jitter: float
) -> Grid:
    """Build the grid of ``seq`` for a scanner, centred on the head's centre.

    Args:
        scanner: the site's conventions.
        seq: sequence name; FLAIR gets thick slices, the others are near-isotropic.
        spacing: the requested base voxel size in mm.
        centre: LPS point the field of view is centred on.
        tilt_jitter: extra oblique tilt in degrees (operators angle slices by eye).
    """
    base, tilt = scanner.orientation[seq]
    tilt_matrix = Rotation.from_euler("x", tilt + tilt_jitter, degrees=True).as_matrix()
    direction = tilt_matrix @ ORIENTATIONS[base]
    thickness = scanner.flair_thickness if seq == "flair" else 1.0
    voxel = spacing * np.array([scanner.inplane, scanner.inplane, thickness])
    # Each grid axis covers the field of view of the physical axis it mostly runs along.
    fov = FOV_MM[np.abs(direction).argmax(axis=0)]
    size = np.maximum(1, np.round(fov / voxel)).astype(int)
    origin = centre - direction @ (voxel * (size - 1) / 2)
    return Grid(
        tuple(int(n) for n in size),
        tuple(float(v) for v in voxel),
        tuple(float(o) for o in origin),
        direction,
    )


def rigid(rng: np.random.Generator, centre: np.ndarray, degrees: float, mm: float) -> np.ndarray:
    """Draw a 4x4 rigid transform: rotation up to ``degrees`` about ``centre``, shift ``mm``."""
    rotation = Rotation.from_euler("xyz", rng.uniform(-degrees, degrees, 3), degrees=True)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation.as_matrix()
    matrix[:3, 3] = centre - matrix[:3, :3] @ centre + rng.uniform(-mm, mm, 3)
    return matrix


def to_sitk_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """Wrap a 4x4 matrix (output point -> input point) as a SimpleITK transform."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix[:3, :3].ravel().tolist())
    transform.SetTranslation(matrix[:3, 3].tolist())
    return transform


def slab_sigma(grid: Grid, atlas_from_scanner: np.ndarray, atlas_spacing: float) -> np.ndarray:
    """Gaussian sigmas (atlas voxels, z-y-x order) that mimic the grid's voxel averaging.

    Thick slices average signal across the slab (partial volume); blurring the atlas image
    along the slab normal before point sampling approximates that cheaply.
    """
    axes = atlas_from_scanner[:3, :3] @ grid.direction  # grid axes in atlas space
    sigma_mm = np.zeros(3)
    for axis, voxel in zip(axes.T, grid.spacing, strict=True):
        extra = np.sqrt(max(voxel**2 - atlas_spacing**2, 0.0)) / 2.355
        sigma_mm = np.maximum(sigma_mm, extra * np.abs(axis) / np.linalg.norm(axis))
    return sigma_mm[::-1] / atlas_spacing


def sample(
    array: np.ndarray,
    reference: sitk.Image,
    grid: Grid,
    atlas_from_scanner: np.ndarray,
    sigma: np.ndarray | None = None,
) -> np.ndarray:
    """Sample an atlas-space array on a scanner grid (linear), after optional slab blurring.

    Returns:
        float32 array (z, y, x) of the grid; points outside the atlas read 0 (air).
    """
    if sigma is not None and np.any(sigma > 0.2):
        array = ndimage.gaussian_filter(array, np.where(sigma > 0.2, sigma, 0), mode="constant")
    image = sitk.GetImageFromArray(np.asarray(array, np.float32))
    image.CopyInformation(reference)
    transform = to_sitk_transform(atlas_from_scanner)
    out = sitk.Resample(image, grid.reference(), transform, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(out)


def bias_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float) -> np.ndarray:
    """Smooth multiplicative bias: exp of a random quadratic over the grid.

    The log field peaks at ``amplitude`` within the central ellipsoid (where the brain is) and
    is capped at 1.5 times that towards the corners of the field of view.
    """
    axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = [*axes, *(a * b for i, a in enumerate(axes) for b in axes[i:])]
    log_bias = sum(np.float32(rng.normal()) * t for t in terms)
    central = sum(a * a for a in axes) < 0.6
    log_bias *= np.float32(amplitude / max(float(np.abs(log_bias[central]).max()), 1e-6))
    return np.exp(np.clip(log_bias, -1.5 * amplitude, 1.5 * amplitude)).astype(np.float32)


def add_rician_noise(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician; Rayleigh in air)."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def to_scanner_units(scanner: Scanner, seq: str, signal: np.ndarray) -> np.ndarray:
    """Apply the site's contrast curve and gain, then cast to its stored voxel type."""
    values = np.power(np.clip(signal, 0, None), scanner.gamma[seq]) * scanner.gain
    if scanner.pixel == "float32":
        # Steps of 1/8 unit (about 1e-4 of white matter, far below the noise) leave trailing
        # zero bits, which halves the gzip size and time of float files.
        return (np.round(values * 8) / 8).astype(np.float32)
    info = np.iinfo(scanner.pixel)
    return np.clip(np.rint(values), info.min, info.max).astype(scanner.pixel)


def to_image(array: np.ndarray, grid: Grid) -> sitk.Image:
    """Wrap a (z, y, x) array as a SimpleITK image on ``grid``."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid.reference())
    return image

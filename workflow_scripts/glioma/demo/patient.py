"""Render one demo patient: four sequences, the ROI and the ground truth, as arrays and grids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from glioma.constants import SEQUENCES
from glioma.demo import acquisition as acq
from glioma.demo.anatomy import Atlas
from glioma.demo.contrast import jitter_signal, tissue_image
from glioma.demo.tumour import Tumour, lesion_image, make_tumour

#: Head motion between sequences and per-patient anatomical variation (small, as in practice).
MOTION_DEGREES, MOTION_MM = 4.0, 4.0
ANATOMY_SCALE, ANATOMY_DEGREES, ANATOMY_SHEAR, ANATOMY_MM = 0.07, 4.0, 0.03, 3.0


@dataclass
class Patient:
    """One rendered patient; arrays are (z, y, x) on the named sequence's grid.

    Attributes:
        images: sequence -> stored voxels (scanner units and type).
        grids: sequence -> its voxel grid in scanner space.
        world_from_scanner: sequence -> 4x4 rigid head pose of that acquisition.
        atlas_from_world: 4x4 affine from the patient's anatomy to the atlas.
        roi: uint8 0/1 lesion mask (tumour + necrosis + oedema) on the ``roi_on`` grid.
        brain_mask_t1c: uint8 0/1 true brain on the T1c grid.
        wm_masks: sequence -> uint8 0/1 true normal white matter on its grid.
        bias: sequence -> float32 multiplicative bias field on its grid.
        tumour: the tumour, in atlas space.
        centre_world: tumour centre in the patient's anatomy (world) space, LPS mm.
        roi_on: the sequence whose grid the ROI is on (FLAIR unless it was not acquired).
    """

    images: dict[str, np.ndarray]
    grids: dict[str, acq.Grid]
    world_from_scanner: dict[str, np.ndarray]
    atlas_from_world: np.ndarray
    roi: np.ndarray
    brain_mask_t1c: np.ndarray
    wm_masks: dict[str, np.ndarray]
    bias: dict[str, np.ndarray]
    tumour: Tumour
    centre_world: np.ndarray
    roi_on: str = "flair"


def anatomy_affine(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """Draw ``atlas_from_world``: random scaling, shear and a small pose change about ``centre``."""
    scale = np.diag(rng.uniform(1 - ANATOMY_SCALE, 1 + ANATOMY_SCALE, 3))
    shear = np.eye(3) + np.triu(rng.uniform(-ANATOMY_SHEAR, ANATOMY_SHEAR, (3, 3)), 1)
    angles = rng.uniform(-ANATOMY_DEGREES, ANATOMY_DEGREES, 3)
    linear = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ shear @ scale
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = centre - linear @ centre + rng.uniform(-ANATOMY_MM, ANATOMY_MM, 3)
    return matrix


def _full(atlas: Atlas, tumour: Tumour, box_array: np.ndarray) -> np.ndarray:
    """Embed a tumour-box array into a zero atlas-sized array."""
    full = np.zeros(atlas.brain.shape, np.float32)
    full[tumour.box] = box_array
    return full


def _acquire(
    rng: np.random.Generator,
    atlas: Atlas,
    scanner: acq.Scanner,
    seq: str,
    images: tuple[np.ndarray, np.ndarray],
    grid: acq.Grid,
    atlas_from_scanner: np.ndarray,
    reference_signal: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Acquire one sequence from atlas-space (signal, normal white matter) images.

    Returns:
        The stored voxels (with bias field and noise), the bias field, and the white matter
        mask, all on ``grid``.
    """
    sigma = acq.slab_sigma(grid, atlas_from_scanner, atlas.spacing)
    signal, wm = (acq.sample(a, atlas.reference, grid, atlas_from_scanner, sigma) for a in images)
    amplitude = scanner.bias * rng.uniform(0.8, 1.2)
    bias = acq.bias_field(rng, signal.shape, amplitude)
    noisy = acq.add_rician_noise(rng, signal * bias, scanner.noise * reference_signal)
    # Voxels at least 60% normal white matter after slab averaging: pure enough for N4 checks.
    return acq.to_scanner_units(scanner, seq, noisy), bias, (wm >= 0.6).astype(np.uint8)


def make_patient(
    rng: np.random.Generator,
    atlas: Atlas,
    scanner: acq.Scanner,
    cls: str,
    spacing: float,
    roi_on: str = "flair",
) -> Patient:
    """Render one patient of class ``cls`` as acquired by ``scanner``.

    All four sequences are rendered whatever ``roi_on`` is, and the ROI is sampled without
    random draws, so the images do not depend on which grid the ROI goes on.

    Args:
        rng: the patient's own generator (drawing order is fixed, so output is reproducible).
        atlas: the shared head anatomy.
        scanner: the site's acquisition conventions.
        cls: molecular class, one of ``glioma.constants.CLASSES``.
        spacing: the requested base voxel size in mm.
        roi_on: the sequence whose grid the ROI is drawn on (FLAIR, or another sequence for a
            patient whose FLAIR was not acquired).

    Raises:
        ValueError: ``roi_on`` is not one of ``glioma.constants.SEQUENCES``.
    """
    if roi_on not in SEQUENCES:
        raise ValueError(f"roi_on must be one of {list(SEQUENCES)}, got {roi_on!r}")
    atlas_from_world = anatomy_affine(rng, atlas.head_centre)
    world_from_atlas = np.linalg.inv(atlas_from_world)
    centre = (world_from_atlas @ np.append(atlas.head_centre, 1))[:3]
    tumour = make_tumour(rng, atlas, cls)
    signal = jitter_signal(rng)
    lesion = _full(atlas, tumour, np.clip(tumour.lesion, 0, 1))
    normal_wm = atlas.fractions["wm"] * (1 - lesion)

    images, grids, poses, wm_masks, biases = {}, {}, {}, {}, {}
    for seq in SEQUENCES:
        poses[seq] = acq.rigid(rng, centre, MOTION_DEGREES, MOTION_MM)
        grids[seq] = acq.make_grid(scanner, seq, spacing, centre, rng.uniform(-3, 3))
        image = lesion_image(tumour, seq, tissue_image(atlas.fractions, signal[seq]))
        reference_signal = (signal[seq]["gm"] + signal[seq]["wm"]) / 2
        images[seq], biases[seq], wm_masks[seq] = _acquire(
            rng,
            atlas,
            scanner,
            seq,
            (image, normal_wm),
            grids[seq],
            atlas_from_world @ poses[seq],
            reference_signal,
        )

    def on_grid(array: np.ndarray, seq: str) -> np.ndarray:
        sampled = acq.sample(array, atlas.reference, grids[seq], atlas_from_world @ poses[seq])
        return (sampled >= 0.5).astype(np.uint8)

    centre_world = (world_from_atlas @ np.append(tumour.centre, 1))[:3]
    return Patient(
        images=images,
        grids=grids,
        world_from_scanner=poses,
        atlas_from_world=atlas_from_world,
        roi=on_grid(lesion, roi_on),
        brain_mask_t1c=on_grid(atlas.brain, "t1c"),
        wm_masks=wm_masks,
        bias=biases,
        tumour=tumour,
        centre_world=centre_world,
        roi_on=roi_on,
    )

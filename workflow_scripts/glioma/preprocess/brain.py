"""Brain extraction on the T1c grid: deepbet (default, offline), HD-BET 2.x, or none."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioma.errors import InputError
from glioma.io import read_image, write_image
from glioma.preprocess import configure_threads, in_context

log = logging.getLogger(__name__)

METHODS = ("deepbet", "hdbet", "none")
#: Files an nnU-Net v2 trained-model folder (HD-BET's weights) must hold.
HDBET_FILES = ("dataset.json", "plans.json", "fold_all/checkpoint_final.pth")


def largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component of a boolean mask and fill its holes."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == sizes.argmax())


def nonzero_mask(array: np.ndarray) -> np.ndarray:
    """Brain mask of an already skull-stripped image: non-zero voxels, largest component, filled."""
    return largest_component_filled(array != 0)


def _to_nifti(image: sitk.Image):
    """Wrap a SimpleITK image as a nibabel image with the equivalent RAS affine (no file)."""
    import nibabel as nib

    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # ITK is LPS, NIfTI is RAS
    array = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)
    return nib.Nifti1Image(array, affine)


def deepbet_mask(image: sitk.Image, *, threshold: float = 0.5) -> np.ndarray:
    """Brain mask from deepbet (its trained weights ship inside its wheel).

    deepbet reorients to RAS itself and returns the mask in the input's voxel order; it is called
    in memory because its file API silently skips files smaller than 100 kB.

    Returns:
        Boolean mask in SimpleITK (z, y, x) order.
    """
    import torch
    from deepbet import BrainExtraction

    extractor = BrainExtraction(no_gpu=not torch.cuda.is_available())
    _, mask, _ = extractor.run(_to_nifti(image), threshold=threshold)
    return np.asarray(mask.dataobj).transpose(2, 1, 0) > 0


def hdbet_folder(weights: str | Path | None) -> Path:
    """Return the HD-BET model folder to use, checking that it holds the trained model.

    Args:
        weights: configured folder; empty or None means HD-BET's own default folder.

    Raises:
        InputError: a file is missing; the message says which files go where.
    """
    if not weights:
        from HD_BET.paths import folder_with_parameter_files

        weights = folder_with_parameter_files
    folder = Path(weights).expanduser()
    missing = [name for name in HDBET_FILES if not (folder / name).is_file()]
    if missing:
        from HD_BET.paths import ZENODO_DOWNLOAD_URL

        raise InputError(
            f"HD-BET weights not found: missing {', '.join(missing)}. Put the HD-BET 2.x model "
            f"(dataset.json, plans.json, fold_all/checkpoint_final.pth) in this folder, e.g. by "
            f"unzipping {ZENODO_DOWNLOAD_URL} there on a machine with internet, or set "
            "preprocess.brain_extraction.hdbet_weights to the folder that holds them",
            column="preprocess.brain_extraction.hdbet_weights",
            path=folder,
        )
    return folder


def hdbet_mask(image: sitk.Image, *, weights: str | Path | None = None) -> np.ndarray:
    """Brain mask from HD-BET 2.x: its nnU-Net v2 predictor, built as HD-BET builds it.

    HD-BET hard-codes its weights folder (bound by from-import in two modules), so the predictor is
    built here on the configured folder with HD-BET's settings (tile step 0.5, Gaussian weighting,
    no test-time mirroring) and run in-process on the array: HD-BET's own file path would start
    4 + 8 worker processes per image.

    Returns:
        Boolean mask in SimpleITK (z, y, x) order.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folder = hdbet_folder(weights)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(folder), ("all",))
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    # nnU-Net works in SimpleITK's (z, y, x) order, so its spacing is reversed.
    properties = {"spacing": list(image.GetSpacing())[::-1]}
    segmentation = predictor.predict_single_npy_array(array, properties)
    return np.asarray(segmentation) > 0


def extract_brain(
    image: sitk.Image,
    *,
    method: str = "deepbet",
    threshold: float = 0.5,
    hdbet_weights: str | Path | None = None,
) -> sitk.Image:
    """Return the brain mask of ``image`` (uint8 0/1, same grid): largest component, holes filled.

    Args:
        image: the sequence chosen to feed the extractor, on the T1c grid.
        method: ``deepbet``, ``hdbet`` or ``none`` (already skull-stripped: non-zero voxels).
        threshold: deepbet probability threshold.
        hdbet_weights: HD-BET model folder (empty: HD-BET's default folder).

    Raises:
        InputError: unknown method, missing HD-BET weights, or an empty mask.
    """
    if method == "deepbet":
        mask = deepbet_mask(image, threshold=threshold)
    elif method == "hdbet":
        mask = hdbet_mask(image, weights=hdbet_weights)
    elif method == "none":
        mask = sitk.GetArrayViewFromImage(image) != 0
    else:
        raise InputError(
            f"unknown brain extraction method {method!r}; expected one of {METHODS}",
            column="preprocess.brain_extraction.method",
        )
    mask = largest_component_filled(mask)
    if not mask.any():
        raise InputError(f"brain mask from {method} is empty")
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out


def extract_brain_file(
    in_path: str | Path,
    out_path: str | Path,
    *,
    method: str = "deepbet",
    threshold: float = 0.5,
    hdbet_weights: str | Path | None = None,
    threads: int = 1,
    patient: str | None = None,
    column: str | None = None,
) -> None:
    """Read the extractor's input image, compute the brain mask and write it (uint8) atomically.

    Args:
        in_path: registered image on the T1c grid (``preprocess.brain_extraction.input``).
        out_path: output mask path.
        method: see :func:`extract_brain`.
        threshold: see :func:`extract_brain`.
        hdbet_weights: see :func:`extract_brain`.
        threads: ITK and torch threads.
        patient: patient ID, for error messages.
        column: the sequence ``in_path`` holds, for error messages.
    """
    configure_threads(threads)
    if method != "none":
        import torch

        torch.set_num_threads(max(1, int(threads)))
    try:
        image = read_image(in_path)
        mask = extract_brain(image, method=method, threshold=threshold, hdbet_weights=hdbet_weights)
    except InputError as err:
        raise in_context(err, patient=patient, column=column, path=in_path) from err
    voxels = int(sitk.GetArrayViewFromImage(mask).sum())
    log.info("%s brain mask: %.0f ml", method, voxels * np.prod(mask.GetSpacing()) / 1000)
    write_image(mask, out_path)

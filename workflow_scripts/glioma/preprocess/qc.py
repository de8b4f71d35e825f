"""QC picture: four sequences x three planes through the tumour centre, brain and ROI outlines."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioma.constants import SEQUENCES
from glioma.errors import InputError
from glioma.io import atomic_path, present_sequences, read_image
from glioma.preprocess import in_context
from glioma.preprocess.crop import orientation, to_patient_axes

log = logging.getLogger(__name__)

#: Figure size in inches and resolution: every QC picture is FIGSIZE * DPI pixels.
FIGSIZE = (9.0, 12.0)
DPI = 100
PLANES = ("axial", "coronal", "sagittal")
BRAIN_COLOUR, ROI_COLOUR = "#00e5ff", "#ff3030"


def _plane(volume: np.ndarray, centre: np.ndarray, plane: str) -> np.ndarray:
    """Cut a (L, P, S) volume through ``centre`` into a 2D picture in radiological view.

    Axial: anterior at the top, patient's right on the left. Coronal: superior at the top, right
    on the left. Sagittal: superior at the top, anterior on the left.
    """
    x, y, z = (int(c) for c in centre)
    if plane == "axial":
        return volume[:, :, z].T
    if plane == "coronal":
        return volume[:, y, :].T[::-1]
    return volume[x, :, :].T[::-1]


def _aspect(spacing_lps: np.ndarray, plane: str) -> float:
    """Row spacing over column spacing, so pictures keep physical proportions."""
    rows, cols = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}[plane]
    return float(spacing_lps[rows] / spacing_lps[cols])


def _window(volume: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Display window: 1st-99th percentile inside the mask (or of non-zero voxels)."""
    values = volume[mask] if mask.any() else volume[volume != 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [1, 99])
    return float(low), float(high if high > low else low + 1)


def _draw_absent_row(axes, sequence: str, *, first: bool) -> None:
    """Draw the row of a sequence that was not acquired: empty panels, labelled as such."""
    for ax, plane in zip(axes, PLANES, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor("black")
        if first:
            ax.set_title(plane, color="white", fontsize=10)
    axes[1].text(
        0.5, 0.5, f"{sequence}: not acquired", color="#ffb000", fontsize=12,
        ha="center", va="center", transform=axes[1].transAxes,
    )  # fmt: skip
    axes[0].set_ylabel(sequence, color="white", fontsize=10)


def _draw_row(axes, sequence, volume, brain, roi, centre, spacing_lps, *, first: bool) -> None:
    """Draw one sequence in the three planes, with brain and ROI outlines (``volume`` None: a
    sequence that was not acquired)."""
    if volume is None:
        _draw_absent_row(axes, sequence, first=first)
        return
    low, high = _window(volume, brain)
    for ax, plane in zip(axes, PLANES, strict=True):
        ax.imshow(
            _plane(volume, centre, plane),
            cmap="gray",
            vmin=low,
            vmax=high,
            aspect=_aspect(spacing_lps, plane),
            interpolation="nearest",
        )
        for mask, colour in ((brain, BRAIN_COLOUR), (roi, ROI_COLOUR)):
            cut = _plane(mask, centre, plane).astype(float)
            if cut.any() and not cut.all():
                ax.contour(cut, levels=[0.5], colors=colour, linewidths=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor("black")
        if first:
            ax.set_title(plane, color="white", fontsize=10)
    axes[0].set_ylabel(sequence, color="white", fontsize=10)


def plot_qc(
    volumes: Mapping[str, np.ndarray | None],
    brain: np.ndarray,
    roi: np.ndarray,
    spacing_lps: np.ndarray,
    out_path: str | Path,
    *,
    title: str = "",
) -> None:
    """Draw the QC figure from (L, P, S) arrays and save it as PNG (fixed size) atomically.

    Args:
        volumes: image per sequence, (L, P, S) order; None for a sequence that was not
            acquired (a labelled empty row).
        brain: brain mask, same order.
        roi: ROI mask, same order; the cuts go through its centre of mass.
        spacing_lps: voxel spacing along L, P, S in mm.
        out_path: PNG path.
        title: figure title (e.g. cohort and patient).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = np.round(np.argwhere(roi).mean(axis=0)).astype(int)
    fig, axes = plt.subplots(len(volumes), len(PLANES), figsize=FIGSIZE, dpi=DPI, squeeze=False)
    fig.patch.set_facecolor("black")
    for row, (sequence, volume) in enumerate(volumes.items()):
        _draw_row(axes[row], sequence, volume, brain, roi, centre, spacing_lps, first=row == 0)
    fig.suptitle(f"{title}  (brain: cyan, ROI: red; radiological view)", color="white", fontsize=11)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.01, top=0.94, wspace=0.03, hspace=0.06)
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, facecolor=fig.get_facecolor())
    finally:
        plt.close(fig)


def _read_lps(path: str | Path, orient, column: str, *, mask: bool = False) -> np.ndarray:
    """Read an image and reorder it to (L, P, S); errors name the column."""
    try:
        array = sitk.GetArrayFromImage(read_image(path, mask=mask))
    except InputError as err:
        raise in_context(err, column=column) from err
    return to_patient_axes(array, orient)


def plot_qc_file(
    images: Mapping[str, str | Path],
    brain_mask: str | Path,
    roi: str | Path,
    out_path: str | Path,
    *,
    title: str = "",
    patient: str | None = None,
) -> None:
    """Read one patient's images (T1c grid), brain mask and ROI, and write the QC picture.

    Args:
        images: image path per sequence (registered, before skull stripping, shows the mask
            best); a not-acquired stand-in is drawn as a labelled empty row.
        brain_mask: brain mask path.
        roi: ROI path.
        out_path: ``results/qc/{cohort}/{patient}.png``.
        title: figure title.
        patient: patient ID, for error messages.
    """
    try:
        roi_image = read_image(roi, mask=True)
        orient = orientation(roi_image.GetDirection())
        roi_lps = to_patient_axes(sitk.GetArrayFromImage(roi_image), orient) > 0
        if not roi_lps.any():
            raise InputError("ROI is empty", column="roi", path=roi)
        brain = _read_lps(brain_mask, orient, "brain_mask", mask=True) > 0
        present = present_sequences({s: images[s] for s in SEQUENCES})
        volumes = {s: _read_lps(images[s], orient, s) if s in present else None for s in SEQUENCES}
        paths = {"brain_mask": brain_mask, **images}
        for name, array in (("brain_mask", brain), *volumes.items()):
            if array is not None and array.shape != roi_lps.shape:
                raise InputError("grid differs from the ROI's grid", column=name, path=paths[name])
    except InputError as err:
        raise in_context(err, patient=patient, column="roi", path=roi) from err
    spacing_lps = np.asarray(roi_image.GetSpacing())[list(orient.axes)]
    plot_qc(volumes, brain, roi_lps, spacing_lps, out_path, title=title or (patient or ""))
    log.info("QC picture written to %s", out_path)

"""QC picture: exists, fixed size, shows the images and both outlines."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from test_preprocess_phantom import acquire, make_grid, motion, world_head

from glioma.errors import InputError
from glioma.preprocess.qc import DPI, FIGSIZE, plot_qc_file

SEQUENCES = ("t1w", "t1c", "t2w", "flair")


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qc")
    world = world_head(3.0)
    grid = make_grid([4.0, 4.0, 5.0], rotation_deg=(10, 0, 0), flip=(-1, -1, 1))
    pose = motion((3, 0, 2), (1, 2, 3))
    paths = {}
    for sequence in SEQUENCES:
        paths[sequence] = folder / f"{sequence}.nii.gz"
        sitk.WriteImage(acquire(world.images[sequence], grid, pose), str(paths[sequence]))
    for name, mask in (("brain_mask", world.brain), ("roi", world.roi)):
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(acquire(mask, grid, pose, label=True), str(paths[name]))
    return folder, paths


def _colour_pixels(picture: np.ndarray, rgb: tuple[float, float, float]) -> int:
    return int((np.abs(picture[..., :3] - rgb) < 0.15).all(axis=-1).sum())


def test_qc_picture_has_fixed_size_images_and_outlines(patient):
    folder, paths = patient
    out = folder / "qc" / "P1.png"
    plot_qc_file(
        {s: paths[s] for s in SEQUENCES}, paths["brain_mask"], paths["roi"], out, patient="P1"
    )
    picture = matplotlib.image.imread(out)
    assert picture.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert picture[..., :3].std() > 0.1  # not blank
    assert _colour_pixels(picture, (1.0, 0.19, 0.19)) > 50  # ROI outline (red)
    assert _colour_pixels(picture, (0.0, 0.9, 1.0)) > 200  # brain outline (cyan)
    assert [p.name for p in out.parent.iterdir()] == ["P1.png"]


def test_qc_empty_roi_names_patient_and_file(patient, tmp_path):
    _, paths = patient
    empty = sitk.ReadImage(str(paths["roi"])) * 0
    sitk.WriteImage(empty, str(tmp_path / "roi.nii.gz"))
    with pytest.raises(InputError) as err:
        plot_qc_file(
            {s: paths[s] for s in SEQUENCES},
            paths["brain_mask"],
            tmp_path / "roi.nii.gz",
            tmp_path / "qc.png",
            patient="P2",
        )
    assert (err.value.patient, err.value.column) == ("P2", "roi")
    assert not (tmp_path / "qc.png").exists()

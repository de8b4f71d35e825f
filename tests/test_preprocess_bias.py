"""N4 bias-field correction on phantoms with a known bias field and known white matter."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from test_preprocess_phantom import acquire, make_grid, motion, world_head

from glioma.errors import InputError
from glioma.preprocess.bias import correct_bias_files, head_mask, n4_correct, shrink_factors

sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)


def _cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


@pytest.mark.parametrize("sequence", ["t1w", "t2w", "flair"])
def test_n4_halves_white_matter_variation(sequence):
    world = world_head(3.0)
    grid = make_grid([3.0] * 3, rotation_deg=(6, 0, 0))
    pose = motion((2, 0, -3), (3, -2, 1))
    biased = acquire(world.images[sequence], grid, pose, bias=0.35, noise=0.01)
    wm = sitk.GetArrayFromImage(acquire(world.wm, grid, pose, label=True)) > 0
    before = _cv(sitk.GetArrayFromImage(biased)[wm])
    after = _cv(sitk.GetArrayFromImage(n4_correct(biased))[wm])
    assert before > 0.06  # the field is strong enough for the test to mean something
    assert after <= 0.5 * before


def test_head_mask_covers_head_not_background():
    world = world_head(3.0)
    grid = make_grid([3.0] * 3)
    image = acquire(world.images["t1w"], grid, noise=0.01)
    mask = sitk.GetArrayFromImage(head_mask(image)) > 0
    brain = sitk.GetArrayFromImage(acquire(world.brain, grid, label=True)) > 0
    assert mask[brain].mean() > 0.99  # dark CSF and ventricles are filled in
    assert mask.mean() < 0.7  # the air around the head is not
    assert not mask[0, 0, 0]


def test_shrink_factors_keep_thick_slices():
    image = sitk.Image([120, 120, 30], sitk.sitkFloat32)
    image.SetSpacing([1.0, 1.0, 5.0])
    assert shrink_factors(image, 4.0) == [4, 4, 1]
    small = sitk.Image([20, 20, 20], sitk.sitkFloat32)
    assert shrink_factors(small, 4.0) == [2, 2, 2]  # >= 8 voxels per axis remain


def test_file_function_keeps_grid_and_writes_float32(tmp_path):
    world = world_head(3.0)
    # int16 data on an oblique, RAS-flipped grid, as scanners write it.
    grid = make_grid([4.0, 4.0, 5.0], rotation_deg=(0, 8, 0), flip=(-1, -1, 1))
    inputs, outputs = {}, {}
    for sequence in ("t1w", "t1c", "t2w", "flair"):
        image = acquire(
            world.images[sequence], grid, bias=0.3, pixel=sitk.sitkInt16, scale=1000, seed=1
        )
        inputs[sequence] = tmp_path / f"{sequence}.nrrd"
        outputs[sequence] = tmp_path / "n4" / f"{sequence}.nii.gz"
        sitk.WriteImage(image, str(inputs[sequence]))
    correct_bias_files(inputs, outputs, threads=2, patient="P1")
    for sequence in inputs:
        out = sitk.ReadImage(str(outputs[sequence]))
        assert out.GetPixelID() == sitk.sitkFloat32
        assert out.GetSize() == grid.GetSize()
        np.testing.assert_allclose(out.GetDirection(), grid.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(out.GetOrigin(), grid.GetOrigin(), atol=1e-4)
    # Each N4 fit runs on one thread (sequences in parallel): the files do not depend on the
    # job's threads, so a cluster's set-threads changes no result.
    serial = {s: tmp_path / "n4_serial" / f"{s}.nii.gz" for s in inputs}
    correct_bias_files(inputs, serial, threads=1, patient="P1")
    for sequence in inputs:
        assert serial[sequence].read_bytes() == outputs[sequence].read_bytes(), sequence


def test_constant_image_names_patient_column_and_file(tmp_path):
    inputs = {}
    for sequence in ("t1w", "t1c", "t2w", "flair"):
        inputs[sequence] = tmp_path / f"{sequence}.nii.gz"
        sitk.WriteImage(sitk.Image([16, 16, 16], sitk.sitkFloat32) + 5, str(inputs[sequence]))
    outputs = {s: tmp_path / "out" / f"{s}.nii.gz" for s in inputs}
    with pytest.raises(InputError) as err:
        correct_bias_files(inputs, outputs, patient="P7")
    assert err.value.patient == "P7"
    assert err.value.column == "t1w"
    assert err.value.path == str(inputs["t1w"])
    assert not outputs["t1w"].exists()

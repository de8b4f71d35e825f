"""Intensity normalisation inside the brain mask, and the file step that applies the mask."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from glioma.errors import InputError
from glioma.preprocess.normalise import normalise, normalise_files, percentile_scale, zscore

SEQUENCES = ("t1w", "t1c", "t2w", "flair")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    array = rng.normal(300, 40, (10, 12, 14)).astype(np.float32)
    mask = np.zeros(array.shape, bool)
    mask[2:8, 3:9, 4:10] = True
    return array, mask


def test_zscore_inside_mask_zero_outside():
    array, mask = _data()
    out = zscore(array, mask)
    assert out.dtype == np.float32
    assert out[mask].mean() == pytest.approx(0, abs=1e-5)
    assert out[mask].std() == pytest.approx(1, abs=1e-4)
    assert (out[~mask] == 0).all()


def test_percentile_maps_percentiles_to_0_and_1():
    array, mask = _data()
    out = percentile_scale(array, mask, (1, 99))
    assert np.percentile(out[mask], 1) == pytest.approx(0, abs=1e-5)
    assert np.percentile(out[mask], 99) == pytest.approx(1, abs=1e-5)
    assert (out[~mask] == 0).all()
    np.testing.assert_array_equal(
        normalise(array, mask, method="percentile", percentiles=(1, 99)), out
    )


@pytest.mark.parametrize(
    ("array", "mask", "kwargs", "message"),
    [
        (np.ones((4, 4, 4)), np.ones((4, 4, 4), bool), {}, "constant"),
        (np.ones((4, 4, 4)), np.zeros((4, 4, 4), bool), {}, "empty"),
        (
            np.arange(64.0).reshape(4, 4, 4),
            np.ones((4, 4, 4), bool),
            {"method": "minmax"},
            "unknown",
        ),
        (
            np.arange(64.0).reshape(4, 4, 4),
            np.ones((4, 4, 4), bool),
            {"method": "percentile", "percentiles": (90, 10)},
            "low < high",
        ),
    ],
)
def test_bad_input_is_an_input_error(array, mask, kwargs, message):
    with pytest.raises(InputError, match=message):
        normalise(array, mask, **kwargs)


def _write(array, path, reference=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return path


def test_files_apply_brain_mask_united_with_roi(tmp_path):
    array, brain = _data()
    roi = np.zeros(brain.shape, np.uint8)
    roi[5:9, 5:7, 5:7] = 1  # sticks out of the brain mask below slice 8
    images = {s: _write(array * (i + 1), tmp_path / f"{s}.nii.gz") for i, s in enumerate(SEQUENCES)}
    _write(brain.astype(np.uint8), tmp_path / "brain.nii.gz")
    _write(roi, tmp_path / "roi.nii.gz")
    outputs = {n: tmp_path / "out" / f"{n}.nii.gz" for n in (*SEQUENCES, "brain_mask", "roi")}
    normalise_files(images, tmp_path / "brain.nii.gz", tmp_path / "roi.nii.gz", outputs)
    applied = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["brain_mask"]))).astype(bool)
    np.testing.assert_array_equal(applied, brain | roi.astype(bool))
    for sequence in SEQUENCES:
        image = sitk.ReadImage(str(outputs[sequence]))
        assert image.GetPixelID() == sitk.sitkFloat32
        np.testing.assert_allclose(image.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
        out = sitk.GetArrayFromImage(image)
        assert out[applied].std() == pytest.approx(1, abs=1e-3)
        assert (out[~applied] == 0).all()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["roi"]))), roi)


def test_files_grid_mismatch_names_patient_column_file(tmp_path):
    array, brain = _data()
    images = {s: _write(array, tmp_path / f"{s}.nii.gz") for s in SEQUENCES}
    images["t2w"] = _write(array[:, :, :-1].copy(), tmp_path / "t2w_small.nii.gz")
    _write(brain.astype(np.uint8), tmp_path / "brain.nii.gz")
    _write(brain.astype(np.uint8), tmp_path / "roi.nii.gz")
    outputs = {n: tmp_path / "out" / f"{n}.nii.gz" for n in (*SEQUENCES, "brain_mask", "roi")}
    with pytest.raises(InputError) as err:
        normalise_files(
            images, tmp_path / "brain.nii.gz", tmp_path / "roi.nii.gz", outputs, patient="P3"
        )
    assert (err.value.patient, err.value.column) == ("P3", "t2w")
    assert err.value.path == str(images["t2w"])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

"""ROI crop: slices, shapes, dtypes, orientation, aspect and field of view on known volumes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk

from glioma.errors import InputError
from glioma.preprocess.crop import crop_file, crop_slices, orientation

SHAPE = (12, 30, 40)  # (z, y, x) SimpleITK array order
SPACING = (1.0, 1.5, 2.0)  # (x, y, z)
IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
FLIP_Z = (1, 0, 0, 0, 1, 0, 0, 0, -1)
RAS = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
CORONAL = (1, 0, 0, 0, 0, -1, 0, 1, 0)  # grid y runs superior, grid z runs anterior


def _box_roi(z=(3, 5), y=(10, 14), x=(20, 29)) -> np.ndarray:
    roi = np.zeros(SHAPE, np.uint8)
    roi[z[0] : z[1] + 1, y[0] : y[1] + 1, x[0] : x[1] + 1] = 1
    return roi


def _physical(direction, spacing=SPACING, shape=SHAPE) -> np.ndarray:
    """(3, z, y, x) LPS coordinates of every voxel (origin 0)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))[::-1]
    matrix = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing)
    return np.einsum("ij,j...->i...", matrix, index)


def _constant_channels(values=(1.0, 2.0, 3.0, 4.0)) -> np.ndarray:
    return np.stack([np.full(SHAPE, v, np.float32) for v in values])


def _sphere(radius_mm, spacing, shape, centre_index, direction=IDENTITY) -> np.ndarray:
    """(z, y, x) uint8 ball of ``radius_mm`` around the voxel at ``centre_index`` (x, y, z)."""
    coords = _physical(direction, spacing=spacing, shape=shape)
    centre = coords[(slice(None), *centre_index[::-1])]
    distance = np.linalg.norm(coords - centre[:, None, None, None], axis=0)
    return (distance <= radius_mm).astype(np.uint8)


def _crop_roi(roi, spacing, direction=IDENTITY, **kwargs) -> tuple[np.ndarray, dict]:
    """Crop an ROI given as its own four channels: the ROI slice of largest area, and the crops."""
    out = crop_slices(np.stack([roi] * 4).astype(np.float32), roi, spacing, direction, **kwargs)
    largest = out["images"][np.argmax(out["roi_area"]), 0].astype(np.float32)
    return largest, out


def test_orientation_of_common_headers():
    assert orientation(IDENTITY).axes == (0, 1, 2)
    assert orientation(RAS).flips == (True, True, False)
    coronal = orientation(CORONAL)
    assert coronal.axial == 1 and coronal.axes == (0, 2, 1)
    oblique = sitk.Euler3DTransform()
    oblique.SetRotation(np.deg2rad(30), 0, 0)  # 30 degrees about x: still closest to axial
    assert orientation(oblique.GetMatrix()).axial == 2


def test_slices_shape_dtype_and_area():
    out = crop_slices(_constant_channels(), _box_roi(), SPACING, IDENTITY, margin_mm=4, size=32)
    assert out["images"].shape == (3, 4, 32, 32) and out["images"].dtype == np.float16
    np.testing.assert_array_equal(out["slice_index"], [3, 4, 5])
    assert out["slice_index"].dtype == np.int32
    np.testing.assert_allclose(out["roi_area"], 5 * 10 * 1.0 * 1.5)
    assert out["roi_area"].dtype == np.float32
    np.testing.assert_array_equal(out["spacing"], np.float32(SPACING))
    assert out["pixel_mm"].dtype == np.float32
    assert out["pixel_mm"] == pytest.approx((10 + 2 * 4) / 32)  # longer box side 10 mm + margins
    for channel, value in enumerate((1, 2, 3, 4)):  # the box and margin lie inside the volume
        np.testing.assert_allclose(out["images"][:, channel], value, rtol=1e-3)


@pytest.mark.parametrize(
    ("direction", "roi_kwargs", "expected"),
    [
        (FLIP_Z, dict(z=(1, 2)), [1, 2]),  # indices stay those of the grid, not flipped
        (RAS, dict(z=(7, 9)), [7, 8, 9]),
        (CORONAL, dict(z=(0, 11), y=(6, 7), x=(5, 30)), [6, 7]),  # axial axis is grid y
    ],
)
def test_slice_index_along_the_axial_grid_axis(direction, roi_kwargs, expected):
    out = crop_slices(_constant_channels(), _box_roi(**roi_kwargs), SPACING, direction, size=16)
    np.testing.assert_array_equal(out["slice_index"], expected)


@pytest.mark.parametrize("direction", [IDENTITY, RAS, FLIP_Z, CORONAL])
def test_radiological_view_and_square_in_mm(direction):
    shape = (30, 30, 30)
    coords = _physical(direction, shape=shape).astype(np.float32)
    roi = np.zeros(shape, np.uint8)
    roi[10:20, 10:20, 10:20] = 1  # 10 x 15 x 20 mm: a different extent along every grid axis
    out = crop_slices(coords[[0, 1, 2, 0]], roi, SPACING, direction, size=24, margin_mm=0)
    images = out["images"].astype(np.float32)
    left, posterior = images[0, 0], images[0, 1]
    assert (np.diff(left, axis=1) > 0).all()  # columns run right -> left
    assert (np.diff(posterior, axis=0) > 0).all()  # rows run anterior -> posterior
    # Square in mm: a pixel covers the same physical length along rows and columns.
    step_l = (left[12, 20] - left[12, 4]) / 16
    step_p = (posterior[20, 12] - posterior[4, 12]) / 16
    assert step_l == pytest.approx(step_p, rel=0.02)


def test_min_roi_voxels_and_mask_to_roi():
    roi = _box_roi()
    roi[6, 12, 22] = 1  # a single-voxel slice
    channels = _constant_channels()
    assert len(crop_slices(channels, roi, SPACING, IDENTITY, size=16)["slice_index"]) == 4
    kept = crop_slices(channels, roi, SPACING, IDENTITY, size=16, min_roi_voxels=2)
    np.testing.assert_array_equal(kept["slice_index"], [3, 4, 5])
    masked = crop_slices(channels, roi, SPACING, IDENTITY, size=16, margin_mm=6, mask_to_roi=True)
    images = masked["images"][:3]
    assert images[:, :, 0, 0].max() == 0  # the corner lies in the margin, outside the ROI
    assert images[:, :, 8, 8].min() > 0  # the centre lies in the ROI


def test_no_slice_with_enough_roi_is_an_error():
    with pytest.raises(InputError, match="no axial slice"):
        crop_slices(_constant_channels(), np.zeros(SHAPE, np.uint8), SPACING, IDENTITY)


ISOTROPIC = (1.0, 1.0, 1.0)
BALL_SHAPE = (40, 40, 40)


def test_roi_fills_the_crop_without_fov_and_keeps_its_size_with_fov():
    small = _sphere(8, ISOTROPIC, BALL_SHAPE, (20, 20, 20))
    large = _sphere(16, ISOTROPIC, BALL_SHAPE, (20, 20, 20))
    fill = [_crop_roi(roi, ISOTROPIC, margin_mm=0, size=64)[0].mean() for roi in (small, large)]
    assert fill[0] == pytest.approx(fill[1], rel=0.1)  # each disc fills its own box: ~pi/4
    assert fill[1] == pytest.approx(np.pi / 4, rel=0.1)
    (small_slice, small_out), (large_slice, large_out) = [
        _crop_roi(roi, ISOTROPIC, fov_mm=80, margin_mm=10, size=64) for roi in (small, large)
    ]
    assert small_out["pixel_mm"] == large_out["pixel_mm"] == pytest.approx(80 / 64)
    pixels = [(image > 0.5).sum() for image in (small_slice, large_slice)]
    assert pixels[1] / pixels[0] == pytest.approx(4, rel=0.1)  # area grows with radius squared
    assert small_slice.mean() == pytest.approx(np.pi * 8**2 / 80**2, rel=0.1)


def test_fov_gives_the_same_picture_on_fine_and_coarse_grids():
    # A 10 mm ball at 20 mm from the origin along every axis, on 0.5 mm thin and 2 mm thick slices.
    fine = _sphere(10, (0.5, 0.5, 1.0), (40, 80, 80), (40, 40, 20))
    coarse = _sphere(10, (2.0, 2.0, 4.0), (10, 20, 20), (10, 10, 5))
    fine_slice, fine_out = _crop_roi(fine, (0.5, 0.5, 1.0), fov_mm=50, size=48)
    coarse_slice, coarse_out = _crop_roi(coarse, (2.0, 2.0, 4.0), fov_mm=50, size=48)
    assert fine_out["pixel_mm"] == coarse_out["pixel_mm"] == pytest.approx(50 / 48)
    assert len(fine_out["slice_index"]) > 4 * len(coarse_out["slice_index"]) > 0
    assert coarse_slice.mean() == pytest.approx(fine_slice.mean(), rel=0.1)
    assert fine_slice.mean() == pytest.approx(np.pi * 10**2 / 50**2, rel=0.05)


def test_roi_larger_than_the_fov_is_cut_with_a_warning(caplog):
    large = _sphere(16, ISOTROPIC, BALL_SHAPE, (20, 20, 20))  # 33 voxels across
    with caplog.at_level(logging.WARNING, logger="glioma.preprocess.crop"):
        _crop_roi(large, ISOTROPIC, fov_mm=80, size=32)
        assert not caplog.records
        largest, _ = _crop_roi(large, ISOTROPIC, fov_mm=20, size=32)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "33.0 x 33.0 mm" in record.getMessage() and "13.0 x 13.0 mm" in record.getMessage()
    assert largest.min() > 0.99  # the ROI covers the whole cut square


OBLIQUE = tuple(
    sitk.Euler3DTransform((0, 0, 0), np.deg2rad(20), np.deg2rad(-10), np.deg2rad(25)).GetMatrix()
)


@pytest.mark.parametrize("direction", [IDENTITY, RAS, CORONAL, OBLIQUE])
def test_fov_centres_the_roi_whatever_the_direction(direction):
    shape = (30, 30, 30)
    roi = _sphere(8, SPACING, shape, (12, 12, 10), direction)  # off the volume's centre
    largest, out = _crop_roi(roi, SPACING, direction, fov_mm=60, size=32)
    assert out["pixel_mm"] == pytest.approx(60 / 32)
    rows, cols = np.indices(largest.shape) + 0.5  # pixel centres; the crop's centre is at 16
    weight = largest.sum()
    assert (rows * largest).sum() / weight == pytest.approx(16, abs=0.5)
    assert (cols * largest).sum() / weight == pytest.approx(16, abs=0.5)
    assert largest.mean() == pytest.approx(np.pi * 8**2 / 60**2, rel=0.15)


def test_crop_file_writes_contract_npz(tmp_path):
    images = {}
    reference = sitk.GetImageFromArray(np.zeros(SHAPE, np.float32))
    reference.SetSpacing(SPACING)
    reference.SetDirection(RAS)
    for i, sequence in enumerate(("t1w", "t1c", "t2w", "flair")):
        image = sitk.GetImageFromArray(np.full(SHAPE, i + 1, np.float32))
        image.CopyInformation(reference)
        images[sequence] = tmp_path / f"{sequence}.nii.gz"
        sitk.WriteImage(image, str(images[sequence]))
    roi = sitk.GetImageFromArray(_box_roi())
    roi.CopyInformation(reference)
    sitk.WriteImage(roi, str(tmp_path / "roi.nii.gz"))
    out = tmp_path / "crops" / "P1.npz"
    crop_file(images, tmp_path / "roi.nii.gz", out, size=20, patient="P1")
    with np.load(out) as crops:
        assert set(crops.files) == {"images", "slice_index", "roi_area", "spacing", "pixel_mm"}
        assert crops["images"].shape == (3, 4, 20, 20)
        np.testing.assert_allclose(crops["images"][:, 3], 4, rtol=1e-3)  # channel order kept
        assert crops["pixel_mm"] == pytest.approx((10 + 2 * 10) / 20)  # default 10 mm margin
    assert [p.name for p in out.parent.iterdir()] == ["P1.npz"]  # no temporary left behind
    crop_file(images, tmp_path / "roi.nii.gz", out, fov_mm=40, size=20, patient="P1")
    with np.load(out) as crops:
        assert crops["pixel_mm"] == pytest.approx(40 / 20)

"""Rigid registration to T1c: known misalignment recovered across contrasts, ROI follows roi_on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_preprocess_phantom import (
    acquire,
    dice,
    grid_points,
    make_grid,
    motion,
    true_map,
    world_head,
)

from glioma.errors import InputError
from glioma.io import is_absent, write_absent
from glioma.preprocess import configure_threads
from glioma.preprocess.register import (
    ants_seed,
    check_roi_grid,
    downsample,
    reference_of,
    register_files,
    register_rigid,
    same_grid,
    to_ants,
    transform_file,
)

configure_threads(2)
SEQUENCES = ("t1w", "t1c", "t2w", "flair")

#: Scanner grid and head pose of each sequence: oblique, flipped (RAS-like) and thick-slice grids,
#: head motion of 4-6 mm and 4-7 degrees between acquisitions.
ACQUISITION = {
    "t1c": (dict(spacing=[4.0] * 3, rotation_deg=(12, 0, 0)), ((0, 0, 0), (0, 0, 0))),
    "t1w": (dict(spacing=[4.0] * 3, flip=(-1, -1, 1)), ((2, 5, -3), (6, 2, -5))),
    "t2w": (dict(spacing=[4.5] * 3, rotation_deg=(0, 0, 3)), ((6, -4, 3), (5, -6, 4))),
    "flair": (dict(spacing=[4.0, 4.0, 5.0], flip=(-1, -1, 1)), ((-5, 3, -7), (-4, 6, 3))),
}


def _write_patient(folder, roi_on="flair"):
    """Write a phantom patient (int16 T1c, float others, ROI on ``roi_on``); return paths, truth."""
    world = world_head(3.0)
    paths, grids, poses = {}, {}, {}
    for i, sequence in enumerate(SEQUENCES):
        grid_args, pose_args = ACQUISITION[sequence]
        grid_args = dict(grid_args)
        grids[sequence] = make_grid(grid_args.pop("spacing"), **grid_args)
        poses[sequence] = motion(*pose_args)
        pixel = sitk.sitkInt16 if sequence == "t1c" else sitk.sitkFloat32
        scale = 1000 if sequence == "t1c" else 1
        image = acquire(
            world.images[sequence], grids[sequence], poses[sequence],
            noise=0.01, seed=i, pixel=pixel, scale=scale,
        )  # fmt: skip
        paths[sequence] = folder / f"{sequence}.nii.gz"
        sitk.WriteImage(image, str(paths[sequence]))
    roi = acquire(world.roi, grids[roi_on], poses[roi_on], label=True)
    paths["roi"] = folder / "roi.nrrd"
    sitk.WriteImage(roi, str(paths["roi"]))
    true_roi = acquire(world.roi, grids["t1c"], poses["t1c"], label=True)
    brain = acquire(world.brain, grids["t1c"], poses["t1c"], label=True)
    return paths, poses, brain, true_roi


def _outputs(folder):
    outputs = {s: folder / "reg" / f"{s}.nii.gz" for s in (*SEQUENCES, "roi")}
    return outputs, folder / "reg" / "transforms"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("register")
    paths, poses, brain, true_roi = _write_patient(folder)
    outputs, transforms = _outputs(folder)
    register_files(
        {s: paths[s] for s in SEQUENCES}, paths["roi"], "flair", outputs, transforms,
        transform="Rigid", seed=1, threads=2, patient="P1",
    )  # fmt: skip
    return outputs, transforms, poses, brain, true_roi


@pytest.mark.parametrize("sequence", ["t1w", "t2w", "flair"])
def test_registration_recovers_known_motion(registered, sequence):
    _, transforms, poses, brain, _ = registered
    estimated = sitk.ReadTransform(str(transforms / transform_file(sequence, "t1c")))
    points = grid_points(brain, sitk.GetArrayFromImage(brain) > 0, every=5)
    truth = true_map(poses["t1c"], poses[sequence], points)
    found = np.array([estimated.TransformPoint(p) for p in points])
    error = np.linalg.norm(found - truth, axis=1)
    moved = np.linalg.norm(truth - points, axis=1)
    assert moved.mean() > 4  # the misalignment to recover is real
    assert error.mean() < 1.0


def test_outputs_on_t1c_grid_and_roi_follows_flair(registered):
    outputs, _, _, _, true_roi = registered
    t1c = sitk.ReadImage(str(outputs["t1c"]))
    for name in (*SEQUENCES, "roi"):
        image = sitk.ReadImage(str(outputs[name]))
        assert same_grid(image, t1c)
        expected = sitk.sitkUInt8 if name == "roi" else sitk.sitkFloat32
        assert image.GetPixelID() == expected
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["roi"])))
    assert set(np.unique(roi)) == {0, 1}
    # Nearest neighbour through a 5 mm FLAIR grid: close to the truth, not exact.
    assert dice(roi, sitk.GetArrayFromImage(true_roi)) > 0.8


def test_patient_without_t1c_lands_on_its_next_reference_grid(tmp_path):
    """No T1c: T1w (next in the default order) is the grid, T2w and FLAIR are registered to it
    within a millimetre, and T1c's stand-in is on that grid."""
    paths, poses, _, _ = _write_patient(tmp_path)
    t1w = sitk.ReadImage(str(paths["t1w"]))
    write_absent(t1w, tmp_path / "t1c_absent.nii.gz")
    images = {**{s: paths[s] for s in SEQUENCES}, "t1c": tmp_path / "t1c_absent.nii.gz"}
    outputs, transforms = _outputs(tmp_path)
    register_files(images, paths["roi"], "flair", outputs, transforms, seed=1, patient="P3")
    assert sorted(p.name for p in transforms.iterdir()) == [
        "flair_to_t1w.mat", "t2w_to_t1w.mat",
    ]  # fmt: skip
    for name in (*SEQUENCES, "roi"):
        assert same_grid(sitk.ReadImage(str(outputs[name])), t1w), name
    assert is_absent(outputs["t1c"])
    assert not is_absent(outputs["t1w"])
    brain = sitk.ReadImage(str(paths["t1w"])) > 0
    points = grid_points(brain, sitk.GetArrayFromImage(brain) > 0, every=6)
    for sequence in ("t2w", "flair"):
        estimated = sitk.ReadTransform(str(transforms / transform_file(sequence, "t1w")))
        found = np.array([estimated.TransformPoint(p) for p in points])
        truth = true_map(poses["t1w"], poses[sequence], points)
        assert np.linalg.norm(found - truth, axis=1).mean() < 1.0, sequence


def test_roi_on_a_sequence_that_was_not_acquired_is_refused(tmp_path):
    paths, _, _, _ = _write_patient(tmp_path)
    write_absent(sitk.ReadImage(str(paths["flair"])), tmp_path / "flair_absent.nii.gz")
    images = {**{s: paths[s] for s in SEQUENCES}, "flair": tmp_path / "flair_absent.nii.gz"}
    outputs, transforms = _outputs(tmp_path)
    with pytest.raises(InputError, match="drawn on flair, which was not acquired") as err:
        register_files(images, paths["roi"], "flair", outputs, transforms, patient="P4")
    assert (err.value.patient, err.value.column) == ("P4", "roi_on")


def test_reference_is_the_first_present_of_the_order():
    assert reference_of(["t1w", "t1c", "flair"]) == "t1c"
    assert reference_of(["t2w", "flair"]) == "flair"
    assert reference_of(["t2w", "flair"], ["t2w", "t1c", "t1w", "flair"]) == "t2w"
    with pytest.raises(InputError, match="none of the reference"):
        reference_of([], ["t1c"])


def test_roi_drawn_on_t1c_is_resampled_directly(tmp_path):
    paths, _, _, true_roi = _write_patient(tmp_path, roi_on="t1c")
    outputs, transforms = _outputs(tmp_path)
    # QuickRigid: the moving sequences do not matter here, only the ROI's path.
    register_files(
        {s: paths[s] for s in SEQUENCES}, paths["roi"], "t1c", outputs, transforms,
        transform="QuickRigid", threads=2,
    )  # fmt: skip
    roi = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["roi"])))
    np.testing.assert_array_equal(roi, sitk.GetArrayFromImage(true_roi))


def test_roi_on_wrong_grid_names_patient_column_file_and_match(tmp_path):
    paths, _, _, _ = _write_patient(tmp_path, roi_on="t2w")
    outputs, transforms = _outputs(tmp_path)
    with pytest.raises(InputError) as err:
        register_files(
            {s: paths[s] for s in SEQUENCES}, paths["roi"], "flair", outputs, transforms,
            patient="P9",
        )  # fmt: skip
    assert (err.value.patient, err.value.column, err.value.path) == ("P9", "roi", str(paths["roi"]))
    assert "matches the grid of t2w" in str(err.value)
    assert not outputs["t1w"].exists()


def test_roi_matching_no_grid_and_empty_roi_are_errors():
    images = {"t1c": make_grid([3.0] * 3), "flair": make_grid([3.0, 3.0, 4.5])}
    with pytest.raises(InputError, match="matches no sequence"):
        check_roi_grid(make_grid([2.0] * 3), images, "flair", path="roi.nii.gz")
    check_roi_grid(make_grid([3.0, 3.0, 4.5]), images, "flair", path="roi.nii.gz")


def test_empty_roi_is_an_error(tmp_path):
    paths, _, _, _ = _write_patient(tmp_path, roi_on="t1c")
    empty = sitk.Image(sitk.ReadImage(str(paths["roi"])))
    empty *= 0
    sitk.WriteImage(empty, str(paths["roi"]))
    outputs, transforms = _outputs(tmp_path)
    with pytest.raises(InputError, match="ROI is empty") as err:
        register_files(
            {s: paths[s] for s in SEQUENCES}, paths["roi"], "t1c", outputs, transforms,
            patient="P2",
        )  # fmt: skip
    assert err.value.column == "roi"


def test_to_ants_keeps_oblique_geometry():
    grid = make_grid([2.0, 2.5, 3.0], extent_mm=(40, 50, 60), rotation_deg=(20, -10, 5))
    array = np.random.default_rng(0).random(grid.GetSize()[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid)
    converted = to_ants(image)
    np.testing.assert_allclose(converted.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(converted.spacing, image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(converted.direction.ravel(), image.GetDirection(), atol=1e-6)
    index = (3, 7, 11)  # (x, y, z): the same voxel in both libraries
    assert converted.numpy()[index] == pytest.approx(image[index])


def test_downsample_keeps_field_of_view():
    grid = make_grid([1.0, 1.0, 5.0], extent_mm=(60, 80, 60), rotation_deg=(15, 0, 10))
    image = sitk.Cast(grid, sitk.sitkFloat32) + 1
    small = downsample(image, 3.0)
    np.testing.assert_allclose(small.GetSpacing(), (3.0, 3.0, 5.0))  # thick axis kept
    assert small.GetSize() == (20, 27, 12)
    np.testing.assert_allclose(small.GetDirection(), image.GetDirection())
    corner = np.asarray(image.GetDirection()).reshape(3, 3) @ np.asarray(image.GetSpacing()) / 2
    small_corner = np.asarray(small.GetDirection()).reshape(3, 3) @ np.asarray(small.GetSpacing())
    np.testing.assert_allclose(
        np.asarray(image.GetOrigin()) - corner, np.asarray(small.GetOrigin()) - small_corner / 2
    )
    assert downsample(image, 0) is image


def test_fit_at_coarse_spacing_is_accurate_at_full_resolution(tmp_path):
    world = world_head(3.0)
    fixed_pose, moving_pose = motion((0, 0, 0), (0, 0, 0)), motion((5, -3, 4), (-4, 5, 3))
    fixed = acquire(world.images["t1c"], make_grid([2.0] * 3, rotation_deg=(8, 0, 0)), fixed_pose)
    moving = acquire(world.images["t2w"], make_grid([2.0] * 3, flip=(-1, -1, 1)), moving_pose)
    found = register_rigid(fixed, moving, tmp_path / "t2w.mat", resample_mm=4.0, seed=3)
    brain = acquire(world.brain, fixed, fixed_pose, label=True)
    points = grid_points(brain, sitk.GetArrayFromImage(brain) > 0, every=20)
    truth = true_map(fixed_pose, moving_pose, points)
    error = np.linalg.norm(np.array([found.TransformPoint(p) for p in points]) - truth, axis=1)
    assert error.mean() < 1.0


def test_registration_none_keeps_geometry_and_writes_identity(tmp_path: Path) -> None:
    """Already co-registered archives: transform 'none' resamples only, no ANTs fit."""
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    image.SetSpacing((2.0, 2.0, 3.0))
    transform = register_rigid(image, image, tmp_path / "t.mat", transform="none")
    assert (tmp_path / "t.mat").exists()
    point = (1.0, -2.0, 3.5)
    assert transform.TransformPoint(point) == pytest.approx(point)
    assert sitk.ReadTransform(str(tmp_path / "t.mat")).TransformPoint(point) == pytest.approx(point)


def test_seed_zero_is_reproducible(tmp_path):
    """ANTs reads --random-seed 0 as "from the clock"; the workflow's seed 0 must not.

    In a fresh process, as a rule runs it: ANTs fixes its thread count at its first use, and
    this module's other tests may have used it on two threads already.
    """
    import subprocess
    import sys

    paths, *_ = _write_patient(tmp_path)
    code = (
        "import sys, time\n"
        "import SimpleITK as sitk\n"
        "from glioma.preprocess.register import single_thread_ants, register_rigid\n"
        "single_thread_ants()\n"
        "fixed, moving = (sitk.ReadImage(p) for p in sys.argv[1:3])\n"
        "for run in range(2):\n"
        "    register_rigid(fixed, moving, f'{sys.argv[3]}/t2w_{run}.mat', seed=0)\n"
        "    time.sleep(1.1)  # a clock-seeded second fit would differ\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(paths["t1c"]), str(paths["t2w"]), str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "t2w_0.mat").read_bytes() == (tmp_path / "t2w_1.mat").read_bytes()
    assert ants_seed(0) != 0 and ants_seed(7) == 7

"""The whole preprocessing chain on a patient from the demo generator, checked against its truth."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from test_preprocess_phantom import dice, grid_points

from glioma.preprocess.bias import correct_bias_files
from glioma.preprocess.brain import extract_brain_file
from glioma.preprocess.crop import crop_file
from glioma.preprocess.normalise import normalise_files
from glioma.preprocess.qc import plot_qc_file
from glioma.preprocess.register import MOVING, register_files

SEQUENCES = ("t1w", "t1c", "t2w", "flair")
SIZE = 32


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Generate one 4 mm demo patient and run every preprocessing step on it, as the rules do."""
    from glioma.demo import generate_cohort

    root = tmp_path_factory.mktemp("chain")
    sheet = generate_cohort(root / "demo", n_patients=1, spacing=4.0, seed=5, n_cohorts=1)
    row = sheet.iloc[0]
    raw = {c: root / "demo" / row[c] for c in (*SEQUENCES, "roi")}
    truth = root / "demo" / "truth" / row["cohort"] / row["patient"]
    out = root / "results"
    n4 = {s: out / "n4" / f"{s}.nii.gz" for s in SEQUENCES}
    reg = {n: out / "registered" / f"{n}.nii.gz" for n in (*SEQUENCES, "roi")}
    mats = {s: out / "registered" / "transforms" / f"{s}_to_t1c.mat" for s in MOVING}
    pre = {n: out / "preprocessed" / f"{n}.nii.gz" for n in (*SEQUENCES, "brain_mask", "roi")}
    brain = out / "brain" / "brain_mask.nii.gz"
    patient = row["patient"]
    correct_bias_files({s: raw[s] for s in SEQUENCES}, n4, threads=2, patient=patient)
    register_files(
        n4, raw["roi"], row["roi_on"], reg, out / "registered" / "transforms", threads=2,
        patient=patient,
    )  # fmt: skip
    extract_brain_file(reg["t1w"], brain, method="deepbet", threads=2, patient=patient)
    normalise_files({s: reg[s] for s in SEQUENCES}, brain, reg["roi"], pre, patient=patient)
    crop_file({s: pre[s] for s in SEQUENCES}, pre["roi"], out / "crop.npz", size=SIZE)
    plot_qc_file({s: reg[s] for s in SEQUENCES}, pre["brain_mask"], pre["roi"], out / "qc.png")
    return raw, truth, out, mats, brain


@pytest.mark.parametrize("sequence", MOVING)
def test_registration_error_against_truth(chain, sequence):
    _, truth, _, mats, _ = chain
    record = json.loads((truth / "truth.json").read_text())
    world = {s: np.asarray(m) for s, m in record["world_from_scanner"].items()}
    true_brain = sitk.ReadImage(str(truth / "brain_mask_t1c.nii.gz"))
    points = grid_points(true_brain, sitk.GetArrayFromImage(true_brain) > 0, every=3)
    homogeneous = np.c_[points, np.ones(len(points))]
    expected = (np.linalg.inv(world[sequence]) @ world["t1c"] @ homogeneous.T).T[:, :3]
    estimated = sitk.ReadTransform(str(mats[sequence]))
    found = np.array([estimated.TransformPoint(p) for p in points])
    assert np.linalg.norm(found - expected, axis=1).mean() < 1.0


def test_brain_mask_against_truth(chain):
    _, truth, _, _, brain = chain
    found = sitk.GetArrayFromImage(sitk.ReadImage(str(brain)))
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(truth / "brain_mask_t1c.nii.gz")))
    assert dice(found, expected) >= 0.95


@pytest.mark.parametrize("sequence", ["t1w", "t1c"])
def test_n4_against_true_bias_field(chain, sequence):
    raw, truth, out, _, _ = chain
    wm = sitk.GetArrayFromImage(sitk.ReadImage(str(truth / f"wm_mask_{sequence}.nii.gz"))) > 0
    bias = sitk.GetArrayFromImage(sitk.ReadImage(str(truth / f"bias_{sequence}.nii.gz")))[wm]
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(raw[sequence])))[wm]
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "n4" / f"{sequence}.nii.gz")))[wm]
    cv_before, cv_after, cv_ideal = (_cv(v) for v in (before, after, before / bias))
    # At 4 mm noise and partial volume leave a floor (cv_ideal, the true field divided out):
    # N4 must remove at least half of the variation that the field adds above it.
    assert cv_before - cv_after >= 0.5 * (cv_before - cv_ideal)


def _cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def test_crops_and_qc_exist(chain):
    _, _, out, _, _ = chain
    with np.load(out / "crop.npz") as crops:
        assert crops["images"].shape[1:] == (4, SIZE, SIZE)
        assert crops["images"].dtype == np.float16
        assert len(crops["slice_index"]) >= 3
        assert np.isfinite(crops["images"]).all()
    picture = matplotlib.image.imread(out / "qc.png")
    assert picture.shape[:2] == (1200, 900)

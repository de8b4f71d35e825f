"""Tests of the demo cohort generator: contract, determinism, ground truth and class signs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from glioma.constants import CLASSES, SAFE_ID, SEQUENCES
from glioma.demo import SHEET_COLUMNS, generate_cohort
from glioma.demo.__main__ import main as cli_main
from glioma.demo.__main__ import parse_args
from glioma.demo.cohort import AGE, GRADES, allocate_classes, choose_missing, demographics
from glioma.io import read_image

sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
ARGS = {"n_patients": 9, "spacing": 4.0, "seed": 3, "n_cohorts": 3}
#: conftest's tiny_cohort: a quarter of the patients lack one sequence.
GAPPED_ARGS = {"n_patients": 12, "spacing": 4.0, "seed": 3, "n_cohorts": 3, "missing": 0.25}
SUFFIXES = {
    "SITE-A": (".nii.gz", ".nii.gz"),
    "SITE-B": (".nii", ".nii"),
    "SITE-C": (".nrrd", ".seg.nrrd"),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("demo")
    return out, generate_cohort(out, **ARGS)


@pytest.fixture(scope="module")
def gapped(tiny_cohort) -> tuple[Path, pd.DataFrame]:
    """The cohort of GAPPED_ARGS (conftest's tiny_cohort), and its sheet as read back."""
    out = tiny_cohort.parent
    return out, pd.read_csv(out / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> Path:
    """The cohort of GAPPED_ARGS without missing sequences; returns its folder."""
    out = tmp_path_factory.mktemp("complete")
    generate_cohort(out, **{**GAPPED_ARGS, "missing": 0.0})
    return out


def _digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by path relative to it."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def _truth(out: Path, row: dict) -> dict:
    return json.loads((out / "truth" / row["cohort"] / row["patient"] / "truth.json").read_text())


def _matrices(truth: dict) -> dict[str, np.ndarray]:
    return {s: np.array(m) for s, m in truth["world_from_scanner"].items()}


def _to_sitk(matrix: np.ndarray) -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix[:3, :3].ravel().tolist())
    transform.SetTranslation(matrix[:3, 3].tolist())
    return transform


def _onto_t1c(
    out: Path, row: dict, seq: str, *, mask: bool = False, path: Path | None = None
) -> sitk.Image:
    """Resample a sequence, the ROI or a file on a sequence's grid onto the T1c grid."""
    world = _matrices(_truth(out, row))
    moving = read_image(path or out / row[seq], mask=mask)
    source = "flair" if seq == "roi" else seq
    t1c = read_image(out / row["t1c"])
    matrix = np.linalg.inv(world[source]) @ world["t1c"]
    interpolator = sitk.sitkNearestNeighbor if mask else sitk.sitkLinear
    return sitk.Resample(moving, t1c, _to_sitk(matrix), interpolator, 0.0)


def _distances(image: sitk.Image, point) -> tuple[np.ndarray, np.ndarray]:
    """Return the voxels (z, y, x) and their physical distance (mm) to ``point``."""
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    points = index * np.array(image.GetSpacing()) @ direction.T + image.GetOrigin()
    distance = np.linalg.norm(points - np.asarray(point), axis=-1).transpose(2, 1, 0)
    return sitk.GetArrayFromImage(image).astype(float), distance


def test_sheet_follows_the_contract(demo):
    out, returned = demo
    written = pd.read_csv(out / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert tuple(written.columns) == SHEET_COLUMNS
    assert written.equals(returned.astype(str).replace("nan", ""))
    assert len(written) == ARGS["n_patients"]
    assert sorted(written.cohort.unique()) == ["SITE-A", "SITE-B", "SITE-C"]
    assert written.patient.is_unique
    for row in written.to_dict("records"):
        assert re.fullmatch(SAFE_ID, row["patient"]) and re.fullmatch(SAFE_ID, row["cohort"])
        assert re.fullmatch(r"DEMO-[A-Z]-\d{3}", row["patient"])
        assert row["roi_on"] == "flair" and row["sex"] in {"M", "F"}
        assert float(row["age"]) >= 19
        if row["idh"] == "wildtype":
            assert row["codeletion"] == "" and row["grade"] in {"2", "3", "4"}
        else:
            assert row["idh"] == "mutant" and row["codeletion"] in {"codeleted", "intact"}
        image_suffix, roi_suffix = SUFFIXES[row["cohort"]]
        for column in (*SEQUENCES, "roi"):
            path = Path(row[column])
            assert not path.is_absolute() and (out / path).is_file()
            assert path.parts[:2] == (row["cohort"], row["patient"])
        assert all(row[s].endswith(image_suffix) for s in SEQUENCES)
        assert row["roi"].endswith(roi_suffix)
    # Every cohort of 3 holds each class once (the allocator guarantees every class from 3 up).
    classes = {(r.idh, r.codeletion) for r in written.itertuples()}
    assert classes == {("wildtype", ""), ("mutant", "codeleted"), ("mutant", "intact")}


def test_cli_output_is_byte_identical_to_the_api(demo, tmp_path):
    out, _ = demo
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "workflow_scripts")}
    command = [sys.executable, "-m", "glioma.demo", "--out", str(tmp_path), "--patients", "9"]
    command += ["--spacing", "4", "--seed", "3", "--cohorts", "3"]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    first, second = _digests(out), _digests(tmp_path)
    assert len(first) == 9 * (5 + 10) + 1
    assert first == second


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one patient per cohort"):
        generate_cohort(tmp_path, n_patients=2, n_cohorts=3)
    assert cli_main(["--out", str(tmp_path), "--patients", "1", "--spacing", "20"]) == 2
    assert not (tmp_path / "samples.tsv").exists()


def test_no_missing_share_changes_nothing(demo, tmp_path):
    out, sheet = demo
    again = generate_cohort(tmp_path, **ARGS, missing=0.0)
    assert _digests(tmp_path) == _digests(out)
    assert again.equals(sheet)


def test_choose_missing_spreads_and_cycles():
    assert choose_missing(3, [4, 4, 4], 0.0) == {}
    chosen = choose_missing(3, [4, 4, 4], 0.25)
    assert chosen == choose_missing(3, [4, 4, 4], 0.25)  # from the seed alone
    assert sorted(k for k, _ in chosen) == [0, 1, 2]  # one per cohort
    assert [chosen[key] for key in sorted(chosen)] == ["t1c", "flair", "t1w"]
    for sizes, fraction in [([12, 12, 12], 0.1), ([5, 4], 0.5), ([3, 3, 3], 1.0), ([7], 0.3)]:
        for seed in range(4):
            chosen = choose_missing(seed, sizes, fraction)
            assert len(chosen) == round(fraction * sum(sizes))
            assert all(0 <= i < sizes[k] for k, i in chosen)
            per_cohort = np.bincount([k for k, _ in chosen], minlength=len(sizes))
            assert per_cohort.max() - per_cohort.min() <= 1
            order = ["t1c", "flair", "t1w", "t2w"]
            assert [chosen[key] for key in sorted(chosen)] == [
                order[j % 4] for j in range(len(chosen))
            ]
    assert choose_missing(0, [12, 12, 12], 0.25) != choose_missing(1, [12, 12, 12], 0.25)


def test_missing_share_leaves_out_one_sequence_each(gapped, complete):
    out, sheet = gapped
    assert tuple(sheet.columns) == SHEET_COLUMNS and len(sheet) == 12
    lacking = {r["patient"]: [s for s in SEQUENCES if r[s] == ""] for r in sheet.to_dict("records")}
    chosen = {p: s for p, s in lacking.items() if s}
    # round(0.25 * 12) = 3 patients, one per cohort, lacking T1c, FLAIR, T1w in patient order.
    assert [chosen[p] for p in sorted(chosen)] == [["t1c"], ["flair"], ["t1w"]]
    assert sorted(p[5] for p in chosen) == ["A", "B", "C"]
    suffixes = {c: SUFFIXES[c][0] for c in SUFFIXES}
    gone = set()
    for row in sheet.to_dict("records"):
        missing = lacking[row["patient"]]
        truth = _truth(out, row)
        assert truth.get("missing", []) == missing
        assert row["roi_on"] == ("t2w" if missing == ["flair"] else "flair")
        present = [s for s in SEQUENCES if s not in missing]
        assert row["roi_on"] in present and len(present) >= 2
        for seq in present:
            assert (out / row[seq]).is_file()
        for seq in missing:
            image = f"{row['cohort']}/{row['patient']}/{seq}{suffixes[row['cohort']]}"
            truth_dir = f"truth/{row['cohort']}/{row['patient']}"
            gone |= {image, f"{truth_dir}/wm_mask_{seq}.nii.gz", f"{truth_dir}/bias_{seq}.nii.gz"}
        assert (out / row["roi"]).is_file()
    # The same cohort without missing sequences (complete) has exactly the files that are
    # gone, and every other file is unchanged except the sheet, the chosen patients' truth
    # records and the ROI of the patient without FLAIR (now on its T2w grid).
    full, ours = _digests(complete), _digests(out)
    assert gone <= set(full) and set(ours) == set(full) - gone
    changed = {"samples.tsv"}
    for row in sheet.to_dict("records"):
        if row["patient"] in chosen:
            changed.add(f"truth/{row['cohort']}/{row['patient']}/truth.json")
        if row["roi_on"] != "flair":
            changed.add(row["roi"])
    assert {f for f in ours if ours[f] != full[f]} == changed


def test_roi_without_flair_is_on_its_roi_on_grid(gapped):
    out, sheet = gapped
    rows = [r for r in sheet.to_dict("records") if r["flair"] == ""]
    assert len(rows) == 1
    row = rows[0]
    assert row["roi_on"] == "t2w"
    roi = read_image(out / row["roi"], mask=True)
    on = read_image(out / row[row["roi_on"]])
    assert roi.GetSize() == on.GetSize()
    assert np.allclose(roi.GetSpacing(), on.GetSpacing(), rtol=1e-6)
    assert np.allclose(roi.GetOrigin(), on.GetOrigin(), atol=1e-4)
    assert np.allclose(roi.GetDirection(), on.GetDirection(), atol=1e-6)
    # Not the FLAIR grid it would have had (thick slices), and it holds the tumour centre.
    assert roi.GetSpacing()[2] < 2 * roi.GetSpacing()[0]
    centre = _truth(out, row)["tumour"]["centre_scanner"][row["roi_on"]]
    assert roi[roi.TransformPhysicalPointToIndex(centre)] == 1


def test_cli_missing_option(tmp_path, monkeypatch):
    assert parse_args(["--out", str(tmp_path)]).missing == 0.0
    assert parse_args(["--out", str(tmp_path), "--missing", "0.25"]).missing == 0.25
    assert parse_args(["--out", str(tmp_path), "--missing", "1"]).missing == 1.0
    for bad in ["1.5", "-0.1", "nan", "half"]:
        with pytest.raises(SystemExit) as refused:
            cli_main(["--out", str(tmp_path), "--patients", "3", "--missing", bad])
        assert refused.value.code == 2
    assert not (tmp_path / "samples.tsv").exists()
    with pytest.raises(ValueError, match="missing must be"):
        generate_cohort(tmp_path, n_patients=3, missing=1.5)
    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return pd.DataFrame()

    monkeypatch.setattr("glioma.demo.__main__.generate_cohort", fake)
    assert cli_main(["--out", str(tmp_path), "--patients", "6", "--missing", "0.5"]) == 0
    assert calls == [((tmp_path, 6, 2.0, 0, 3), {"missing": 0.5})]


@pytest.mark.parametrize("n", [3, 8, 12, 36, 100])
def test_every_class_in_every_cohort_near_the_study_mix(n):
    for seed in range(5):
        classes = allocate_classes(np.random.default_rng(seed), n)
        counts = pd.Series(classes).value_counts()
        assert len(classes) == n and set(counts.index) == set(CLASSES)
        if n >= 36:
            assert abs(counts["IDHwt"] / n - 0.62) < 0.03
            assert abs(counts["IDHmut-intact"] / n - 0.25) < 0.03


def test_demographics_follow_table_1():
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        draws = pd.DataFrame([demographics(rng, cls) for _ in range(2000)])
        assert abs(draws.age.mean() - AGE[cls][0]) < 1.5
        assert draws.age.min() >= 19
        assert set(draws.grade) <= set(GRADES[cls])
        assert abs((draws.sex == "M").mean() - 0.415) < 0.04
    assert set(draws.idh) == {"mutant"} and set(draws.codeletion) == {"intact"}


def test_sites_differ_in_format_grid_and_type(demo):
    out, sheet = demo
    rows = {r["cohort"]: r for r in sheet.to_dict("records")}
    pixel = {c: sitk.ReadImage(str(out / rows[c]["t1w"])).GetPixelID() for c in rows}
    assert pixel == {
        "SITE-A": sitk.sitkFloat32,
        "SITE-B": sitk.sitkInt16,
        "SITE-C": sitk.sitkUInt16,
    }
    for row in rows.values():
        flair = sitk.ReadImage(str(out / row["flair"]))
        assert flair.GetSpacing()[2] >= 2 * flair.GetSpacing()[0]  # thick FLAIR slices
        direction = np.array(sitk.ReadImage(str(out / row["t1c"])).GetDirection()).reshape(3, 3)
        tilt = np.degrees(np.arccos(np.abs(direction[2, 2])))
        assert tilt > 5  # oblique T1c grid
        roi = read_image(out / row["roi"], mask=True)
        assert roi.GetSize() == flair.GetSize() and roi.GetOrigin() == flair.GetOrigin()
        assert roi.GetDirection() == flair.GetDirection()
        assert sitk.GetArrayViewFromImage(roi).sum() > 0


def test_truth_transforms_align_the_sequences(demo):
    out, sheet = demo
    for row in sheet.to_dict("records"):
        truth = _truth(out, row)
        world = _matrices(truth)
        centre = np.append(truth["tumour"]["centre_world"], 1)
        for seq in SEQUENCES:
            expected = (np.linalg.inv(world[seq]) @ centre)[:3]
            assert np.allclose(truth["tumour"]["centre_scanner"][seq], expected, atol=1e-2)
        truth_dir = out / "truth" / row["cohort"] / row["patient"]
        brain = sitk.GetArrayFromImage(read_image(truth_dir / "brain_mask_t1c.nii.gz", mask=True))
        t1c = sitk.GetArrayFromImage(read_image(out / row["t1c"]))
        # The brain mask sits on the T1c brain: bright inside, dark CSF and bone around it.
        assert t1c[brain > 0].mean() > 2 * t1c[brain == 0].mean()
        # The true transform aligns T1w with T1c far better than the identity would (each
        # divided by its true bias field, which differs between the two acquisitions).
        t1c = t1c / sitk.GetArrayFromImage(read_image(truth_dir / "bias_t1c.nii.gz"))
        bias = _onto_t1c(out, row, "t1w", path=truth_dir / "bias_t1w.nii.gz")
        bias = np.maximum(sitk.GetArrayFromImage(bias), 0.1)  # 0 outside the T1w field of view
        t1w = sitk.GetArrayFromImage(_onto_t1c(out, row, "t1w")) / bias
        grid = read_image(out / row["t1c"])
        naive = sitk.Resample(read_image(out / row["t1w"]), grid)
        naive_bias = sitk.Resample(read_image(truth_dir / "bias_t1w.nii.gz"), grid)
        naive = sitk.GetArrayFromImage(naive) / np.maximum(sitk.GetArrayFromImage(naive_bias), 0.1)
        inside = brain > 0
        aligned_r = np.corrcoef(t1c[inside], t1w[inside])[0, 1]
        naive_r = np.corrcoef(t1c[inside], naive[inside])[0, 1]
        assert aligned_r > 0.8 and aligned_r > naive_r + 0.05
        # The ROI, carried onto the T1c grid, holds the tumour centre.
        roi = _onto_t1c(out, row, "roi", mask=True)
        index = roi.TransformPhysicalPointToIndex(truth["tumour"]["centre_scanner"]["t1c"])
        assert roi[index] == 1


def test_tissue_contrast_and_bias(demo):
    out, sheet = demo
    for row in sheet.to_dict("records"):
        truth_dir = out / "truth" / row["cohort"] / row["patient"]
        brain = sitk.GetArrayFromImage(read_image(truth_dir / "brain_mask_t1c.nii.gz")) > 0
        wm_t1c = sitk.GetArrayFromImage(read_image(truth_dir / "wm_mask_t1c.nii.gz")) > 0
        t1c = sitk.GetArrayFromImage(read_image(out / row["t1c"]))
        t2w = sitk.GetArrayFromImage(_onto_t1c(out, row, "t2w"))
        # White matter is brighter than the average brain on T1 and darker on T2.
        assert t1c[wm_t1c].mean() > 1.1 * t1c[brain].mean()
        assert t2w[wm_t1c].mean() < 0.9 * t2w[brain].mean()
        # The bias field is strong, and dividing it out makes white matter more uniform.
        t1w = sitk.GetArrayFromImage(read_image(out / row["t1w"]))
        bias = sitk.GetArrayFromImage(read_image(truth_dir / "bias_t1w.nii.gz"))
        wm = sitk.GetArrayFromImage(read_image(truth_dir / "wm_mask_t1w.nii.gz")) > 0
        assert bias[wm].max() / bias[wm].min() > 1.25

        def cv(values):
            return values.std() / values.mean()

        assert cv(t1w[wm]) > 1.2 * cv((t1w / bias)[wm])


def _signs(out: Path, row: dict) -> tuple[float, float]:
    """T1c rim-to-core ratio and T2/FLAIR core signal ratio (each relative to white matter)."""
    truth = _truth(out, row)
    radius, centre = truth["tumour"]["radius_mm"], truth["tumour"]["centre_scanner"]
    t1c, distance = _distances(read_image(out / row["t1c"]), centre["t1c"])
    rim_to_core = (
        t1c[(distance > 0.6 * radius) & (distance < radius)].mean()
        / t1c[distance < max(0.35 * radius, 2.5)].mean()
    )
    relative = {}
    for seq in ("t2w", "flair"):
        image = read_image(out / row[seq])
        values, distance = _distances(image, centre[seq])
        wm = out / "truth" / row["cohort"] / row["patient"] / f"wm_mask_{seq}.nii.gz"
        wm = sitk.GetArrayFromImage(read_image(wm)) > 0
        core = distance < max(0.4 * radius, 0.6 * max(image.GetSpacing()))
        relative[seq] = values[core].mean() / values[wm].mean()
    return rim_to_core, relative["t2w"] / relative["flair"]


def test_class_signs_are_measurable(demo):
    out, sheet = demo
    classes = {"wildtype": "IDHwt", "codeleted": "IDHmut-codel", "intact": "IDHmut-intact"}
    rows = []
    for row in sheet.to_dict("records"):
        cls = classes[row["codeletion"] or row["idh"]]
        assert _truth(out, row)["class"] == cls
        rows.append((cls, *_signs(out, row)))
    means = pd.DataFrame(rows, columns=["cls", "rim", "mismatch"]).groupby("cls").mean()
    mutants = ["IDHmut-codel", "IDHmut-intact"]
    assert means.loc["IDHwt", "rim"] > 1.5 * means.loc[mutants, "rim"].max()
    others = ["IDHwt", "IDHmut-codel"]
    assert means.loc["IDHmut-intact", "mismatch"] > 1.15 * means.loc[others, "mismatch"].max()


def test_deepbet_finds_the_brain_at_2mm(tmp_path):
    deepbet = pytest.importorskip("deepbet")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    sheet = generate_cohort(tmp_path, n_patients=1, spacing=2.0, seed=1, n_cohorts=1)
    row = sheet.iloc[0].to_dict()
    truth_dir = tmp_path / "truth" / row["cohort"] / row["patient"]
    sitk.WriteImage(_onto_t1c(tmp_path, row, "t1w"), str(tmp_path / "t1w_on_t1c.nii.gz"))
    inputs, masks = [str(tmp_path / "t1w_on_t1c.nii.gz")], [str(tmp_path / "bet.nii.gz")]
    deepbet.run_bet(inputs, None, masks, threshold=0.5, n_dilate=0, no_gpu=True)
    found = sitk.GetArrayFromImage(sitk.ReadImage(masks[0])) > 0
    true = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_dir / "brain_mask_t1c.nii.gz"))) > 0
    dice = 2 * (found & true).sum() / (found.sum() + true.sum())
    assert dice >= 0.95

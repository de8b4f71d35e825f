"""Bad input files at the preprocessing file functions: errors name patient, column and file.

Each kind of broken file, in a sequence cell (N4 reads it) and in the ROI cell (registration reads
it), fails before anything is written: a patient never leaves half its outputs behind, even
outside Snakemake (which also deletes a failed job's outputs). ``missing`` is a file deleted
after the sheet was checked. Last, the run's closing message is read back from the step logs
(``glioma.failures``).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glioma.constants import SEQUENCES
from glioma.errors import InputError
from glioma.failures import failure_report, find_failures
from glioma.preprocess.bias import correct_bias_files
from glioma.preprocess.register import register_files


def _volume(mask: bool = False) -> sitk.Image:
    rng = np.random.default_rng(1)
    array = np.zeros((12, 14, 16), np.uint8) if mask else rng.random((12, 14, 16)) * 100 + 10
    if mask:
        array[4:8, 5:9, 6:10] = 1
    image = sitk.GetImageFromArray(array.astype(np.uint8 if mask else np.float32))
    image.SetSpacing((4.0, 4.0, 4.0))
    return image


def _truncated(path: Path, image: sitk.Image) -> None:
    sitk.WriteImage(image, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _four_d(path: Path, image: sitk.Image) -> None:
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(path))


def _non_finite(value: float) -> Callable[[Path, sitk.Image], None]:
    def write(path: Path, image: sitk.Image) -> None:
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array[2, 3, 4] = value
        bad = sitk.GetImageFromArray(array)
        bad.CopyInformation(image)
        sitk.WriteImage(bad, str(path))

    return write


def _garbage_dicom(path: Path, image: sitk.Image) -> None:
    path.mkdir()
    for i in range(2):
        (path / f"IM{i}.dcm").write_bytes(np.random.default_rng(i).bytes(2048))


def _not_an_image(path: Path, image: sitk.Image) -> None:
    path.write_bytes(gzip.compress(b"<html>login required</html>"))


#: kind -> (file name, writer or None for a missing file, pattern of the reason).
BAD = {
    "truncated": ("x.nii.gz", _truncated, "truncated or corrupt"),
    "4d": ("x.nii.gz", _four_d, "4D image"),
    "nan": ("x.nrrd", _non_finite(np.nan), "NaN or infinite"),
    "inf": ("x.nii", _non_finite(np.inf), "NaN or infinite"),
    "garbage_dicom": ("x_dicom", _garbage_dicom, "no DICOM series: none of its 2 files"),
    "not_an_image": ("x.nii.gz", _not_an_image, "truncated or corrupt|cannot be read"),
    "missing": ("x.nii.gz", None, "file does not exist"),
}


def _bad_file(folder: Path, kind: str, *, mask: bool = False) -> Path:
    name, write, _ = BAD[kind]
    path = folder / f"bad_{name}"
    if write is not None:
        write(path, _volume(mask))
    return path


def _good_sequences(folder: Path) -> dict[str, Path]:
    paths = {}
    for sequence in SEQUENCES:
        paths[sequence] = folder / f"{sequence}.nii.gz"
        sitk.WriteImage(_volume(), str(paths[sequence]))
    return paths


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", BAD)
def test_bad_sequence_file_fails_n4_before_writing_anything(tmp_path: Path, kind: str) -> None:
    inputs = _good_sequences(tmp_path)
    inputs["flair"] = _bad_file(tmp_path, kind)  # last: the others would be corrected first
    out = tmp_path / "n4"
    outputs = {s: out / f"{s}.nii.gz" for s in SEQUENCES}
    with pytest.raises(InputError, match=BAD[kind][2]) as err:
        correct_bias_files(inputs, outputs, patient="P1")
    assert (err.value.patient, err.value.column) == ("P1", "flair")
    assert err.value.path == str(inputs["flair"])
    assert f"patient 'P1', column 'flair', file '{inputs['flair']}'" in str(err.value)
    assert not out.exists() or _files(out) == []


@pytest.mark.parametrize("kind", BAD)
def test_bad_roi_file_fails_registration_before_writing_anything(tmp_path: Path, kind: str) -> None:
    images = _good_sequences(tmp_path)
    roi = _bad_file(tmp_path, kind, mask=True)
    out = tmp_path / "registered"
    outputs = {name: out / f"{name}.nii.gz" for name in (*SEQUENCES, "roi")}
    with pytest.raises(InputError, match=BAD[kind][2]) as err:
        register_files(images, roi, "flair", outputs, out / "transforms", patient="P2")
    assert (err.value.patient, err.value.column, err.value.path) == ("P2", "roi", str(roi))
    assert not out.exists() or _files(out) == []


def test_bad_sequence_is_named_even_when_n4_would_fail_first_on_another(tmp_path: Path) -> None:
    """Every file is checked before N4 runs, so the unreadable one is what the error names."""
    inputs = _good_sequences(tmp_path)
    sitk.WriteImage(sitk.Image([12, 12, 12], sitk.sitkFloat32) + 5, str(inputs["t1w"]))  # flat
    inputs["t2w"] = _bad_file(tmp_path, "4d")
    outputs = {s: tmp_path / "n4" / f"{s}.nii.gz" for s in SEQUENCES}
    with pytest.raises(InputError, match="4D image") as err:
        correct_bias_files(inputs, outputs, patient="P3")
    assert err.value.column == "t2w"


def _log(logs: Path, rule: str, cohort: str, patient: str, lines: list[str]) -> Path:
    path = logs / rule / cohort / f"{patient}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_failures_are_read_from_this_runs_step_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    stamp = "2026-01-02 03:04:05,678"
    error = "InputError: patient 'P1', column 't1w', file '/d/t1w.nii.gz': is a 4D image"
    _log(logs, "correct_bias", "C1", "P1", [f"{stamp} INFO glioma.x: reading", f"{stamp} "
         f"CRITICAL glioma: {error}", "Traceback (most recent call last):", "  ..."])  # fmt: skip
    _log(logs, "crop_roi", "C1", "P2", [f"{stamp} INFO glioma.crop: 12 slices"])  # succeeded
    _log(logs, "correct_bias", "C1", "DROPPED", [f"{stamp} CRITICAL glioma: old"])  # not in sheet
    old = _log(logs, "register_to_t1c", "C2", "P3", [f"{stamp} CRITICAL glioma: earlier run"])
    since = old.stat().st_mtime + 60
    for path in logs.rglob("*.log"):
        if path != old:
            os.utime(path, (since, since))
    patients = [("C1", "P1"), ("C1", "P2"), ("C2", "P3")]

    failures = find_failures(logs, patients, since=since)
    assert [(f.cohort, f.patient, f.rule, f.error) for f in failures] == [
        ("C1", "P1", "correct_bias", error)
    ]
    report = failure_report(failures)
    assert report.startswith("1 patient(s) failed") and "cohort(s) C1 need" in report
    assert "C1/P1 in correct_bias (" in report and error in report
    assert failure_report([]) == ""
    # Without a start time, an earlier run's failure that is still unfixed is reported too.
    assert len(find_failures(logs, patients)) == 2

"""A DICOM series folder reads like its NIfTI twin, and no header identifier reaches an output.

TCIA downloads come as one folder per DICOM series; a sheet cell may name such a folder. The
series here is oblique (rotated about all three axes), its slice files are named in reverse
order of position, and its headers carry a fake patient name and ID.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cohort_fixtures import SECRETS, rotation, write_dicom_series

from glioma.io import read_image, write_image

SHAPE = (6, 7, 8)  # z, y, x


def oblique_volume() -> sitk.Image:
    """An int16 volume with distinct voxels, anisotropic spacing and an oblique direction."""
    values = (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 37 % 2000 - 500).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.9, 1.1, 2.5))
    image.SetOrigin((-12.5, 30.25, 7.0))
    # DICOM stores decimal strings: round so the twin's direction is what DICOM can hold.
    image.SetDirection(np.round(rotation(17, -11, 23), 6).ravel().tolist())
    return image


@pytest.fixture
def series_and_twin(tmp_path: Path) -> tuple[Path, Path]:
    """A DICOM series folder and the NIfTI file of the same volume."""
    image = oblique_volume()
    write_dicom_series(image, tmp_path / "series")
    sitk.WriteImage(image, str(tmp_path / "twin.nii.gz"))
    return tmp_path / "series", tmp_path / "twin.nii.gz"


def test_fixture_headers_do_hold_the_name(series_and_twin: tuple[Path, Path]) -> None:
    series, _ = series_and_twin
    files = sorted(series.iterdir())
    assert len(files) == SHAPE[0]
    assert all(SECRETS[0] in f.read_bytes() for f in files)  # else the next test proves nothing


def test_series_reads_like_its_nifti_twin(series_and_twin: tuple[Path, Path]) -> None:
    series, twin = series_and_twin
    from_dicom, from_nifti = read_image(series), read_image(twin)
    assert from_dicom.GetSize() == from_nifti.GetSize() == SHAPE[::-1]
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(from_dicom), sitk.GetArrayFromImage(from_nifti)
    )
    np.testing.assert_allclose(from_dicom.GetSpacing(), from_nifti.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(from_dicom.GetOrigin(), from_nifti.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(from_dicom.GetDirection(), from_nifti.GetDirection(), atol=1e-5)
    corner = [s - 1 for s in from_dicom.GetSize()]
    np.testing.assert_allclose(
        from_dicom.TransformIndexToPhysicalPoint(corner),
        from_nifti.TransformIndexToPhysicalPoint(corner),
        atol=1e-3,
    )
    assert not np.allclose(from_nifti.GetDirection(), np.eye(3).ravel(), atol=0.05)  # oblique
    assert from_dicom.GetMetaDataKeys() == ()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_no_identifier_reaches_written_files(
    series_and_twin: tuple[Path, Path], tmp_path: Path, suffix: str
) -> None:
    series, _ = series_and_twin
    out = tmp_path / "out" / f"t1w{suffix}"
    write_image(read_image(series), out)
    write_image(read_image(series, mask=True), out.with_name(f"roi{suffix}"))
    for path in (out, out.with_name(f"roi{suffix}")):
        data = path.read_bytes()
        if suffix == ".nii.gz":
            data += gzip.decompress(data)
        for secret in SECRETS:
            assert secret not in data, f"{secret!r} found in {path.name}"
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, f"roi{suffix}"])

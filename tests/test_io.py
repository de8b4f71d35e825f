"""Image reading and atomic writing."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glioma.errors import InputError
from glioma.io import (
    atomic_path,
    images_in_memory,
    is_absent,
    read_image,
    release_images,
    remove_stale_temporaries,
    write_absent,
    write_image,
)


def _volume(dtype: type = np.int16, shape: tuple[int, int, int] = (6, 7, 8)) -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray((rng.random(shape) * 100).astype(dtype))
    image.SetSpacing((1.0, 1.5, 3.0))
    image.SetOrigin((10.0, -5.0, 2.0))
    angle = np.deg2rad(10)
    rot = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    image.SetDirection(np.asarray(rot).ravel().tolist())
    return image


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_round_trip_keeps_geometry(tmp_path: Path, suffix: str) -> None:
    original = _volume()
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(original, str(path))
    image = read_image(path)
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(image.GetSpacing(), original.GetSpacing())
    np.testing.assert_allclose(image.GetOrigin(), original.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), original.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original).astype(np.float32)
    )


def test_mask_is_binary_uint8(tmp_path: Path) -> None:
    labels = sitk.GetImageFromArray(np.array([[[0, 1, 2], [3, 0, 0]]], dtype=np.uint8))
    sitk.WriteImage(labels, str(tmp_path / "roi.seg.nrrd"))
    mask = read_image(tmp_path / "roi.seg.nrrd", mask=True)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(mask).tolist() == [[[0, 1, 1], [1, 0, 0]]]


def test_multi_segment_seg_nrrd_merged(tmp_path: Path) -> None:
    layers = np.zeros((2, 3, 4, 2), dtype=np.uint8)
    layers[0, 0, 0, 0] = 1
    layers[1, 2, 3, 1] = 1
    sitk.WriteImage(sitk.GetImageFromArray(layers, isVector=True), str(tmp_path / "r.seg.nrrd"))
    mask = sitk.GetArrayFromImage(read_image(tmp_path / "r.seg.nrrd", mask=True))
    assert mask.sum() == 2 and mask[0, 0, 0] == 1 and mask[1, 2, 3] == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"file '.*nope.nii.gz': file does not exist"):
        read_image(tmp_path / "nope.nii.gz")


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.nii.gz"
    sitk.WriteImage(_volume(), str(path))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_nan_rejected_in_every_format(tmp_path: Path, suffix: str) -> None:
    array = np.ones((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        read_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "t.nii.gz"
    path.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(InputError, match=r"t.nii.gz.*(cannot be read|corrupt)"):
        read_image(path)


def test_4d_rejected(tmp_path: Path) -> None:
    path = tmp_path / "four.nii.gz"
    volumes = [sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))] * 3
    sitk.WriteImage(sitk.JoinSeries(volumes), str(path))
    with pytest.raises(InputError, match="4D image"):
        read_image(path)


def test_nan_rejected(tmp_path: Path) -> None:
    array = np.ones((4, 4, 4), np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, 0] = np.inf
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="2 NaN or infinite voxels"):
        read_image(path)


def test_dicom_series_without_identifiers(tmp_path: Path) -> None:
    image = sitk.Cast(_volume(shape=(5, 6, 7)), sitk.sitkInt16)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        slice_.SetMetaData("0010|0010", "Doe^Jane")  # patient name must not survive
        slice_.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")
        slice_.SetMetaData("0020|0013", str(k))
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_.SetMetaData("0020|0032", "\\".join(f"{v:f}" for v in position))
        direction = image.GetDirection()
        cosines = (*direction[0::3], *direction[1::3])
        slice_.SetMetaData("0020|0037", "\\".join(f"{v:f}" for v in cosines))
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(slice_)
    read = read_image(folder)
    assert read.GetSize() == image.GetSize()
    np.testing.assert_allclose(read.GetSpacing()[:2], image.GetSpacing()[:2])
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-5)
    assert not read.GetMetaDataKeys()


def test_empty_dicom_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_write_image_atomic_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    write_image(_volume(np.float32), target)
    assert read_image(target).GetSize() == (8, 7, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_atomic_path_gives_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "table.tsv"
    with atomic_path(target) as tmp:
        tmp.write_text("a\tb\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_garbage_dicom_folder_says_no_file_parses(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        (folder / f"IM{i}.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(512))
    with pytest.raises(InputError, match="none of its 3 files could be parsed as DICOM"):
        read_image(folder)


def test_killed_write_leftover_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "t1c.nii.gz"
    # What a SIGKILLed atomic_path leaves: its temporary, never renamed or removed.
    leftover = tmp_path / ".t1c.nii.gz.ab_cd123.tmp.nii.gz"
    leftover.write_bytes(b"half")
    uncompressed = tmp_path / ".t1c.nii.gz.ef_gh456.tmp.nii"  # killed before its gzip
    uncompressed.write_bytes(b"half")
    unrelated = [
        tmp_path / ".t1c.nii.gz.notmine.txt",
        tmp_path / ".t1w.nii.gz.ab_cd123.tmp.nii.gz",  # another file's write
        tmp_path / "t1c.nii.gz.ab_cd123.tmp.nii.gz",
    ]
    for path in unrelated:
        path.write_bytes(b"keep")
    write_image(_volume(np.float32), target)
    assert not leftover.exists() and not uncompressed.exists()
    assert all(path.exists() for path in unrelated)
    assert read_image(target).GetSize() == (8, 7, 6)


def test_remove_stale_temporaries_removes_folders_too(tmp_path: Path) -> None:
    stale = tmp_path / ".SITE-A.x1y2z3w4.tmp"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "part-00000.parquet").write_bytes(b"torn")
    other = tmp_path / ".SITE-AB.x1y2z3w4.tmp"
    other.mkdir()
    assert remove_stale_temporaries(tmp_path / "SITE-A", [".tmp", ".old"]) == [stale]
    assert not stale.exists() and other.exists()


def test_written_nifti_is_standard_gzip_and_the_same_bytes_each_time(tmp_path: Path) -> None:
    image = _volume(np.float32, (20, 30, 40))
    first, second = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    write_image(image, first)
    write_image(image, second)
    assert first.read_bytes() == second.read_bytes()  # no time or name in the gzip header
    plain = tmp_path / "plain.nii"
    plain.write_bytes(gzip.decompress(first.read_bytes()))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(plain))), sitk.GetArrayFromImage(image)
    )
    assert len(first.read_bytes()) < plain.stat().st_size


def _same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetPixelID() == b.GetPixelID()
    assert (a.GetOrigin(), a.GetSpacing(), a.GetDirection()) == (
        b.GetOrigin(),
        b.GetSpacing(),
        b.GetDirection(),
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16])
def test_images_in_memory_read_as_their_files_read(tmp_path: Path, dtype: type) -> None:
    image = _volume(dtype)  # oblique: the header stores geometry in single precision
    path = tmp_path / "img.nii.gz"
    with images_in_memory():
        write_image(image, path)
        path.unlink()  # whatever is read now comes from memory
        from_memory = read_image(path), read_image(path, mask=True)
    write_image(image, path)
    from_disk = read_image(path), read_image(path, mask=True)
    for memory, disk in zip(from_memory, from_disk, strict=True):
        _same_image(memory, disk)


def test_images_in_memory_keep_stand_ins_refused_and_forget_on_release(tmp_path: Path) -> None:
    like = _volume(np.float32)
    absent, present = tmp_path / "t1c.nii.gz", tmp_path / "t1w.nii.gz"
    with images_in_memory():
        write_absent(like, absent)
        write_image(like, present)
        assert is_absent(absent) and not is_absent(present)
        # ITK reads NaN back as 0: the stand-in must still be refused, as from its file.
        with pytest.raises(InputError, match="NaN or infinite") as err:
            read_image(absent)
        assert err.value.path == str(absent)
        present.unlink()
        release_images([present])
        with pytest.raises(InputError, match="does not exist"):
            read_image(present)
        with pytest.raises(RuntimeError, match="do not nest"), images_in_memory():
            pass
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(absent)  # and from its file, after the block

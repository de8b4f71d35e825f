"""Reading and atomically writing medical images (NIfTI, NRRD, DICOM series)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from glioma.errors import InputError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".seg.nrrd")
#: The random part ``tempfile`` puts in the names it makes.
_TEMP_RANDOM = r"[a-z0-9_]{8}"


def _suffix(path: Path) -> str:
    """Return the full image suffix of ``path`` (``.nii.gz`` rather than ``.gz``)."""
    name = path.name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def is_image_path(path: str | Path) -> bool:
    """Return True when ``path`` names a readable image: a known suffix or a DICOM folder."""
    path = Path(path)
    return path.is_dir() or _suffix(path) in IMAGE_SUFFIXES


def _read_dicom_series(folder: Path) -> sitk.Image:
    """Read the one DICOM series in ``folder``, keeping orientation and spacing, no metadata."""
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        files = sum(1 for entry in folder.iterdir() if entry.is_file())
        detail = (
            "it is empty"
            if files == 0
            else f"none of its {files} files could be parsed as DICOM (corrupt or truncated?)"
        )
        raise InputError(f"folder holds no DICOM series: {detail}", path=folder)
    if len(series) > 1:
        raise InputError(
            f"folder holds {len(series)} DICOM series; point the sheet at one series folder",
            path=folder,
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    reader.MetaDataDictionaryArrayUpdateOff()  # no patient name or other identifier is kept
    return reader.Execute()


def _check_nifti_payload(path: Path) -> None:
    """Read a NIfTI's voxels with nibabel to catch what ITK hides.

    ITK's NIfTI reader silently zero-fills a truncated ``.nii.gz`` and turns NaN voxels into 0,
    so a corrupt download would pass unnoticed; nibabel raises on both.
    """
    try:
        data = np.asanyarray(nib.load(path).dataobj)
    except Exception as err:  # nibabel raises EOFError, zlib.error, OSError, ValueError...
        raise InputError(
            f"is truncated or corrupt ({type(err).__name__}: {err})", path=path
        ) from err
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"holds {bad} NaN or infinite voxels", path=path)


def read_image(path: str | Path, *, mask: bool = False) -> sitk.Image:
    """Read a 3D image and check it is usable.

    Args:
        path: a ``.nii``, ``.nii.gz`` or ``.nrrd`` (``.seg.nrrd`` too) file, or a DICOM folder.
        mask: the image is a label mask; multi-segment Slicer files are merged into one binary
            mask (any segment), and the result is uint8 0/1.

    Returns:
        The image, float32 (or uint8 when ``mask``), with its header geometry intact and no
        metadata beyond geometry.

    Raises:
        InputError: missing, unreadable, not 3D, or non-finite voxels; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path=path)
    if _suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_payload(path)
    try:
        image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(f"cannot be read as an image ({first_line})", path=path) from err

    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(
                f"is a 4D image of size {size}; give one 3D volume per sequence", path=path
            )
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"is {image.GetDimension()}D; a 3D volume is required", path=path)

    if image.GetNumberOfComponentsPerPixel() > 1:
        if not mask:
            raise InputError(
                "has vector voxels (e.g. RGB); a scalar 3D volume is required", path=path
            )
        array = sitk.GetArrayViewFromImage(image)
        merged = sitk.GetImageFromArray((array != 0).any(axis=-1).astype(np.uint8))
        merged.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
        image = merged

    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"holds {bad} NaN or infinite voxels", path=path)

    out = sitk.Cast(image != 0, sitk.sitkUInt8) if mask else sitk.Cast(image, sitk.sitkFloat32)
    # Keep geometry only: descriptions and other header fields may hold identifiers.
    clean = sitk.Image(out)
    for key in clean.GetMetaDataKeys():
        clean.EraseMetaData(key)
    return clean


def remove_stale_temporaries(path: str | Path, suffixes: Sequence[str]) -> list[Path]:
    """Remove the temporaries that killed writes of ``path`` left beside it.

    A write that is killed (SIGKILL, a cluster's time limit) never reaches its clean-up, and its
    temporary would stay beside the output for good. One writer per path runs at a time
    (Snakemake runs one job per output), so a temporary of ``path`` found before a write starts
    belongs to a dead writer.

    Args:
        path: the final path.
        suffixes: what follows the random part of the temporaries' names (``.tmp.nii.gz``).

    Returns:
        The paths removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix = f".{path.name}."
    escaped = "|".join(re.escape(suffix) for suffix in suffixes)
    pattern = re.compile(rf"{re.escape(prefix)}{_TEMP_RANDOM}(?:{escaped})")
    removed = []
    with os.scandir(path.parent) as entries:  # a crops folder may hold thousands of patients
        stale = [e for e in entries if e.name.startswith(prefix) and pattern.fullmatch(e.name)]
    for entry in stale:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffix so writers that pick a format from it still work.
    Readers never see a partial file, and a failure or kill leaves no file under ``path``; the
    temporary of a killed write is removed by the next write of ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(path) if _suffix(path) in IMAGE_SUFFIXES else path.suffix
    remove_stale_temporaries(path, [f".tmp{suffix}"])
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates 0600 files; give the result the permissions a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_image(image: sitk.Image, path: str | Path, *, compress: bool = True) -> None:
    """Write ``image`` to ``path`` atomically (format from the suffix)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)


#: The header note (NIfTI ``descrip``) of the stand-in for a sequence that was not acquired.
ABSENT_NOTE = "glioma: sequence not acquired"


def write_absent(like: sitk.Image, path: str | Path) -> None:
    """Write the stand-in of a sequence that was not acquired, atomically.

    A stage writes it where the sequence's output would be, so every stage keeps its four
    files: an image on ``like``'s grid (the patient's grid from registration on), every voxel
    NaN so that nothing can use it as an image unnoticed (:func:`read_image` refuses it), and
    :data:`ABSENT_NOTE` in its header (:func:`is_absent`).
    """
    image = sitk.GetImageFromArray(np.full(like.GetSize()[::-1], np.nan, np.float32))
    image.CopyInformation(like)
    image.SetMetaData("ITK_FileNotes", ABSENT_NOTE)
    write_image(image, path)


def is_absent(path: str | Path) -> bool:
    """Return True when ``path`` is the stand-in :func:`write_absent` wrote (header only)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False  # unreadable: read_image names the problem
    return reader.HasMetaDataKey("descrip") and reader.GetMetaData("descrip") == ABSENT_NOTE


def present_sequences(paths: Mapping[str, str | Path]) -> list[str]:
    """The names in ``paths`` (in its order) whose file is not a not-acquired stand-in."""
    return [name for name, path in paths.items() if not is_absent(path)]

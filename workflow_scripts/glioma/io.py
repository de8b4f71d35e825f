"""Reading and atomically writing medical images (NIfTI, NRRD, DICOM series)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from isal import igzip

from glioma.errors import InputError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".seg.nrrd")
#: The random part ``tempfile`` puts in the names it makes.
_TEMP_RANDOM = r"[a-z0-9_]{8}"
#: ISA-L gzip level (0-3) of the ``.nii.gz`` files :func:`write_image` writes. MR voxels are
#: noisy floats that gzip shrinks to about 60% at any level; ISA-L's level 1 is within 1% of
#: zlib's level 6 in size (benchmarks/preprocess.md).
GZIP_LEVEL = 1


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


def _read_from_disk(path: Path) -> sitk.Image:
    """Read an image file or DICOM folder as ITK gives it, after nibabel's check of a NIfTI."""
    if not path.exists():
        raise InputError("file does not exist", path=path)
    if _suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_payload(path)
    try:
        return _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(f"cannot be read as an image ({first_line})", path=path) from err


def read_image(path: str | Path, *, mask: bool = False) -> sitk.Image:
    """Read a 3D image and check it is usable.

    Inside :func:`images_in_memory`, an image this process wrote is taken from memory, exactly
    as it would be read back from its file.

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
    image = _kept(path)
    if image is None:
        image = _read_from_disk(path)
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


#: Inside :func:`images_in_memory`: path -> (the image as it reads back from its file, its
#: count of non-finite voxels before writing); None outside.
_memory: dict[str, tuple[sitk.Image, int]] | None = None


def _key(path: str | Path) -> str:
    return os.path.abspath(path)


def _kept(path: str | Path) -> sitk.Image | None:
    """The image written to ``path`` inside :func:`images_in_memory` (None if there is none).

    Raises:
        InputError: the image held NaN or infinite voxels: the same refusal as from its file
            (ITK's reader turns NaN into 0, so the image read back no longer shows them).
    """
    kept = None if _memory is None else _memory.get(_key(path))
    if kept is None:
        return None
    image, non_finite = kept
    if non_finite:
        raise InputError(f"holds {non_finite} NaN or infinite voxels", path=path)
    return image


@contextlib.contextmanager
def images_in_memory() -> Iterator[None]:
    """Keep the images written in the block in memory, for the steps that read them next.

    Inside the block, :func:`write_image` keeps each image as it reads back from its file, and
    :func:`read_image` and :func:`is_absent` of that path use it: a chain of steps in one
    process then reads only its raw inputs from disk, and gets the very images (header
    geometry rounded as the file stores it) that separate processes would read, so its files
    are byte for byte theirs.
    """
    global _memory
    if _memory is not None:
        raise RuntimeError("images_in_memory() blocks do not nest")
    _memory = {}
    try:
        yield
    finally:
        _memory = None


def release_images(paths: Iterable[str | Path]) -> None:
    """Drop these paths' images from memory (their files stay); later reads go to disk."""
    if _memory is not None:
        for path in paths:
            _memory.pop(_key(path), None)


def _as_read_back(image: sitk.Image, written: str) -> sitk.Image:
    """``image`` as ITK reads it back from the file ``written``: the file's header geometry
    (stored in single precision) and header notes, the same voxels.

    Only the header is read; NaN voxels stay NaN here where ITK would read 0, which is why
    :func:`_kept` refuses images with non-finite voxels. Should the file's pixel type differ
    from the image's, the file is read whole.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(written)
    reader.ReadImageInformation()
    if reader.GetPixelID() != image.GetPixelID() or reader.GetDimension() != image.GetDimension():
        return sitk.ReadImage(written)
    kept = sitk.Image(image)
    kept.SetOrigin(reader.GetOrigin())
    kept.SetSpacing(reader.GetSpacing())
    kept.SetDirection(reader.GetDirection())
    for key in kept.GetMetaDataKeys():
        kept.EraseMetaData(key)
    for key in reader.GetMetaDataKeys():
        kept.SetMetaData(key, reader.GetMetaData(key))
    return kept


def _non_finite(image: sitk.Image) -> int:
    """Count of NaN and infinite voxels of a floating-point image (0 for integer ones)."""
    array = sitk.GetArrayViewFromImage(image)
    return int((~np.isfinite(array)).sum()) if np.issubdtype(array.dtype, np.floating) else 0


def _gzip_onto(raw: Path, path: Path) -> None:
    """Gzip the uncompressed NIfTI ``raw`` onto ``path`` atomically and remove ``raw``.

    ISA-L's gzip (``isal``): the standard format, about 9x faster than zlib at the same size
    for MR volumes. ``mtime=0`` and no file name in the header: an image gives the same bytes.
    """
    try:
        data = raw.read_bytes()
        with atomic_path(path) as tmp:
            tmp.write_bytes(igzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))
    finally:
        raw.unlink(missing_ok=True)


def write_image(image: sitk.Image, path: str | Path, *, compress: bool = True) -> None:
    """Write ``image`` to ``path`` atomically (format from the suffix).

    A ``.nii.gz`` is written uncompressed by ITK beside its target, then gzipped onto it
    (:func:`_gzip_onto`); inside :func:`images_in_memory` the image is also kept as the file
    reads back.
    """
    path = Path(path)
    if not (compress and _suffix(path) == ".nii.gz"):
        with atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, [".tmp.nii.gz", ".tmp.nii"])
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.nii", dir=path.parent)
    os.close(fd)
    raw = Path(name)
    try:
        sitk.WriteImage(image, name, useCompression=False)
        if _memory is not None:
            _memory[_key(path)] = (_as_read_back(image, name), _non_finite(image))
        _gzip_onto(raw, path)
    finally:
        raw.unlink(missing_ok=True)


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
    kept = None if _memory is None else _memory.get(_key(path))
    if kept is not None:
        image = kept[0]
        return image.HasMetaDataKey("descrip") and image.GetMetaData("descrip") == ABSENT_NOTE
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

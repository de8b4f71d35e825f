"""Figures of the HTML report: training curves, QC thumbnails, and images as data URIs.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot), so nothing depends on
a display or on pyplot's global state, and PNGs carry no timestamp, so reruns give equal bytes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from glioma.constants import HISTORY_COLUMNS
from glioma.errors import InputError

#: Magic numbers of the image formats a browser shows from a data URI.
_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}
_PNG_METADATA = {"Software": None}  # no version or date in the bytes: reruns are identical


def image_mime(data: bytes, path: str | Path) -> str:
    """Return the MIME type of PNG, JPEG or GIF bytes.

    Raises:
        InputError: the bytes are none of those; the message names ``path``.
    """
    for magic, mime in _MAGIC.items():
        if data.startswith(magic):
            return mime
    raise InputError("is not a PNG, JPEG or GIF image", path=path)


def data_uri(data: bytes, mime: str) -> str:
    """Return ``data`` as a base64 ``data:`` URI of type ``mime``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_uri(path: str | Path) -> str:
    """Read an image file and return it as a data URI (its bytes unchanged).

    Raises:
        InputError: the file is missing or not a PNG, JPEG or GIF image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path=path)
    data = path.read_bytes()
    return data_uri(data, image_mime(data, path))


#: QC thumbnails of the report: longest side in pixels, JPEG quality, and the most bytes one
#: may take (a busier picture is encoded again at lower quality until it fits).
THUMB_PX = 200
THUMB_QUALITY = 60
THUMB_MAX_BYTES = 7_500
_FALLBACK_QUALITIES = (45, 30, 20)


def thumbnail_jpeg(
    path: str | Path,
    max_px: int = THUMB_PX,
    quality: int = THUMB_QUALITY,
    max_bytes: int | None = THUMB_MAX_BYTES,
) -> bytes:
    """Return a JPEG of the image at ``path`` shrunk to fit ``max_px`` x ``max_px``.

    JPEG because a thumbnail of an MRI mosaic is photo-like: it encodes >10x faster than an
    optimised PNG and is half the size. When the JPEG is larger than ``max_bytes`` it is
    encoded again at lower qualities (45, 30, 20) and the first that fits is returned, or the
    smallest: a thumbnail's size is bounded whatever the picture holds.

    Raises:
        InputError: the file is missing or cannot be decoded as an image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path=path)
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max_px, max_px))  # JPEG sources decode at reduced size
            small = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGBA")
            small.thumbnail((max_px, max_px), Image.Resampling.LANCZOS, reducing_gap=3.0)
            small = small.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot be decoded as an image ({err})", path=path) from err
    data = b""
    for q in (quality, *(f for f in _FALLBACK_QUALITIES if f < quality)):
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=q, optimize=True)
        data = buffer.getvalue()
        if max_bytes is None or len(data) <= max_bytes:
            break
    return data


def read_history(path: str | Path) -> pd.DataFrame:
    """Read ``history.csv`` (one row per epoch), checking its columns.

    Raises:
        InputError: a column is missing, or a value is not a number; names the column and file.
    """
    history = pd.read_csv(path)
    for column in HISTORY_COLUMNS:
        if column not in history.columns:
            raise InputError("required column is missing", column=column, path=path)
        values = pd.to_numeric(history[column], errors="coerce")
        if (values.isna() & history[column].notna()).any():
            raise InputError("holds a value that is not a number", column=column, path=path)
        history[column] = values
    return history.sort_values("epoch").reset_index(drop=True)


def training_curves_png(
    history: pd.DataFrame | Mapping[str, pd.DataFrame], *, dpi: int = 100
) -> bytes:
    """Plot losses, validation macro AUCs and the learning rate per epoch; return PNG bytes.

    Args:
        history: rows of ``history.csv`` (see :data:`HISTORY_COLUMNS`; empty values are gaps),
            or label -> rows for several models (one line per fold model in each panel).
        dpi: resolution of the PNG.
    """
    runs = dict(history) if isinstance(history, Mapping) else {"": history}
    several = len(runs) > 1
    figure = Figure(figsize=(12, 3.6), dpi=dpi, layout="constrained")
    loss, auc, lr = figure.subplots(1, 3)
    for index, (label, frame) in enumerate(runs.items()):
        epoch = frame["epoch"]
        colour = f"C{index % 10}"
        if several:
            loss.plot(epoch, frame["train_loss"], color=colour, label=label)
            loss.plot(epoch, frame["val_loss"], color=colour, linestyle="--")
            auc.plot(epoch, frame["val_patient_macro_auc"], color=colour, label=label)
            lr.plot(epoch, frame["lr"], color=colour)
            continue
        loss.plot(epoch, frame["train_loss"], marker="o", label="train")
        loss.plot(epoch, frame["val_loss"], marker="o", label="validation")
        auc.plot(epoch, frame["val_patient_macro_auc"], marker="o", label="patient level")
        auc.plot(epoch, frame["val_slice_macro_auc"], marker="s", label="slice level")
        lr.plot(epoch, frame["lr"], marker=".", color="tab:gray")
    loss.set(
        title="Loss" + (" (solid: train, dashed: validation)" if several else ""), xlabel="epoch"
    )
    loss.set_ylabel("cross-entropy")
    auc.set(
        title="Validation macro AUC" + (" (patient level)" if several else ""),
        xlabel="epoch", ylabel="AUC", ylim=(0, 1.02),
    )  # fmt: skip
    lr.set(title="Learning rate", xlabel="epoch", ylabel="lr")
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for axes in (loss, auc, lr):
        axes.grid(alpha=0.3)
    for axes in (loss, auc):
        axes.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata=_PNG_METADATA)
    return buffer.getvalue()

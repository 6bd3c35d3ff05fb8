"""Decoding one image or mask cell, and the one exception that means "this file is unreadable".

Only PIL's own signals for unreadable data count as a corrupt file (:data:`DECODE_ERRORS`, raised
while PIL opens and loads the bytes); they become :class:`CorruptImageError`, which is what the
datasets' ``skip_corrupt`` policy catches. Anything else (a TypeError from a wrong cell type, a bug
in a transform, PIL's DecompressionBombError) surfaces as itself.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from .errors import DataError

__all__ = ["DECODE_ERRORS", "CorruptImageError", "cell_path", "decode_mask", "decode_rgb"]

# What PIL raises for bytes it cannot read: UnidentifiedImageError and truncated files are
# OSErrors (so is a file that vanished); some plugins raise SyntaxError / EOFError on broken
# headers or frames, and ImageFile.load raises ValueError for tiles outside the image.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, EOFError, ValueError)


class CorruptImageError(Exception):
    """An image or mask cell whose bytes PIL cannot read (the cause is chained)."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.path = path
        self.cause = cause


def cell_path(value: Any) -> str:
    """The file name of an image cell, for messages."""
    if isinstance(value, dict):
        return str(value.get("path") or "<embedded bytes>")
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    return "<embedded bytes>"


def _open(value: Any) -> Image.Image:
    """A fully loaded PIL image from a cell; unreadable bytes raise :class:`CorruptImageError`."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data, path = value, None
    elif isinstance(value, (str, os.PathLike)):
        data, path = None, value
    else:
        raise TypeError(f"cannot decode an image from a {type(value).__name__}")
    if data is None and path is None:
        raise TypeError("the image cell has neither bytes nor a path")
    try:
        img = Image.open(io.BytesIO(data)) if data is not None else Image.open(path)
        img.load()  # surfaces truncated files here, inside this handler
    except DECODE_ERRORS as exc:
        raise CorruptImageError(cell_path(value), exc) from exc
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB. ImageNet holds grey and CMYK JPEGs; folders hold RGBA/palette PNGs."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's warning for palette transparency
    elif img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float greys: convert("RGB") would clip to white, so rescale to 8 bits first.
        arr = np.asarray(img, dtype=np.float32)
        hi = float(arr.max()) or 1.0
        img = Image.fromarray(np.clip(arr * (255.0 / hi), 0, 255).astype(np.uint8))
    return img.convert("RGB")


def decode_rgb(value: Any) -> Image.Image:
    """Decode one image cell to an RGB PIL image, fully loaded.

    ``value`` is what `datasets` returns for an ``Image(decode=False)`` column (a dict with
    ``bytes`` and/or ``path``), raw bytes, a file path, or an already decoded PIL image.
    Unreadable data raises :class:`CorruptImageError`; a cell of another type, TypeError.
    """
    return _to_rgb(_open(value))


MASK_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I", "1")


def decode_mask(value: Any) -> np.ndarray:
    """Decode one mask cell to an ``(H, W)`` integer array of class indices.

    Masks are single-channel PNGs: grey ("L", ADE20K's), palette ("P", the indices, as in Pascal
    VOC) or 16-bit. A colour mask has no class indices and raises :class:`DataError` saying so.
    """
    img = _open(value)
    if img.mode not in MASK_MODES:
        raise DataError(
            f"mask {cell_path(value)} has PIL mode {img.mode!r}: masks must hold one class index "
            f"per pixel (mode L, P or 16-bit), not colours. Fix: convert colour masks to index "
            f"PNGs (one channel, pixel value = class id)."
        )
    arr = np.asarray(img)
    return arr.astype(np.int32) if arr.dtype not in (np.uint8, np.int32) else arr

"""Image decoding and the paper's train / eval transforms, built by timm's `create_transform`.

timm's defaults are not the paper's recipe (Table 9): `create_transform` defaults to bilinear
interpolation, no RandAugment and random erasing off / in 'const' mode. Every value is therefore
passed explicitly from the data module's arguments, and the tests read them back from the built
transform objects.

Note on colour jitter: like the timm 0.6 training script the official runs used, timm skips
ColorJitter whenever RandAugment is on (`--color-jitter 0.4` with `--aa rand-...` leaves it off);
it applies only when `auto_augment` is None. We keep timm's behaviour rather than inventing one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_CROP_PCT",
    "DEFAULT_IMAGE_SIZE",
    "build_eval_transform",
    "build_train_transform",
    "decode_rgb",
    "resolve_eval_geometry",
]

DEFAULT_IMAGE_SIZE = 224
DEFAULT_CROP_PCT = 0.875


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
    Decoding errors (corrupt or truncated data) propagate as the PIL/OS error.
    """
    if isinstance(value, Image.Image):
        img = value
    else:
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data, path = value, None
        elif isinstance(value, (str, os.PathLike)):
            data, path = None, value
        else:
            raise TypeError(f"cannot decode an image from a {type(value).__name__}")
        img = Image.open(io.BytesIO(data)) if data is not None else Image.open(path)
    img.load()  # surfaces truncated files here, inside the caller's error handling
    return _to_rgb(img)


def resolve_eval_geometry(
    model_name: str | None, image_size: int | None, crop_pct: float | None
) -> tuple[int, float]:
    """Image size and eval crop_pct: explicit values win, then the model's pretrained cfg."""
    cfg_size, cfg_crop = DEFAULT_IMAGE_SIZE, DEFAULT_CROP_PCT
    if model_name and (image_size is None or crop_pct is None):
        import timm

        from .. import models  # noqa: F401  (registers our models and their pretrained cfgs)
        from .errors import DataError

        cfg = timm.models.get_pretrained_cfg(model_name)
        if cfg is None:
            raise DataError(
                f"data.model_name '{model_name}' has no pretrained config in timm or this package, "
                f"so the eval image size and crop_pct cannot be taken from it. Fix: use a "
                f"registered model name (see inceptionnext_pl.list_models()) or set data.image_size"
                f" and data.crop_pct explicitly."
            )
        if cfg.input_size:
            cfg_size = int(cfg.input_size[-1])
        if cfg.crop_pct:
            cfg_crop = float(cfg.crop_pct)
    return (
        int(image_size) if image_size is not None else cfg_size,
        float(crop_pct) if crop_pct is not None else cfg_crop,
    )


def build_train_transform(
    image_size: int,
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: float,
    vflip: float,
    auto_augment: str | None,
    color_jitter: float | None,
    interpolation: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    reprob: float,
    remode: str,
    recount: int,
) -> Callable[[Image.Image], Any]:
    """Training transform: RandomResizedCrop, flips, RandAugment, (jitter), tensor, norm, erasing."""
    from timm.data import create_transform

    return create_transform(
        input_size=image_size,
        is_training=True,
        scale=tuple(scale),
        ratio=tuple(ratio),
        hflip=hflip,
        vflip=vflip,
        color_jitter=color_jitter if color_jitter else None,
        auto_augment=auto_augment or None,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
        re_prob=reprob,
        re_mode=remode,
        re_count=recount,
    )


def build_eval_transform(
    image_size: int,
    *,
    crop_pct: float,
    interpolation: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Callable[[Image.Image], Any]:
    """Eval transform: resize the short side to size / crop_pct, center-crop to size, normalize."""
    from timm.data import create_transform

    # 'random' only makes sense for training crops; evaluation needs one fixed filter.
    interp = "bicubic" if interpolation == "random" else interpolation
    return create_transform(
        input_size=image_size,
        is_training=False,
        crop_pct=crop_pct,
        crop_mode="center",
        interpolation=interp,
        mean=tuple(mean),
        std=tuple(std),
    )

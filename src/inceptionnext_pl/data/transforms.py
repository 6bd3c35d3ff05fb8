"""The paper's train / eval transforms, built by timm's `create_transform`.

timm's defaults are not the paper's recipe (Table 9): `create_transform` defaults to bilinear
interpolation, no RandAugment and random erasing off / in 'const' mode. Every value is therefore
passed explicitly from the data module's arguments, and the tests read them back from the built
transform objects.

Note on colour jitter: like the timm 0.6 training script the official runs used, timm skips
ColorJitter whenever RandAugment is on (`--color-jitter 0.4` with `--aa rand-...` leaves it off);
it applies only when `auto_augment` is None. We keep timm's behaviour rather than inventing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image, ImageOps

__all__ = [
    "BatchFinisher",
    "DEFAULT_CROP_PCT",
    "DEFAULT_IMAGE_SIZE",
    "build_eval_transform",
    "build_train_pipeline",
    "build_train_transform",
    "resolve_eval_geometry",
]

DEFAULT_IMAGE_SIZE = 224
DEFAULT_CROP_PCT = 0.875


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


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, also for 0 bits.

    RandAugment's ``PosterizeIncreasing`` keeps ``4 - int(level / 10 * 4)`` bits, which is 0 when
    the sampled magnitude hits its cap of 10 (m9 with mstd 0.5 does, ~2% of the draws). Pillow
    >= 13 rejects 0 bits with a ValueError, which would stop ImageNet training within the first
    epoch; older Pillow masked every bit, giving a black image, which is what this returns.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _patch_posterize(transform: Any) -> None:
    """Point every timm auto-augment posterize op at :func:`_posterize` (see its doc)."""
    from timm.data import auto_augment

    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = _posterize


def _train_kwargs(
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
) -> dict[str, Any]:
    return dict(
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


def build_train_transform(image_size: int, **recipe: Any) -> Callable[[Image.Image], Any]:
    """timm's full training transform for one image, PIL in, normalised float tensor out.

    RandomResizedCrop, flips, RandAugment (or colour jitter), to tensor, normalize, random
    erasing. ``recipe`` takes the keyword arguments of :func:`build_train_pipeline`.
    """
    from timm.data import create_transform

    transform = create_transform(**_train_kwargs(image_size, **recipe))
    _patch_posterize(transform)
    return transform


class BatchFinisher:
    """The tail of timm's training transform, for a uint8 image or batch on any device.

    ``uint8 (3, H, W)`` or ``(B, 3, H, W)`` -> float, normalised with ``mean`` / ``std``, then
    timm's RandomErasing (per sample, as in the per-image transform). Splitting it off lets loader
    workers ship uint8 tensors (4x less shared memory, which costs more than the maths) and lets
    the training device do this arithmetic, as timm's own prefetcher does.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        reprob: float,
        remode: str,
        recount: int,
    ) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.reprob, self.remode, self.recount = float(reprob), remode, int(recount)
        self._erasers: dict[str, Any] = {}
        self._stat_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def eraser(self, device: Any) -> Any:
        """timm's RandomErasing for tensors on ``device`` (None when reprob is 0)."""
        if self.reprob <= 0:
            return None
        key = str(device)
        if key not in self._erasers:
            from timm.data.random_erasing import RandomErasing

            self._erasers[key] = RandomErasing(
                self.reprob, mode=self.remode, max_count=self.recount, device=key
            )
        return self._erasers[key]

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._stat_cache:  # built once per device: no host-to-device copy per batch
            mean = torch.tensor(self.mean, device=device).mul_(255).view(-1, 1, 1)
            std = torch.tensor(self.std, device=device).mul_(255).view(-1, 1, 1)
            self._stat_cache[key] = (mean, std)
        return self._stat_cache[key]

    def __getstate__(self) -> dict[str, Any]:
        # Device caches stay behind when pickled (e.g. to spawned loader workers).
        return {**self.__dict__, "_erasers": {}, "_stat_cache": {}}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(images.device)
        out = images.float().sub_(mean).div_(std)
        eraser = self.eraser(images.device)
        return eraser(out) if eraser is not None else out

    def __repr__(self) -> str:
        return (
            f"BatchFinisher(mean={self.mean}, std={self.std}, reprob={self.reprob}, "
            f"remode={self.remode!r}, recount={self.recount})"
        )


def build_train_pipeline(
    image_size: int, **recipe: Any
) -> tuple[Callable[[Image.Image], Any], BatchFinisher]:
    """The training transform split where timm's prefetcher splits it.

    Returns ``(per_image, finisher)``: ``per_image`` runs in the loader workers (RandomResizedCrop,
    flips, RandAugment or colour jitter, then a uint8 CHW tensor); ``finisher`` normalises and
    randomly erases a uint8 batch (see :class:`BatchFinisher`). ``finisher(per_image(img))`` has
    the same distribution as :func:`build_train_transform`.

    Keyword arguments: ``scale``, ``ratio``, ``hflip``, ``vflip``, ``auto_augment``,
    ``color_jitter``, ``interpolation``, ``mean``, ``std``, ``reprob``, ``remode``, ``recount``.
    """
    from timm.data import create_transform

    kwargs = _train_kwargs(image_size, **recipe)
    per_image = create_transform(**kwargs, use_prefetcher=True)
    _patch_posterize(per_image)
    return per_image, BatchFinisher(
        kwargs["mean"], kwargs["std"], recipe["reprob"], recipe["remode"], recipe["recount"]
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

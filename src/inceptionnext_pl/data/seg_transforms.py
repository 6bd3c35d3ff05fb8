"""mmsegmentation's ADE20K pipeline (the paper's Section 4.2 recipe) in torchvision.transforms.v2.

Training, as mmseg's ``configs/_base_/datasets/ade20k.py``::

    RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)
    RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75)
    RandomFlip(prob=0.5)
    PhotoMetricDistortion()
    Normalize(ImageNet mean / std) and Pad(crop_size, pad_val=0, seg_pad_val=255)

Evaluation: ``Resize(scale=(2048, 512), keep_ratio=True)`` of the image; the mask keeps its original
size (mmseg scores predictions resized back to it) unless ``eval_mask="resized"``.

Images and masks travel together as ``tv_tensors.Image`` / ``tv_tensors.Mask``, so every
geometric step moves both alike; masks are always resized with nearest neighbour, sampled at pixel
centres like the bilinear image (``NEAREST_EXACT``), so no label value is ever made up. The pieces torchvision lacks are here: the
keep-ratio rescale rule of mmcv, the crop that retries while one class fills more than
``cat_max_ratio`` of it, and mmseg's photometric distortion (additive brightness, multiplicative
contrast, HSV saturation and hue; torchvision's ``RandomPhotometricDistort`` differs in all
three and permutes channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "PadToSize",
    "PhotoMetricDistortion",
    "RandomCatCrop",
    "Rescale",
    "build_seg_eval_transform",
    "build_seg_train_transform",
    "rescaled_size",
]


def query_size(flat_inputs: list[Any]) -> tuple[int, int]:
    """(height, width) of the first image or mask of a sample."""
    for x in flat_inputs:
        if isinstance(x, (tv_tensors.Image, tv_tensors.Mask)):
            height, width = F.get_size(x)
            return int(height), int(width)
    raise TypeError("the sample holds no tv_tensors.Image or tv_tensors.Mask")


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _coin() -> bool:
    return bool(torch.randint(2, ()))


def rescaled_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv's keep-ratio rule: the largest size with long side <= max(scale), short <= min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


class Rescale(v2.Transform):
    """Resize keeping the aspect ratio to fit ``scale`` (long, short side bounds), images bilinear.

    With ``ratio_range`` the bounds are first multiplied by a ratio drawn uniformly from it
    (mmseg's ``RandomResize``); without, this is mmseg's test-time ``Resize(keep_ratio=True)``.
    """

    def __init__(self, scale: Sequence[int], ratio_range: Sequence[float] | None = None) -> None:
        super().__init__()
        self.scale = tuple(int(s) for s in scale)
        self.ratio_range = tuple(float(r) for r in ratio_range) if ratio_range else None

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        ratio = _uniform(*self.ratio_range) if self.ratio_range else 1.0
        scale = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return dict(size=list(rescaled_size(height, width, scale)))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            # Nearest neighbour at pixel centres, as the bilinear image resize samples them:
            # torchvision's mask kernel uses torch's "nearest", which floors the source
            # coordinate and shifts the mask by up to half a source pixel against the image.
            mask = inpt.as_subclass(torch.Tensor)
            out = F.resize_image(
                mask if mask.ndim > 2 else mask[None],
                size=params["size"],
                interpolation=v2.InterpolationMode.NEAREST_EXACT,
            )
            return tv_tensors.wrap(out if mask.ndim > 2 else out[0], like=inpt)
        return self._call_kernel(
            F.resize,
            inpt,
            size=params["size"],
            interpolation=v2.InterpolationMode.BILINEAR,
            antialias=True,
        )


class RandomCatCrop(v2.Transform):
    """A random crop of at most ``size`` (h, w) in which no class covers ``cat_max_ratio`` or more.

    As mmseg's ``RandomCrop``: up to ``tries`` crops are drawn while the crop's most frequent class
    (``ignore_index`` not counted) covers at least ``cat_max_ratio`` of its labelled pixels or it
    holds a single class; after that the next crop is taken as it is. ``cat_max_ratio >= 1``
    keeps the first crop. Needs a ``tv_tensors.Mask`` in the sample.
    """

    def __init__(
        self,
        size: Sequence[int],
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        tries: int = 10,
    ) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = int(ignore_index)
        self.tries = int(tries)

    def _box(self, height: int, width: int) -> tuple[int, int, int, int]:
        crop_h, crop_w = min(self.size[0], height), min(self.size[1], width)
        top = int(torch.randint(height - crop_h + 1, ()))
        left = int(torch.randint(width - crop_w + 1, ()))
        return top, left, crop_h, crop_w

    def accepts(self, crop: torch.Tensor) -> bool:
        """Whether a mask crop passes the cat_max_ratio rule."""
        flat = crop.reshape(-1).long()
        flat = flat[flat != self.ignore_index]
        if flat.numel() == 0:
            return False
        counts = torch.bincount(flat - flat.min())  # bincount is ~5x faster than unique here
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max().item() / flat.numel() < self.cat_max_ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        height, width = query_size(flat_inputs)
        top, left, h, w = self._box(height, width)
        if self.cat_max_ratio < 1.0:
            if not masks:
                raise ValueError("RandomCatCrop with cat_max_ratio < 1 needs a tv_tensors.Mask")
            for _ in range(self.tries):
                if self.accepts(masks[0][..., top : top + h, left : left + w]):
                    break
                top, left, h, w = self._box(height, width)
        return dict(top=top, left=left, height=h, width=w)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class PhotoMetricDistortion(v2.Transform):
    """mmseg's ``PhotoMetricDistortion`` on uint8 images (masks pass through).

    Each step happens with probability 1/2: brightness ``+ U(-32, 32)``; contrast ``x U(0.5, 1.5)``
    either before or after the next two (a coin decides); saturation: HSV S ``x U(0.5, 1.5)``; hue:
    HSV H shifted by ``randint(-18, 18)`` OpenCV units (2 degrees each). Values are clipped to
    0..255 and truncated to uint8 after each step, as mmseg does.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        super().__init__()
        self.brightness_delta = int(brightness_delta)
        self.contrast_range = tuple(float(c) for c in contrast_range)
        self.saturation_range = tuple(float(s) for s in saturation_range)
        self.hue_delta = int(hue_delta)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        d = self.brightness_delta
        return dict(
            brightness=_uniform(-d, d) if _coin() else None,
            contrast_first=_coin(),
            contrast=_uniform(*self.contrast_range) if _coin() else None,
            saturation=_uniform(*self.saturation_range) if _coin() else None,
            # numpy's randint(-18, 18), as mmseg draws it, excludes 18
            hue=int(torch.randint(-self.hue_delta, self.hue_delta, ())) if _coin() else None,
        )

    @staticmethod
    def _to_uint8(x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(0, 255).to(torch.uint8)  # truncation, as numpy's astype(uint8)

    @classmethod
    def saturate(cls, img: torch.Tensor, alpha: float) -> torch.Tensor:
        """Scale HSV saturation by ``alpha`` (capped at 1) keeping hue and value."""
        x = img.float()
        value = x.amax(dim=-3, keepdim=True)
        low = x.amin(dim=-3, keepdim=True)
        # S' = min(S * alpha, 1) with S = (V - min) / V: every channel moves away from V by the
        # same factor, which keeps the hue; the cap 1 / S stops the smallest channel at 0.
        factor = (value / (value - low).clamp_min(1e-6)).clamp_(max=alpha)
        return cls._to_uint8(value - (value - x) * factor)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if inpt.dtype != torch.uint8:
            raise TypeError(f"PhotoMetricDistortion expects uint8 images, got {inpt.dtype}")
        img = inpt.as_subclass(torch.Tensor)
        if params["brightness"] is not None:
            img = self._to_uint8(img.float() + params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            img = self._to_uint8(img.float() * params["contrast"])
        if params["saturation"] is not None:
            img = self.saturate(img, params["saturation"])
        if params["hue"] is not None:
            img = F.adjust_hue(img, params["hue"] / 180.0)  # OpenCV hue spans 180 units
        if not params["contrast_first"] and params["contrast"] is not None:
            img = self._to_uint8(img.float() * params["contrast"])
        return tv_tensors.wrap(img, like=inpt)


class PadToSize(v2.Transform):
    """Pad bottom and right up to ``size`` (h, w): images with ``fill``, masks with ``mask_fill``."""

    def __init__(self, size: Sequence[int], fill: float = 0.0, mask_fill: int = 255) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.fill = fill
        self.mask_fill = int(mask_fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        return dict(padding=[0, 0, max(self.size[1] - width, 0), max(self.size[0] - height, 0)])

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.fill
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)


class _Finish(v2.Transform):
    """Plain tensors out: float image, int64 mask."""

    _transformed_types = (tv_tensors.Image, tv_tensors.Mask)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return inpt.as_subclass(torch.Tensor).long()
        return inpt.as_subclass(torch.Tensor)


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def build_seg_train_transform(
    *,
    crop_size: Sequence[int],
    scale: Sequence[int],
    ratio_range: Sequence[float] | None,
    cat_max_ratio: float,
    hflip: float,
    photometric: bool,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int,
) -> v2.Compose:
    """The training pipeline: ``(Image uint8, Mask) -> (float (3, h, w), int64 (h, w))``."""
    steps: list[v2.Transform] = [
        Rescale(scale, ratio_range),
        RandomCatCrop(crop_size, cat_max_ratio, ignore_index),
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps += _normalize(mean, std)
    steps += [PadToSize(crop_size, fill=0.0, mask_fill=ignore_index), _Finish()]
    return v2.Compose(steps)


class SegEvalTransform:
    """Evaluation: keep-ratio resize to ``scale``; the mask stays at its size or is resized too."""

    def __init__(
        self,
        scale: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        resize_mask: bool = False,
    ) -> None:
        self.resize = Rescale(scale)
        self.resize_mask = resize_mask
        self.finish = v2.Compose([*_normalize(mean, std), _Finish()])

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[Any, Any]:
        if self.resize_mask:
            image, mask = self.resize(image, mask)
        else:
            image = self.resize(image)
        return self.finish(image, mask)

    def __repr__(self) -> str:
        return f"SegEvalTransform(scale={self.resize.scale}, resize_mask={self.resize_mask})"


def build_seg_eval_transform(
    *, scale: Sequence[int], mean: Sequence[float], std: Sequence[float], resize_mask: bool
) -> SegEvalTransform:
    """The evaluation transform: ``(Image uint8, Mask) -> (float (3, h, w), int64 (H, W))``."""
    return SegEvalTransform(scale, mean, std, resize_mask)

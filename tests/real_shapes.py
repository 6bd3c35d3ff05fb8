"""Folders in ImageNet's and ADE20K's own layouts, made from scikit-image's photos at the sizes
and modes the real datasets hold (issue 17): the rehearsal data of every shipped config."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from skimage import data as photos

# (width, height) as PIL counts them.
IMAGENET_SIZES = {
    "landscape": (500, 375),
    "portrait": (375, 500),
    "square": (500, 500),
    "large": (1600, 1200),
    "small": (120, 90),
}
# The first validation image is the one that crashed the Semantic FPN (683 is not a multiple of 32).
ADE_VAL_SIZES = [(683, 512), (512, 683), (300, 225), (2048, 1536)]
ADE_TRAIN_SIZES = [(640, 480), (1600, 1200), (512, 683), (683, 512)]
ADE_CLASSES = 150  # mask values 0 ("other", ignored) .. 150
WNIDS = ("n01440764", "n01443537")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")


def photo(index: int, size: tuple[int, int]) -> Image.Image:
    """A real photo, centre-cropped to the aspect ratio of ``size`` and resized to it."""
    img = Image.fromarray(getattr(photos, PHOTOS[index % len(PHOTOS)])())
    w, h = img.size
    target = size[0] / size[1]
    cw, ch = (min(w, round(h * target)), min(h, round(w / target)))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize(size, Image.BICUBIC)


def _save_jpeg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)


def make_imagenet_folder(root: Path) -> Path:
    """``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` at the sizes above (all of them in
    train), with a grayscale and a CMYK JPEG in each split (ImageNet holds both). The first
    validation batch holds the large image and the small grayscale one."""
    index = 0
    for split, per_class in (("train", 4), ("val", 2)):
        for c, wnid in enumerate(WNIDS):
            for i in range(per_class):
                size = list(IMAGENET_SIZES.values())[index % len(IMAGENET_SIZES)]
                img = photo(index, size)
                if (c, i) == (0, 1):
                    img = img.convert("L")
                elif (c, i) == (1, 1):
                    img = img.convert("CMYK")
                name = (
                    f"{wnid}_{index}.JPEG"
                    if split == "train"
                    else f"ILSVRC2012_val_{index:08d}.JPEG"
                )
                _save_jpeg(img, root / split / wnid / name)
                index += 1
    return root


def ade_mask(size: tuple[int, int], seed: int) -> Image.Image:
    """A mask of ``size`` over 0..150: blocks of random classes (0 among them), mode L."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, ADE_CLASSES + 1, size=(6, 8), dtype=np.uint8)
    blocks[0, 0], blocks[-1, -1] = 0, ADE_CLASSES  # both ends of the range in every mask
    return Image.fromarray(blocks).resize((w, h), Image.NEAREST)


def make_ade_folder(root: Path) -> Path:
    """``ADEChallengeData2016``: ``images/{training,validation}/ADE_*.jpg`` with their masks in
    ``annotations/{training,validation}/ADE_*.png``, at ADE20K's size mix."""
    for split, prefix, sizes in (
        ("training", "ADE_train", ADE_TRAIN_SIZES),
        ("validation", "ADE_val", ADE_VAL_SIZES),
    ):
        for i, size in enumerate(sizes, start=1):
            stem = f"{prefix}_{i:08d}"
            _save_jpeg(photo(i, size), root / "images" / split / f"{stem}.jpg")
            mask = root / "annotations" / split / f"{stem}.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            ade_mask(size, seed=i + 100 * len(prefix)).save(mask)
    return root


class BatchShapes(L.Callback):
    """Records the shapes of the first training and validation batches a run sees."""

    def __init__(self) -> None:
        self.shapes: dict[str, list[tuple[int, ...]]] = {}

    @staticmethod
    def _record(store: dict, stage: str, batch) -> None:
        if stage not in store:
            store[stage] = [tuple(t.shape) for t in batch if isinstance(t, torch.Tensor)]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record(self.shapes, "train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._record(self.shapes, "val", batch)


class NetInputs(L.Callback):
    """Records the input shape of every network call inside the validation steps."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self._hook = None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        record = self.shapes.append
        self._hook = pl_module.model.register_forward_pre_hook(
            lambda _, args: record(tuple(args[0].shape))
        )

    def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        self._hook.remove()

"""`SegmentationDataModule`: images and per-pixel class masks, with mmseg's ADE20K recipe.

Sources (``dataset``), resolved like :class:`~.datamodule.ImageDataModule`'s (:mod:`.sources`):

* ``zhoubolei/scene_parse_150`` (the default): ADE20K on the hub, read from its parquet
  conversion (revision ``refs/convert/parquet``, directory ``scene_parsing``, columns ``image`` and
  ``annotation``; see :mod:`.ade20k`). Not gated.
* a local folder in ADE20K's own layout (``ADEChallengeData2016/``): ``images/training``,
  ``images/validation``, ``annotations/training``, ``annotations/validation``, each mask a PNG with
  its image's file stem. Splits ``train`` and ``validation`` read ``training`` and ``validation``.
* parquet files (a directory or glob, split names in the file names as in the hub schema) with an
  image column and a mask column (an image feature, or bytes / paths of PNGs).
* ``digits_scenes``: the offline demo set, scenes of handwritten digits (:mod:`.digit_scenes`).

Defaults follow the source: ADE20K (hub or folder) has 150 classes, ``reduce_zero_label`` (mask
value 0, "other", becomes ``ignore_index``; the others shift down by one) and mmseg's class names;
``digits_scenes`` has 11 classes (background + the ten digits) and no reduction. Other sources need
``num_classes``.

Masks are checked in the loader workers, with an error naming the item and the fix: a missing mask,
a mask whose size differs from its image's, and label values outside ``0 .. num_classes - 1`` other
than ``ignore_index``.

Batches: training ``(float (B, 3, h, w) image, int64 (B, h, w) mask)`` at ``augment.crop_size``;
validation / test images resized to fit ``scale`` keeping their aspect ratio, with the mask at the
image's original size (``eval_mask: original``, mmseg's protocol: upsample the logits to the mask)
or resized with nearest neighbour to the image (``eval_mask: resized``). Images of different sizes
cannot share a batch: ADE20K evaluates with ``loader.val_batch_size: 1``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .ade20k import (
    ADE20K_CLASSES,
    ADE20K_DATA_DIR,
    ADE20K_HUB_ID,
    ADE20K_MASK_COLUMN,
    ADE20K_REVISION,
)
from .base import SplitDataModule
from .datamodule import IMAGENET_MEAN, IMAGENET_STD
from .decoding import cell_path, decode_mask, decode_rgb
from .digit_scenes import DIGIT_SCENE_CLASSES
from .errors import DataError
from .image_datasets import MapImageDataset, StreamImageDataset
from .options import LOADER_KEYS, LoaderConfig, as_group, group_dict
from .seg_transforms import build_seg_eval_transform, build_seg_train_transform
from .sources import prepare_columns

__all__ = [
    "LabelMap",
    "SegAugmentConfig",
    "SegmentationDataModule",
    "SegmentationRows",
    "ade_folder_split",
    "is_ade_folder",
]

log = logging.getLogger(__name__)

ADE_SPLIT_DIRS = {"train": "training", "validation": "validation", "val": "validation"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class SegAugmentConfig:
    """Training augmentation, mmseg's ADE20K pipeline (defaults: the paper's 512x512 recipe).

    Args:
        crop_size: training crop (height, width); smaller rescaled images are padded to it.
        ratio_range: the rescale bounds (``data.scale``) are multiplied by a ratio drawn from this
            range; null: no random rescale.
        cat_max_ratio: crops in which one class covers this share or more are redrawn (up to 10
            times); 1 turns it off.
        hflip: horizontal flip probability.
        photometric: mmseg's PhotoMetricDistortion (brightness, contrast, saturation, hue).
    """

    crop_size: tuple[int, int] = (512, 512)
    ratio_range: tuple[float, float] | None = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    hflip: float = 0.5
    photometric: bool = True


def is_ade_folder(path: str) -> bool:
    """Whether ``path`` has ADE20K's ``images/`` and ``annotations/`` directories."""
    return all(os.path.isdir(os.path.join(path, d)) for d in ("images", "annotations"))


def ade_folder_split(root: str, split: str, arg: str):
    """One split of an ADE-layout folder as a `datasets.Dataset` of (image, mask) paths."""
    import datasets

    name = ADE_SPLIT_DIRS.get(split, split)
    image_dir = os.path.join(root, "images", name)
    mask_dir = os.path.join(root, "annotations", name)
    if not os.path.isdir(image_dir):
        available = sorted(os.listdir(os.path.join(root, "images")))
        raise DataError(
            f"ADE20K folder '{root}' has no images/{name} for split '{split}'. Directories under "
            f"images/: {available}. Fix: set data.{arg} to one of them (train reads training)."
        )
    images = sorted(
        f for f in os.listdir(image_dir) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
    )
    masks = set(os.listdir(mask_dir)) if os.path.isdir(mask_dir) else set()
    missing = [f for f in images if os.path.splitext(f)[0] + ".png" not in masks]
    if missing:
        stem = os.path.splitext(missing[0])[0]
        raise DataError(
            f"ADE20K folder '{root}' split '{split}': {len(missing)} image(s) have no mask, e.g. "
            f"images/{name}/{missing[0]} has no annotations/{name}/{stem}.png. Fix: add the "
            f"masks (PNGs named by the image's file stem), or remove those images."
        )
    if not images:
        raise DataError(f"ADE20K folder '{root}': images/{name} holds no .jpg / .png images.")
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    return datasets.Dataset.from_dict(
        {
            "image": [{"path": os.path.join(image_dir, f), "bytes": None} for f in images],
            "mask": [
                {"path": os.path.join(mask_dir, os.path.splitext(f)[0] + ".png"), "bytes": None}
                for f in images
            ],
        },
        features=features,
    )


class LabelMap:
    """Mask values -> training labels: ``reduce_zero_label``, then the range check.

    Valid labels are ``0 .. num_classes - 1`` and ``ignore_index``. uint8 masks go through one
    256-entry lookup table (and a bincount for the check), which costs far less than np.unique.
    """

    def __init__(self, num_classes: int, ignore_index: int, reduce_zero_label: bool) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = bool(reduce_zero_label)
        values = self._map(np.arange(256, dtype=np.int64))
        self._lut = values.astype(np.uint8) if self._fits_uint8 else None
        self._valid_u8 = self._valid(values)

    @property
    def _fits_uint8(self) -> bool:
        return self.ignore_index <= 255 and self.num_classes <= 256

    def _map(self, m: np.ndarray) -> np.ndarray:
        if not self.reduce_zero_label:
            return m
        out = m - 1  # as mmseg: 0 ("other") becomes ignored, the rest shift down by one
        out[(m == 0) | (m == self.ignore_index)] = self.ignore_index
        return out

    def _valid(self, labels: np.ndarray) -> np.ndarray:
        return ((labels >= 0) & (labels < self.num_classes)) | (labels == self.ignore_index)

    def __call__(self, mask: np.ndarray, describe: str) -> np.ndarray:
        if mask.dtype == np.uint8 and self._lut is not None:
            present = np.nonzero(np.bincount(mask.ravel(), minlength=256))[0]
            bad = present[~self._valid_u8[present]]
            if bad.size:
                self._refuse(bad, describe)
            return self._lut[mask]
        labels = self._map(mask.astype(np.int64))
        values = np.unique(mask)
        bad = values[~self._valid(self._map(values.astype(np.int64)))]
        if bad.size:
            self._refuse(bad, describe)
        return labels

    def _refuse(self, bad: np.ndarray, describe: str) -> None:
        shown = [int(v) for v in bad[:8]]
        mapped = ""
        if self.reduce_zero_label:
            mapped = f" (labels {[int(v) for v in self._map(bad[:8].astype(np.int64))]} after "
            mapped += "reduce_zero_label)"
        raise DataError(
            f"{describe} holds mask values {shown}{mapped} outside the {self.num_classes} "
            f"classes 0..{self.num_classes - 1} that are not ignore_index {self.ignore_index}. "
            f"Fix: set data.num_classes to the real class count, data.reduce_zero_label if the "
            f"labels start at 1 with 0 unlabelled, or data.ignore_index to the value that marks "
            f"unlabelled pixels."
        )


def _empty(cell: Any) -> bool:
    if cell is None:
        return True
    return isinstance(cell, dict) and cell.get("bytes") is None and not cell.get("path")


class SegmentationRows:
    """Row -> ``transform(image, mask)``, after the mask checks (see the module doc)."""

    def __init__(
        self,
        image_column: str,
        mask_column: str,
        transform: Any,
        labels: LabelMap,
        *,
        dataset: str,
        split: str,
    ) -> None:
        self.image_column = image_column
        self.mask_column = mask_column
        self.columns = (image_column, mask_column)
        self.transform = transform
        self.labels = labels
        self.dataset = dataset
        self.split = split

    def __call__(self, row: dict[str, Any], where: str) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        item = f"dataset '{self.dataset}' split '{self.split}' {where}"
        image_cell, mask_cell = row[self.image_column], row[self.mask_column]
        image = decode_rgb(image_cell)
        if _empty(mask_cell):
            raise DataError(
                f"{item} (image {cell_path(image_cell)}) has no mask: column "
                f"'{self.mask_column}' is empty. Fix: add the mask, drop the rows without one, or "
                f"point data.{'val_split' if self.split != 'train' else 'train_split'} at a split "
                f"with masks (ADE20K's test split has none: evaluate on 'validation')."
            )
        mask = decode_mask(mask_cell)
        if mask.shape != (image.height, image.width):
            raise DataError(
                f"{item}: the image {cell_path(image_cell)} is {image.width}x{image.height} but "
                f"its mask {cell_path(mask_cell)} is {mask.shape[1]}x{mask.shape[0]} (width x "
                f"height). Fix: a mask must have its image's size; re-export it, or check that "
                f"images and masks are paired (same file stem, same row)."
            )
        labels = self.labels(mask, f"{item} (mask {cell_path(mask_cell)})")
        return self.transform(
            tv_tensors.Image(F.pil_to_tensor(image)), tv_tensors.Mask(torch.from_numpy(labels))
        )


def _collate_same_size(batch: list[tuple[torch.Tensor, torch.Tensor]]):
    shapes = {(tuple(x.shape), tuple(y.shape)) for x, y in batch}
    if len(shapes) > 1:
        raise DataError(
            f"a validation batch holds images or masks of different sizes {sorted(shapes)[:3]}: "
            f"evaluation keeps each image's aspect ratio (and the mask at its original size). "
            f"Fix: set data.loader.val_batch_size: 1, as mmseg evaluates ADE20K."
        )
    images, masks = zip(*batch)
    return torch.stack(images), torch.stack(masks)


class SegmentationDataModule(SplitDataModule):
    """Images and class masks from one source, with mmseg's ADE20K augmentation.

    See the module doc for the sources, defaults, checks and batches. After construction:
    ``num_classes``, ``ignore_index``, ``class_names``, ``reduce_zero_label``, ``mean``, ``std``,
    ``crop_size`` and ``scale`` (what whole-image or sliding-window inference needs: mmseg slides
    ``crop_size`` windows with a stride of 2/3 of it).
    """

    builtin_sets = ("digits_scenes",)
    other_builtins = {"digits": "ImageDataModule"}
    moved_keys = LOADER_KEYS  # flat loader keys -> data.loader.* (see .options)

    def __init__(
        self,
        dataset: str = ADE20K_HUB_ID,
        revision: str | None = None,
        data_dir: str | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str | None = None,
        image_column: str = "image",
        mask_column: str | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        reduce_zero_label: bool | None = None,
        ignore_index: int = 255,
        streaming: bool = False,
        cache_dir: str | None = None,
        scale: tuple[int, int] = (2048, 512),
        augment: SegAugmentConfig = SegAugmentConfig(),
        eval_mask: Literal["original", "resized"] = "original",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        loader: LoaderConfig = LoaderConfig(batch_size=4, val_batch_size=1, num_workers=4),
        skip_corrupt: bool = False,
        seed: int = 0,
        max_train_samples: int | None = None,
        max_val_samples: int | None = None,
    ) -> None:
        """Arguments are plain values and small groups so that LightningCLI can set them from YAML.

        Args:
            dataset: ADE20K's hub id (default), an ADE-layout folder, parquet files, or
                ``"digits_scenes"`` (see the module doc).
            revision: hub branch, tag or commit; null: ``refs/convert/parquet`` for ADE20K.
            data_dir: sub-directory holding the split files; null: ``scene_parsing`` for ADE20K.
            train_split: name of the training split.
            val_split: name of the validation split.
            test_split: name of the test split; null: ``val_split``.
            image_column: column holding the images.
            mask_column: column holding the masks; null: ``annotation`` for ADE20K on the hub,
                else ``mask``.
            num_classes: number of classes; null: from the source (150 ADE20K, 11 digits_scenes).
            class_names: one name per class; null: the source's, else "0", "1", ...
            reduce_zero_label: mask 0 -> ignore_index, others minus one; null: true for ADE20K.
            ignore_index: label of pixels that count for nothing (padding uses it too).
            streaming: stream the splits instead of downloading them first.
            cache_dir: `datasets` cache directory (default: HF_DATASETS_CACHE).
            scale: bounds of the long and short image side, (2048, 512) in mmseg's ADE20K recipe;
                training draws a ratio of them (augment.ratio_range), evaluation fits into them.
            augment: training augmentation (:class:`SegAugmentConfig`).
            eval_mask: "original": validation masks keep the image's original size (mmseg);
                "resized": resized with nearest neighbour to the evaluated image.
            mean: normalisation mean (RGB, 0-1).
            std: normalisation std (RGB, 0-1).
            loader: DataLoader settings (:class:`~.options.LoaderConfig`).
            skip_corrupt: skip (and count and log) undecodable images instead of failing.
            seed: seeds the streaming shuffle and the max_*_samples subsets.
            max_train_samples: use a seeded random subset of the training split (smoke tests).
            max_val_samples: use a seeded random subset of the validation split.
        """
        super().__init__()
        self.augment = as_group(augment, SegAugmentConfig, "augment")
        self.loader = as_group(loader, LoaderConfig, "loader")
        self.loader.check()
        self._check_limits(max_train_samples, max_val_samples)
        kind = _preset(dataset)
        ade = kind in ("ade_hub", "ade_folder")
        self.revision = revision if revision or kind != "ade_hub" else ADE20K_REVISION
        self.data_dir = data_dir if data_dir or kind != "ade_hub" else ADE20K_DATA_DIR
        if mask_column is None:
            mask_column = ADE20K_MASK_COLUMN if kind == "ade_hub" else "mask"
        preset_names: Sequence[str] | None = (
            ADE20K_CLASSES if ade else DIGIT_SCENE_CLASSES if kind == "digits_scenes" else None
        )
        if num_classes is None:
            if preset_names is None:
                raise DataError(
                    f"data.num_classes is not set, and dataset '{dataset}' is neither ADE20K nor "
                    f"digits_scenes, whose class counts are known. Fix: set data.num_classes "
                    f"(and data.class_names if you want them in logs)."
                )
            num_classes = len(preset_names)
        if num_classes < 1:
            raise DataError(f"data.num_classes must be >= 1, got {num_classes}.")
        if 0 <= ignore_index < num_classes:
            raise DataError(
                f"data.ignore_index={ignore_index} is one of the classes 0..{num_classes - 1}. "
                f"Fix: use a value outside them, such as 255 (mmseg's)."
            )
        if class_names is None:
            use_preset = preset_names is not None and len(preset_names) == num_classes
            class_names = list(preset_names) if use_preset else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise DataError(
                f"data.class_names has {len(class_names)} names for {num_classes} classes. Fix: "
                f"give one name per class, or leave it null."
            )
        self.reduce_zero_label = bool(ade if reduce_zero_label is None else reduce_zero_label)
        crop = self.augment.crop_size
        if len(crop) != 2 or min(crop) < 1 or len(scale) != 2 or min(scale) < 1:
            raise DataError(
                f"data.augment.crop_size {list(crop)} and data.scale {list(scale)} must be two "
                f"positive sizes each."
            )
        if not 0 < self.augment.cat_max_ratio <= 1:
            raise DataError(
                f"data.augment.cat_max_ratio must be in (0, 1], got {self.augment.cat_max_ratio}."
            )
        # num_classes stays out of hparams, as in ImageDataModule (a model with the same key would
        # clash when it resolves it differently); the groups are saved as dicts.
        self.save_hyperparameters(
            {
                "dataset": dataset,
                "revision": self.revision,
                "data_dir": self.data_dir,
                "train_split": train_split,
                "val_split": val_split,
                "test_split": test_split,
                "image_column": image_column,
                "mask_column": mask_column,
                "class_names": list(class_names),
                "reduce_zero_label": self.reduce_zero_label,
                "ignore_index": ignore_index,
                "streaming": streaming,
                "cache_dir": cache_dir,
                "scale": list(scale),
                "augment": group_dict(self.augment),
                "eval_mask": eval_mask,
                "mean": list(mean),
                "std": list(std),
                "loader": group_dict(self.loader),
                "skip_corrupt": skip_corrupt,
                "seed": seed,
                "max_train_samples": max_train_samples,
                "max_val_samples": max_val_samples,
            }
        )
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = list(class_names)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.scale = tuple(int(s) for s in scale)
        self.crop_size = tuple(int(c) for c in crop)
        self.label_map = LabelMap(self.num_classes, self.ignore_index, self.reduce_zero_label)
        self._kind = kind
        self._init_splits()

    def check_num_classes(self, model_num_classes: int) -> None:
        """Raise a clear error when a model head's size disagrees with the data's classes."""
        if int(model_num_classes) != self.num_classes:
            raise DataError(
                f"The model predicts {model_num_classes} classes but dataset "
                f"'{self.hparams.dataset}' has {self.num_classes}. Fix: set model.num_classes: "
                f"{self.num_classes} (or leave it unset to take it from the data)."
            )

    # ------------------------------------------------------------------ datasets
    def _open_split(self, split: str, arg: str, *, streaming: bool, num_shards: int = 1):
        if self._kind == "ade_folder":
            root = os.path.abspath(os.path.expanduser(self.hparams.dataset))
            ds = ade_folder_split(root, split, arg)
            if streaming:
                return ds.to_iterable_dataset(num_shards=max(1, min(num_shards, len(ds)))), len(ds)
            return ds, len(ds)
        return super()._open_split(split, arg, streaming=streaming, num_shards=num_shards)

    def prepare_data(self) -> None:
        if self._kind == "ade_folder":
            return  # listed in setup, on every rank
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self._setup_splits(stage)

    def _train_transform(self):
        aug = self.augment
        return build_seg_train_transform(
            crop_size=self.crop_size,
            scale=self.scale,
            ratio_range=aug.ratio_range,
            cat_max_ratio=aug.cat_max_ratio,
            hflip=aug.hflip,
            photometric=aug.photometric,
            mean=self.mean,
            std=self.std,
            ignore_index=self.ignore_index,
        )

    def _eval_transform(self):
        return build_seg_eval_transform(
            scale=self.scale,
            mean=self.mean,
            std=self.std,
            resize_mask=self.hparams.eval_mask == "resized",
        )

    def _build(self, split: str, arg: str, training: bool) -> MapImageDataset | StreamImageDataset:
        hp = self.hparams
        hf, num_examples = self._open(split, arg)
        columns = {"image_column": hp.image_column, "mask_column": hp.mask_column}
        hf = prepare_columns(hf, columns, hp.dataset, split)
        transform = self._train_transform() if training else self._eval_transform()
        rows = SegmentationRows(
            hp.image_column,
            hp.mask_column,
            transform,
            self.label_map,
            dataset=hp.dataset,
            split=split,
        )
        return self._make_dataset(hf, num_examples, rows, split=split, training=training)

    def _collate(self, train: bool):
        return None if train else _collate_same_size


def _preset(dataset: str) -> str:
    """Which known source ``dataset`` names: ade_hub, ade_folder, digits_scenes, or other."""
    if dataset == ADE20K_HUB_ID:
        return "ade_hub"
    if dataset == "digits_scenes":
        return "digits_scenes"
    path = os.path.abspath(os.path.expanduser(str(dataset)))
    return "ade_folder" if os.path.isdir(path) and is_ade_folder(path) else "other"

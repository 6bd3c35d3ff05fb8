"""Data: LightningDataModules over Hugging Face `datasets`.

`ImageDataModule` (classification) reads a hub dataset (ImageNet-1k by default), a local ImageNet
folder, parquet files, a ``save_to_disk`` directory, or the built-in ``digits`` demo set, and feeds
timm's transforms and Mixup/CutMix. `SegmentationDataModule` reads ADE20K (hub parquet or a local
ADEChallengeData2016 folder), parquet with an image and a mask column, or the built-in
``digits_scenes`` demo set, with mmsegmentation's ADE20K recipe. Both share the sources, the
``data.loader`` group, lazy decoding in the workers and the DDP / streaming shards
(:mod:`.base`).
"""

from .base import SplitDataModule
from .datamodule import IMAGENET_MEAN, IMAGENET_STD, ImageDataModule
from .decoding import CorruptImageError, decode_mask, decode_rgb
from .digit_scenes import load_digit_scenes
from .digits import load_digits_dataset
from .errors import DataError
from .image_datasets import (
    ClassificationRows,
    MapImageDataset,
    StreamImageDataset,
    TrainLoader,
    stream_plan,
)
from .options import AugmentConfig, LoaderConfig, MixupConfig, check_moved_keys
from .segmentation import SegAugmentConfig, SegmentationDataModule
from .sources import resolve_source
from .transforms import (
    BatchFinisher,
    build_eval_transform,
    build_train_pipeline,
    build_train_transform,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "BatchFinisher",
    "ClassificationRows",
    "CorruptImageError",
    "DataError",
    "ImageDataModule",
    "LoaderConfig",
    "MapImageDataset",
    "MixupConfig",
    "SegAugmentConfig",
    "SegmentationDataModule",
    "SplitDataModule",
    "StreamImageDataset",
    "TrainLoader",
    "build_eval_transform",
    "build_train_pipeline",
    "build_train_transform",
    "check_moved_keys",
    "decode_mask",
    "decode_rgb",
    "load_digit_scenes",
    "load_digits_dataset",
    "resolve_source",
    "stream_plan",
]

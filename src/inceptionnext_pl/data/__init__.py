"""Data: one LightningDataModule over Hugging Face `datasets`, with the paper's augmentation.

`ImageDataModule` reads a hub dataset (ImageNet-1k by default), a local ImageNet folder, parquet
files, a ``save_to_disk`` directory, or the built-in ``digits`` demo set, and feeds timm's
transforms and Mixup/CutMix. See :class:`ImageDataModule` for the arguments.
"""

from .datamodule import IMAGENET_MEAN, IMAGENET_STD, ImageDataModule
from .digits import load_digits_dataset
from .errors import DataError
from .image_datasets import MapImageDataset, StreamImageDataset, TrainLoader, stream_plan
from .sources import resolve_source
from .transforms import (
    BatchFinisher,
    build_eval_transform,
    build_train_pipeline,
    build_train_transform,
    decode_rgb,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchFinisher",
    "DataError",
    "ImageDataModule",
    "MapImageDataset",
    "StreamImageDataset",
    "TrainLoader",
    "build_eval_transform",
    "build_train_pipeline",
    "build_train_transform",
    "decode_rgb",
    "load_digits_dataset",
    "resolve_source",
    "stream_plan",
]

"""`ImageDataModule`: every model and config of the project reads its images through this class."""

from __future__ import annotations

from typing import Any, Literal

import torch

from .base import SplitDataModule
from .errors import DataError
from .image_datasets import ClassificationRows, MapImageDataset, StreamImageDataset
from .options import (
    MOVED_KEYS,
    AugmentConfig,
    LoaderConfig,
    MixupConfig,
    as_group,
    group_dict,
    moved_keys_error,
)
from .sources import label_info, prepare_image_column
from .transforms import (
    BatchFinisher,
    build_eval_transform,
    build_train_pipeline,
    resolve_eval_geometry,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageDataModule"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDataModule(SplitDataModule):
    """Images and labels from one Hugging Face `datasets` source, with the paper's augmentation.

    Sources (``dataset``):
        * a hub id. The default ``"ILSVRC/imagenet-1k"`` holds parquet shards on its ``main``
          branch (294 train, 14 validation, 28 test files; ``image`` + ClassLabel ``label`` with
          1000 readable class names), so it loads with `datasets` >= 4, which dropped loading
          scripts. The repo is **gated**: log in on huggingface.co, accept the ImageNet licence
          (non-commercial research and education) on the dataset page, create a read token and
          ``export HF_TOKEN=hf_...`` (or run ``hf auth login`` once). `datasets` then reads the
          token itself; it is never a config value. ``timm/imagenet-1k-wds`` (webdataset, also
          gated) works too with ``image_column: jpg``, ``label_column: cls``,
          ``num_classes: 1000``.
        * a local directory in the official repo's layout (``train/<wnid>/*.JPEG``,
          ``val/<wnid>/*.JPEG``), a directory written by ``save_to_disk``, or a directory / glob
          of parquet files in the hub schema. See :mod:`inceptionnext_pl.data.sources`.
        * ``"digits"``: scikit-learn's 1,797 handwritten digits as RGB images in the hub schema,
          with a fixed stratified 80/20 split. Offline; used by ``configs/demo.yaml`` and tests.

    ``streaming: true`` reads the split as it trains instead of downloading it first (see
    :mod:`inceptionnext_pl.data.image_datasets` for how ranks and workers share the shards).

    Option groups (:mod:`.options`; in YAML ``data.augment.*``, ``data.mixup.*``,
    ``data.loader.*``):

    * ``augment``: training uses timm's ``create_transform`` with every value of the paper's
      recipe (Table 9) given explicitly (timm's own defaults differ): RandomResizedCrop
      (``scale``, ``ratio``), flips, RandAugment ``auto_augment``, ``color_jitter`` (which timm
      leaves off while RandAugment is on), random erasing ``reprob`` / ``remode`` / ``recount``.
      Evaluation resizes the short side to ``image_size / crop_pct`` and center-crops;
      ``image_size`` and ``crop_pct`` default to the pretrained config of ``model_name`` (the CLI
      links ``model.model_name`` here), else 224 and 0.875.
    * ``mixup``: timm's ``Mixup`` / CutMix run on the device in :meth:`on_after_batch_transfer`
      while training; targets then become soft ``(B, num_classes)`` tensors with
      ``label_smoothing`` folded in. With ``mixup: null`` (or both alphas 0) labels stay int64 and
      the LightningModule applies ``label_smoothing`` itself.
    * ``loader``: batch size, workers and the other DataLoader settings, per device.

    After :meth:`setup`: ``num_classes``, ``class_names``, ``train_dataset``, ``val_dataset``,
    ``mixup_active``, ``mean``, ``std``, ``image_size``, ``crop_pct``. Loaders yield
    ``(float NCHW tensor, int64 labels)``; the train loader drops the last uneven batch.
    """

    builtin_sets = ("digits",)
    other_builtins = {"digits_scenes": "SegmentationDataModule"}
    moved_keys = MOVED_KEYS  # flat keys of old configs -> their group (see .options)

    def __init__(
        self,
        dataset: str = "ILSVRC/imagenet-1k",
        revision: str | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        num_classes: int | None = None,
        streaming: bool = False,
        cache_dir: str | None = None,
        image_size: int | None = None,
        crop_pct: float | None = None,
        interpolation: Literal["bicubic", "bilinear", "nearest", "random"] = "bicubic",
        model_name: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        augment: AugmentConfig = AugmentConfig(),
        mixup: MixupConfig | None = MixupConfig(),
        label_smoothing: float = 0.1,
        loader: LoaderConfig = LoaderConfig(),
        skip_corrupt: bool = False,
        seed: int = 0,
        max_train_samples: int | None = None,
        max_val_samples: int | None = None,
        **moved: Any,
    ) -> None:
        """Arguments are plain values and small groups so that LightningCLI can set them from YAML.

        Args:
            dataset: hub id, local directory / parquet glob, or ``"digits"`` (see the class doc).
            revision: hub branch, tag or commit (hub ids only).
            train_split: name of the training split.
            val_split: name of the validation split.
            test_split: name of the test split; null: ``val_split``.
            image_column: column holding the images.
            label_column: column holding the integer labels.
            num_classes: only for label columns that are not a ClassLabel.
            streaming: stream the splits instead of loading them (see the module docs).
            cache_dir: `datasets` cache directory (default: HF_DATASETS_CACHE).
            image_size: train / eval resolution; null: from model_name.
            crop_pct: eval center-crop fraction; null: from model_name.
            interpolation: resize filter ("random" draws one per image, training only).
            model_name: timm / zoo model name whose pretrained config gives image_size, crop_pct.
            mean: normalisation mean (RGB, 0-1).
            std: normalisation std (RGB, 0-1).
            augment: training augmentation (:class:`~.options.AugmentConfig`).
            mixup: Mixup / CutMix (:class:`~.options.MixupConfig`); null turns it off.
            label_smoothing: given to Mixup when it is active, else left to the LightningModule.
            loader: DataLoader settings (:class:`~.options.LoaderConfig`).
            skip_corrupt: skip (and count and log) undecodable images instead of failing.
            seed: seeds the streaming shuffle and the max_*_samples subsets.
            max_train_samples: use a seeded random subset of the training split (smoke tests).
            max_val_samples: use a seeded random subset of the validation split.
        """
        super().__init__()
        if moved:
            unknown = sorted(k for k in moved if k not in MOVED_KEYS)
            if unknown:
                raise TypeError(f"ImageDataModule got unexpected keyword argument(s) {unknown}")
            raise moved_keys_error(list(moved), "the ImageDataModule arguments")
        self.augment = as_group(augment, AugmentConfig, "augment")
        self.mixup_config = as_group(mixup, MixupConfig, "mixup", optional=True)
        self.loader = as_group(loader, LoaderConfig, "loader")
        self.loader.check()
        self._check_limits(max_train_samples, max_val_samples)
        self.mixup_active = bool(self.mixup_config is not None and self.mixup_config.active)
        if self.mixup_active and self.loader.batch_size % 2:
            raise DataError(
                f"data.loader.batch_size={self.loader.batch_size} is odd, but timm's Mixup/CutMix "
                f"pairs the samples of a batch. Fix: use an even batch size, or set data.mixup: "
                f"null."
            )
        # num_classes stays out of hparams: Lightning refuses a model and datamodule whose hparams
        # share a key with different values, and the model's num_classes is the resolved count.
        # The groups are saved as dicts: checkpoints must load with weights_only=True.
        self.save_hyperparameters(
            {
                "dataset": dataset,
                "revision": revision,
                "train_split": train_split,
                "val_split": val_split,
                "test_split": test_split,
                "image_column": image_column,
                "label_column": label_column,
                "streaming": streaming,
                "cache_dir": cache_dir,
                "image_size": image_size,
                "crop_pct": crop_pct,
                "interpolation": interpolation,
                "model_name": model_name,
                "mean": list(mean),
                "std": list(std),
                "augment": group_dict(self.augment),
                "mixup": group_dict(self.mixup_config),
                "label_smoothing": label_smoothing,
                "loader": group_dict(self.loader),
                "skip_corrupt": skip_corrupt,
                "seed": seed,
                "max_train_samples": max_train_samples,
                "max_val_samples": max_val_samples,
            }
        )
        self._label_classes = num_classes
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.mixup_fn: Any = None
        self.finisher: BatchFinisher | None = None
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None
        self.image_size: int | None = None
        self.crop_pct: float | None = None
        self._eval_tf: Any = None
        self._init_splits()

    def check_num_classes(self, model_num_classes: int) -> None:
        """Raise a clear error when a model head's size disagrees with the data's classes."""
        if self.num_classes is None:
            raise DataError("ImageDataModule.check_num_classes() needs setup() to have run first.")
        if int(model_num_classes) != self.num_classes:
            raise DataError(
                f"The model head has {model_num_classes} classes but dataset "
                f"'{self.hparams.dataset}' has {self.num_classes} classes. Fix: set "
                f"model.num_classes: {self.num_classes} (or leave it unset to take it from the "
                f"data), or use a dataset with {model_num_classes} classes."
            )

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.image_size, self.crop_pct = resolve_eval_geometry(
            hp.model_name, hp.image_size, hp.crop_pct
        )
        self._eval_tf = build_eval_transform(
            self.image_size,
            crop_pct=self.crop_pct,
            interpolation=hp.interpolation,
            mean=self.mean,
            std=self.std,
        )
        self._setup_splits(stage)
        if self.mixup_active and self.num_classes is not None and self.mixup_fn is None:
            from timm.data import Mixup

            cfg = self.mixup_config
            self.mixup_fn = Mixup(
                mixup_alpha=cfg.mixup_alpha,
                cutmix_alpha=cfg.cutmix_alpha,
                cutmix_minmax=tuple(cfg.cutmix_minmax) if cfg.cutmix_minmax else None,
                prob=cfg.prob,
                switch_prob=cfg.switch_prob,
                mode=cfg.mode,
                label_smoothing=hp.label_smoothing,
                num_classes=self.num_classes,
            )

    def _train_pipeline(self):
        aug = self.augment
        return build_train_pipeline(
            self.image_size,
            scale=tuple(aug.scale),
            ratio=tuple(aug.ratio),
            hflip=aug.hflip,
            vflip=aug.vflip,
            auto_augment=aug.auto_augment if aug.auto_augment not in ("", "none", "None") else None,
            color_jitter=aug.color_jitter,
            interpolation=self.hparams.interpolation,
            mean=self.mean,
            std=self.std,
            reprob=aug.reprob,
            remode=aug.remode,
            recount=aug.recount,
        )

    def _build(self, split: str, arg: str, training: bool) -> MapImageDataset | StreamImageDataset:
        hp = self.hparams
        hf, num_examples = self._open(split, arg)
        hf = prepare_image_column(hf, hp.image_column, hp.label_column, hp.dataset, split)
        self._set_labels(hf, hp.dataset, split)
        transform, finisher = self._train_pipeline() if training else (self._eval_tf, None)
        if training:
            self.finisher = finisher
        rows = ClassificationRows(hp.image_column, hp.label_column, transform)
        return self._make_dataset(
            hf, num_examples, rows, split=split, training=training, finisher=finisher
        )

    def _set_labels(self, hf, name: str, split: str) -> None:
        num, names = label_info(hf, self.hparams.label_column, self._label_classes, name, split)
        if self.class_names is None:
            self.num_classes, self.class_names = num, names
        elif names != self.class_names:
            raise DataError(
                f"dataset '{name}': split '{split}' has {num} classes {names[:5]}... but the other "
                f"split has {self.num_classes} classes {self.class_names[:5]}...; the splits must "
                f"share one label set. Fix: give every split the same class folders / ClassLabel."
            )

    # ------------------------------------------------------------------ loaders
    def _finisher(self) -> BatchFinisher | None:
        return self.finisher

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: finish uint8 training batches, then Mixup / CutMix while training."""
        images, labels = batch
        if images.dtype == torch.uint8 and self.finisher is not None:
            images = self.finisher(images)
        trainer = self._trainer_or_none()
        if self.mixup_fn is not None and trainer is not None and trainer.training:
            images, labels = self.mixup_fn(images, labels)
        return images, labels

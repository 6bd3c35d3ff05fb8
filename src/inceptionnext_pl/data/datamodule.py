"""`ImageDataModule`: every model and config of the project reads its images through this class."""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from .errors import DataError
from .image_datasets import MapImageDataset, StreamImageDataset, TrainLoader, stream_plan
from .sources import Source, label_info, open_split, prepare_image_column, resolve_source
from .transforms import (
    BatchFinisher,
    build_eval_transform,
    build_train_pipeline,
    resolve_eval_geometry,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageDataModule"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDataModule(L.LightningDataModule):
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

    Transforms: training uses timm's ``create_transform`` with every value of the paper's recipe
    (Table 9) given explicitly (timm's own defaults differ): RandomResizedCrop(``scale``,
    ``ratio``), flips, RandAugment ``auto_augment``, ``color_jitter`` (which timm leaves off while
    RandAugment is on), ``interpolation``, random erasing ``reprob`` / ``remode`` / ``recount``,
    ``mean`` / ``std``. Evaluation resizes the short side to ``image_size / crop_pct`` and
    center-crops; ``image_size`` and ``crop_pct`` default to the pretrained config of
    ``model_name`` (the CLI links ``model.model_name`` here), else 224 and 0.875.

    Mixup / CutMix (timm's ``Mixup``) run on the device in :meth:`on_after_batch_transfer` while
    training; targets then become soft ``(B, num_classes)`` tensors with ``label_smoothing``
    folded in. With ``mixup`` and ``cutmix`` both 0 (and no ``cutmix_minmax``) labels stay int64
    and the LightningModule applies ``label_smoothing`` itself.

    After :meth:`setup`: ``num_classes``, ``class_names``, ``train_dataset``, ``val_dataset``,
    ``mixup_active``, ``mean``, ``std``, ``image_size``, ``crop_pct``. Loaders yield
    ``(float NCHW tensor, int64 labels)``; the train loader drops the last uneven batch.
    """

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
        shuffle_buffer_size: int = 2000,
        cache_dir: str | None = None,
        batch_size: int = 128,
        num_workers: int = 8,
        image_size: int | None = None,
        crop_pct: float | None = None,
        interpolation: Literal["bicubic", "bilinear", "nearest", "random"] = "bicubic",
        model_name: str | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (0.75, 1.3333333333333333),
        hflip: float = 0.5,
        vflip: float = 0.0,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        color_jitter: float | None = 0.4,
        reprob: float = 0.25,
        remode: Literal["pixel", "rand", "const"] = "pixel",
        recount: int = 1,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        cutmix_minmax: tuple[float, float] | None = None,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: Literal["batch", "pair", "elem"] = "batch",
        label_smoothing: float = 0.1,
        skip_corrupt: bool = False,
        seed: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        max_train_samples: int | None = None,
        max_val_samples: int | None = None,
    ) -> None:
        """Arguments are plain values so that LightningCLI can set them from YAML.

        Args:
            dataset: hub id, local directory / parquet glob, or ``"digits"`` (see the class doc).
            revision: hub branch, tag or commit (hub ids only).
            train_split / val_split: split names; ``test_split`` defaults to ``val_split``.
            image_column / label_column: column names of the image and the integer label.
            num_classes: only for label columns that are not a ClassLabel.
            streaming: stream the splits instead of loading them (see the module docs).
            shuffle_buffer_size: examples held by each worker's shuffle buffer when streaming.
            cache_dir: `datasets` cache directory (default: HF_DATASETS_CACHE).
            batch_size: per device; must be even while Mixup/CutMix is on.
            num_workers: loader worker processes per device.
            image_size, crop_pct: train / eval resolution and eval crop; None = from model_name.
            interpolation: resize filter ("random" draws one per image, training only).
            model_name: timm / zoo model name whose pretrained config gives image_size, crop_pct.
            scale, ratio, hflip, vflip: RandomResizedCrop range and flip probabilities.
            auto_augment: timm RandAugment / AutoAugment spec, None to disable.
            color_jitter: ColorJitter strength (timm applies it only without auto_augment).
            reprob, remode, recount: random erasing probability, fill mode and count.
            mean, std: normalisation.
            mixup, cutmix, cutmix_minmax, mixup_prob, mixup_switch_prob, mixup_mode: timm Mixup.
            label_smoothing: given to Mixup when it is active, else left to the LightningModule.
            skip_corrupt: skip (and count and log) undecodable images instead of failing.
            seed: seeds the streaming shuffle and the max_*_samples subsets.
            pin_memory, persistent_workers: DataLoader options (pinning only with CUDA).
            max_train_samples, max_val_samples: use a seeded random subset (smoke tests).
        """
        super().__init__()
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}.")
        if num_workers < 0:
            raise DataError(f"data.num_workers must be >= 0, got {num_workers}.")
        for arg, value in (
            ("max_train_samples", max_train_samples),
            ("max_val_samples", max_val_samples),
        ):
            if value is not None and value < 1:
                raise DataError(f"data.{arg} must be a positive number or null, got {value}.")
        mixing = mixup > 0 or cutmix > 0 or cutmix_minmax is not None
        if mixing and batch_size % 2:
            raise DataError(
                f"data.batch_size={batch_size} is odd, but timm's Mixup/CutMix pairs the samples of "
                f"a batch. Fix: use an even batch size, or set data.mixup: 0 and data.cutmix: 0."
            )
        # num_classes stays out of hparams: Lightning refuses a model and datamodule whose hparams
        # share a key with different values, and the model's num_classes is the resolved count.
        self.save_hyperparameters(ignore=["num_classes"])
        self._label_classes = num_classes
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.mixup_active = bool(mixing)
        self.mixup_fn: Any = None
        self.finisher: BatchFinisher | None = None
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None
        self.train_dataset: MapImageDataset | StreamImageDataset | None = None
        self.val_dataset: MapImageDataset | StreamImageDataset | None = None
        self.test_dataset: MapImageDataset | StreamImageDataset | None = None
        self.image_size: int | None = None
        self.crop_pct: float | None = None
        self._source: Source | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def source(self) -> Source:
        if self._source is None:
            self._source = resolve_source(self.hparams.dataset)
        return self._source

    def _rank_world(self) -> tuple[int, int]:
        trainer = self._trainer_or_none()
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _trainer_or_none(self):
        return getattr(self, "trainer", None)

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
    def prepare_data(self) -> None:
        """Download / convert once per node (Lightning calls this on local rank 0 only)."""
        hp = self.hparams
        if hp.streaming or self.source.kind in ("digits", "disk"):
            return
        for split, arg in self._splits_for("fit"):
            open_split(
                self.source,
                split,
                arg=arg,
                streaming=False,
                revision=hp.revision,
                cache_dir=hp.cache_dir,
            )

    def _splits_for(self, stage: str | None) -> list[tuple[str, str]]:
        hp = self.hparams
        val = (hp.val_split, "val_split")
        test = (hp.test_split, "test_split") if hp.test_split else val
        if stage == "fit":
            return [(hp.train_split, "train_split"), val]
        if stage == "validate":
            return [val]
        if stage in ("test", "predict"):
            return [test]
        return [(hp.train_split, "train_split"), val] + ([test] if test != val else [])

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        self.image_size, self.crop_pct = resolve_eval_geometry(
            hp.model_name, hp.image_size, hp.crop_pct
        )
        eval_tf = build_eval_transform(
            self.image_size,
            crop_pct=self.crop_pct,
            interpolation=hp.interpolation,
            mean=self.mean,
            std=self.std,
        )
        for split, arg in self._splits_for(stage):
            training = arg == "train_split"
            if training and self.train_dataset is not None:
                continue
            if arg == "val_split" and self.val_dataset is not None:
                continue
            if arg == "test_split" and self.test_dataset is not None:
                continue
            ds = self._build(split, arg, training, eval_tf)
            if training:
                self.train_dataset = ds
            elif arg == "val_split":
                self.val_dataset = ds
            else:
                self.test_dataset = ds
        if self.mixup_active and self.num_classes is not None and self.mixup_fn is None:
            from timm.data import Mixup

            self.mixup_fn = Mixup(
                mixup_alpha=hp.mixup,
                cutmix_alpha=hp.cutmix,
                cutmix_minmax=tuple(hp.cutmix_minmax) if hp.cutmix_minmax else None,
                prob=hp.mixup_prob,
                switch_prob=hp.mixup_switch_prob,
                mode=hp.mixup_mode,
                label_smoothing=hp.label_smoothing,
                num_classes=self.num_classes,
            )

    def _train_pipeline(self):
        hp = self.hparams
        return build_train_pipeline(
            self.image_size,
            scale=tuple(hp.scale),
            ratio=tuple(hp.ratio),
            hflip=hp.hflip,
            vflip=hp.vflip,
            auto_augment=hp.auto_augment if hp.auto_augment not in ("", "none", "None") else None,
            color_jitter=hp.color_jitter,
            interpolation=hp.interpolation,
            mean=self.mean,
            std=self.std,
            reprob=hp.reprob,
            remode=hp.remode,
            recount=hp.recount,
        )

    def _build(self, split: str, arg: str, training: bool, eval_tf):
        hp = self.hparams
        name = hp.dataset
        rank, world = self._rank_world()
        workers = max(1, hp.num_workers)
        hf, num_examples = open_split(
            self.source,
            split,
            arg=arg,
            streaming=hp.streaming,
            revision=hp.revision,
            cache_dir=hp.cache_dir,
            num_shards=world * workers,
        )
        hf = prepare_image_column(hf, hp.image_column, hp.label_column, name, split)
        self._set_labels(hf, name, split)
        limit = hp.max_train_samples if training else hp.max_val_samples
        transform, finisher = self._train_pipeline() if training else (eval_tf, None)
        if training:
            self.finisher = finisher
        common = dict(dataset=name, split=split, skip_corrupt=hp.skip_corrupt)
        if not hp.streaming:
            if limit is not None and limit < len(hf):
                generator = torch.Generator().manual_seed(hp.seed)
                keep = torch.randperm(len(hf), generator=generator)[:limit].sort().values
                hf = hf.select(keep.tolist())
            return MapImageDataset(
                hf, hp.image_column, hp.label_column, transform, finisher=finisher, **common
            )
        return self._build_stream(hf, num_examples, limit, training, transform, rank, world, common)

    def _build_stream(self, hf, num_examples, limit, training, transform, rank, world, common):
        from datasets.distributed import split_dataset_by_node

        hp = self.hparams
        if hf.num_shards < world * max(1, hp.num_workers):
            hf = hf.reshard()  # parquet: one shard per row group instead of per file
        if limit is not None:
            hf = hf.take(limit)
            num_examples = limit if num_examples is None else min(limit, num_examples)
        plan = stream_plan(
            num_shards=hf.num_shards,
            world_size=world,
            num_workers=hp.num_workers,
            num_examples=num_examples,
            batch_size=hp.batch_size,
            equalize=training,
        )
        if training:
            # Same seed on every rank: the ranks must agree on the shard permutation. Interleaving
            # several shards per worker improves the shuffle, but `datasets` then reads them with
            # threads and sleeps 5 s whenever such a stream stops (apache/arrow#45214), so it is
            # only used where a worker has several shards to interleave.
            hf = hf.shuffle(
                seed=hp.seed,
                buffer_size=hp.shuffle_buffer_size,
                max_buffer_input_shards=min(10, max(plan.shards_per_worker)),
            )
            if hf.num_shards % world:
                log.warning(
                    "dataset '%s': %d shards are not divisible by world_size=%d, so every rank "
                    "reads all shards and keeps 1 example in %d (correct, but each rank downloads "
                    "everything). Use a world size that divides the shard count.",
                    hp.dataset, hf.num_shards, world, world,
                )  # fmt: skip
            if len(set(plan.shards_per_worker)) > 1 or plan.num_workers < hp.num_workers:
                log.warning(
                    "dataset '%s': each rank reads %d shard(s) with %d loader worker(s); choose "
                    "num_workers dividing the shards per rank so that workers get equal work.",
                    hp.dataset, sum(plan.shards_per_worker), hp.num_workers,
                )  # fmt: skip
        if training and plan.quotas is not None and sum(plan.quotas) == 0:
            raise DataError(
                f"dataset '{hp.dataset}': {num_examples} training examples shared by {world} "
                f"rank(s) x {len(plan.quotas)} worker(s) leave less than one batch of "
                f"{hp.batch_size} per worker. Fix: lower data.batch_size or data.num_workers."
            )
        if world > 1:
            hf = split_dataset_by_node(hf, rank=rank, world_size=world)
        return StreamImageDataset(
            hf,
            hp.image_column,
            hp.label_column,
            transform,
            quotas=plan.quotas,
            rank=rank,
            loader_workers=plan.num_workers,
            **common,
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
    def _loader(self, ds, *, train: bool) -> DataLoader:
        hp = self.hparams
        if ds is None:
            raise DataError(
                "ImageDataModule: call setup() with the matching stage before asking for a loader."
            )
        workers = ds.loader_workers if isinstance(ds, StreamImageDataset) else hp.num_workers
        kwargs: dict[str, Any] = dict(
            batch_size=hp.batch_size,
            num_workers=workers,
            pin_memory=bool(hp.pin_memory and torch.cuda.is_available()),
            persistent_workers=bool(hp.persistent_workers and workers > 0),
            drop_last=train,
        )
        if not train:
            return DataLoader(ds, **kwargs)
        # Under a Trainer the uint8 batches are finished on the device (on_after_batch_transfer);
        # iterated directly, the loader finishes them itself and yields float batches.
        return TrainLoader(
            ds,
            shuffle=not isinstance(ds, StreamImageDataset),
            finisher=None if self._trainer_or_none() is not None else self.finisher,
            epoch_fn=self._current_epoch,
            **kwargs,
        )

    def _current_epoch(self) -> int | None:
        trainer = self._trainer_or_none()
        return int(trainer.current_epoch) if trainer is not None else None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(
            self.test_dataset if self.test_dataset is not None else self.val_dataset, train=False
        )

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: finish uint8 training batches, then Mixup / CutMix while training."""
        images, labels = batch
        if images.dtype == torch.uint8 and self.finisher is not None:
            images = self.finisher(images)
        trainer = self._trainer_or_none()
        if self.mixup_fn is not None and trainer is not None and trainer.training:
            images, labels = self.mixup_fn(images, labels)
        return images, labels

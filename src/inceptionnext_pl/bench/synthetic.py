"""In-memory random images for timing ``lightning fit`` without decoding: the pipeline's ceiling.

:class:`SyntheticImageDataModule` serves whole uint8 batches from a small pool held in (pinned)
host memory, and then does on the device exactly what :class:`~inceptionnext_pl.data.ImageDataModule`
does with its loaders' uint8 batches: normalise and random-erase them (``BatchFinisher``), then
timm's Mixup / CutMix while training. Decoding and per-image augmentation are what is left out,
so its img/s over ImageDataModule's says how much the input pipeline costs.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, BatchFinisher, MixupConfig


class _PooledBatches(Dataset):
    """``length`` batches, cycling over a pool of pre-stacked (images, labels) batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, length: int) -> None:
        self.images, self.labels, self.length = images, labels, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = i % len(self.images)
        return self.images[k], self.labels[k]


class SyntheticImageDataModule(L.LightningDataModule):
    """Random uint8 ``(batch_size, 3, image_size, image_size)`` batches from memory.

    Args:
        batch_size: images per batch (per device).
        image_size: square side.
        num_classes: labels are drawn from ``range(num_classes)``.
        pool_batches: distinct batches kept in memory (they repeat).
        length: batches per epoch (set it above the steps a run takes).
        mean, std: normalisation, as ImageDataModule's.
        augment: only its random-erasing fields are used (the rest acts on decoded images).
        mixup: timm Mixup / CutMix settings; None turns it off.
        label_smoothing: given to Mixup.
        seed: seeds the pool.
    """

    def __init__(
        self,
        batch_size: int = 128,
        image_size: int = 224,
        num_classes: int = 1000,
        pool_batches: int = 4,
        length: int = 100_000,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        augment: AugmentConfig = AugmentConfig(),
        mixup: MixupConfig | None = MixupConfig(),
        label_smoothing: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or image_size < 1 or num_classes < 1 or pool_batches < 1 or length < 1:
            raise ValueError(
                "SyntheticImageDataModule: batch_size, image_size, num_classes, pool_batches and "
                f"length must be positive (got {batch_size}, {image_size}, {num_classes}, "
                f"{pool_batches}, {length})"
            )
        self.batch_size, self.image_size, self.num_classes = batch_size, image_size, num_classes
        self.pool_batches, self.length, self.seed = pool_batches, length, seed
        self.finisher = BatchFinisher(mean, std, augment.reprob, augment.remode, augment.recount)
        self.mixup_config = mixup if mixup is not None and mixup.active else None
        self.label_smoothing = label_smoothing
        self.mixup_fn: Any = None
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def like(cls, dm: Any, num_classes: int = 1000, **overrides: Any) -> SyntheticImageDataModule:
        """The same batch, size, normalisation, erasing and Mixup as ``dm`` (an ImageDataModule)."""
        kwargs: dict[str, Any] = dict(
            batch_size=dm.loader.batch_size,
            image_size=dm.hparams.image_size or 224,
            num_classes=num_classes,
            mean=dm.mean,
            std=dm.std,
            augment=dm.augment,
            mixup=dm.mixup_config,
            label_smoothing=dm.hparams.label_smoothing,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def setup(self, stage: str | None = None) -> None:
        if self._pool is None:
            gen = torch.Generator().manual_seed(self.seed)
            shape = (self.pool_batches, self.batch_size, 3, self.image_size, self.image_size)
            images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
            labels = torch.randint(0, self.num_classes, shape[:2], generator=gen)
            if torch.cuda.is_available():  # pinned once: each batch then copies asynchronously
                images, labels = images.pin_memory(), labels.pin_memory()
            self._pool = images, labels
        if self.mixup_config is not None and self.mixup_fn is None:
            from timm.data import Mixup

            m = self.mixup_config
            self.mixup_fn = Mixup(
                mixup_alpha=m.mixup_alpha,
                cutmix_alpha=m.cutmix_alpha,
                cutmix_minmax=tuple(m.cutmix_minmax) if m.cutmix_minmax else None,
                prob=m.prob,
                switch_prob=m.switch_prob,
                mode=m.mode,
                label_smoothing=self.label_smoothing,
                num_classes=self.num_classes,
            )

    def train_dataloader(self) -> DataLoader:
        if self._pool is None:
            raise RuntimeError("SyntheticImageDataModule: call setup() before asking for a loader")
        # batch_size=None: the dataset yields whole batches; no workers, nothing to decode
        return DataLoader(_PooledBatches(*self._pool, self.length), batch_size=None)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        images = self.finisher(images)
        trainer = getattr(self, "trainer", None)
        if self.mixup_fn is not None and trainer is not None and trainer.training:
            images, labels = self.mixup_fn(images, labels)
        return images, labels

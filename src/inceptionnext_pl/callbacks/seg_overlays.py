"""Prediction overlays of a fixed set of validation images, logged while a segmenter trains."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from ..cam import denormalize
from ..cam.figures import comparison_figure, figure_to_array, save_image
from ..seg.overlays import overlay, palette
from .gradcam import preserved_rng

MAX_IMAGES = 16


class SegmentationOverlays(Callback):
    """Every ``every_n_epochs`` epochs: image, prediction and ground truth of ``num_images``
    fixed validation images, on global rank 0, into ``<log_dir>/<dirname>/epoch_XXX.png`` and
    TensorBoard (``segmentation/overlays``).

    The images are evenly spaced over ``trainer.datamodule.val_dataset`` (items: normalised CHW
    image, HxW int mask); predictions come from ``pl_module(images)`` in eval mode.
    """

    def __init__(
        self, every_n_epochs: int = 1, num_images: int = 6, dirname: str = "overlays"
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be 1 or more")
        if not 1 <= num_images <= MAX_IMAGES:
            raise ValueError(f"num_images={num_images} must be between 1 and {MAX_IMAGES}")
        self.every_n_epochs, self.num_images, self.dirname = every_n_epochs, num_images, dirname
        self.out_dir: Path | None = None
        self.written: list[Path] = []
        self._inputs: torch.Tensor | None = None
        self._masks: np.ndarray | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        self.out_dir = Path(trainer.log_dir or trainer.default_root_dir) / self.dirname
        ds = getattr(trainer.datamodule, "val_dataset", None)
        if ds is None:
            raise ValueError(
                "SegmentationOverlays takes its images from trainer.datamodule.val_dataset: "
                "fit with SegmentationDataModule, or remove the callback."
            )
        if trainer.is_global_zero and self._inputs is None:
            with preserved_rng():
                n = min(self.num_images, len(ds))
                idx = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int))
                items = [ds[int(i)] for i in idx]
            self._inputs = torch.stack([torch.as_tensor(x) for x, _ in items]).float()
            self._masks = np.stack([np.asarray(m) for _, m in items])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._inputs is None:
            return
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        with preserved_rng(), torch.no_grad():
            logits = pl_module(self._inputs.to(pl_module.device))
        pl_module.train(was_training)
        pred = logits.argmax(1).cpu().numpy()
        if pred.shape[-2:] != self._masks.shape[-2:]:
            raise ValueError("SegmentationOverlays needs masks at the image's resolution")
        images = denormalize(self._inputs, dm.mean, dm.std)
        colors = palette(pl_module.hparams.num_classes)
        ignore = pl_module.hparams.ignore_index
        columns = {
            "prediction": np.stack(
                [overlay(i, p, colors, ignore_index=ignore) for i, p in zip(images, pred)]
            ),
            "ground truth": np.stack(
                [overlay(i, m, colors, ignore_index=ignore) for i, m in zip(images, self._masks)]
            ),
        }
        fig = comparison_figure((images * 255).round().astype(np.uint8), columns)
        fig.suptitle(f"epoch {epoch}")
        grid = figure_to_array(fig)
        assert self.out_dir is not None
        self.written.append(save_image(grid, self.out_dir / f"epoch_{epoch:03d}.png"))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    "segmentation/overlays",
                    grid,
                    global_step=trainer.global_step,
                    dataformats="HWC",
                )

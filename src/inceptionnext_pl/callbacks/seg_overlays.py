"""Prediction overlays of a fixed set of validation images, logged while a segmenter trains."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from ..cam import denormalize
from ..cam.figures import comparison_figure, figure_to_array, save_image
from ..seg.overlays import overlay, palette
from .gradcam import preserved_rng

MAX_IMAGES = 16


def _nearest(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0]


class SegmentationOverlays(Callback):
    """Every ``every_n_epochs`` epochs: image, prediction and ground truth of ``num_images``
    fixed validation images, on global rank 0, into ``<log_dir>/<dirname>/epoch_XXX.png`` and
    TensorBoard (``segmentation/overlays``).

    The images are evenly spaced over ``trainer.datamodule.val_dataset`` (items: normalised CHW
    image, HxW int mask, which may keep the original size); predictions come from
    ``pl_module(image)`` in eval mode, one image at a time. Under ``fast_dev_run``, which
    rehearses one validation batch, only the first image is drawn.
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
        self._items: list[tuple[torch.Tensor, torch.Tensor]] | None = None

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
        if trainer.is_global_zero and self._items is None:
            with preserved_rng():
                n = 1 if trainer.fast_dev_run else min(self.num_images, len(ds))
                idx = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int))
                self._items = [
                    (torch.as_tensor(x).float(), torch.as_tensor(m))
                    for x, m in (ds[int(i)] for i in idx)
                ]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._items is None:
            return
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        colors = palette(pl_module.hparams.num_classes)
        ignore = pl_module.hparams.ignore_index
        images, predicted, truth = [], [], []
        was_training = pl_module.training
        pl_module.eval()
        for x, mask in self._items:  # one at a time: evaluation images differ in size
            with preserved_rng(), torch.no_grad():
                pred = pl_module(x[None].to(pl_module.device)).argmax(1)[0].cpu()
            if mask.shape != pred.shape:  # masks kept at the original size: shown at the input's
                mask = _nearest(mask, tuple(pred.shape))
            image = denormalize(x[None], dm.mean, dm.std)[0]
            images.append((image * 255).round().astype(np.uint8))
            predicted.append(overlay(image, pred.numpy(), colors, ignore_index=ignore))
            truth.append(overlay(image, mask.long().numpy(), colors, ignore_index=ignore))
        pl_module.train(was_training)
        columns = {"prediction": predicted, "ground truth": truth}
        fig = comparison_figure(images, columns)
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

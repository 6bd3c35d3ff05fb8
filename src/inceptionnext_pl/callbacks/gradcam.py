"""Grad-CAM maps of a fixed set of validation images, logged while a model trains."""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..cam import (
    CamError,
    compute_cam,
    degenerate_message,
    denormalize,
    find_target_layer,
    resolve_method,
)
from ..cam.figures import figure_to_array, labelled_grid, save_image

MAX_IMAGES = 32  # keeps one call's cost bounded: at most this many images, `batch_size` at a time


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave Python, NumPy and torch (CPU and CUDA) random states as they were."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def network_of(pl_module: pl.LightningModule) -> nn.Module:
    """The plain network inside a LightningModule (``.model`` by this project's convention)."""
    net = getattr(pl_module, "model", None)
    return net if isinstance(net, nn.Module) else pl_module


class GradCAMCallback(Callback):
    """Every ``every_n_epochs`` epochs, Grad-CAM of ``num_images`` fixed validation images.

    Runs at the end of validation on global rank 0 only. Draws a grid (image, overlay, predicted and
    true label) into ``<log_dir>/gradcam/epoch_XXX.png`` and, with a TensorBoardLogger, into the
    logger's images. It leaves training untouched: the model's weights, gradients, BN statistics,
    train/eval mode and every random state are as before (see ``inceptionnext_pl.cam.isolated``).

    The images are evenly spaced over ``trainer.datamodule.val_dataset``, whose items are
    ``(normalised CHW tensor, int label)``; they are shown de-normalised with the datamodule's
    ``mean`` / ``std`` and labelled with its ``class_names`` when it has them.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 8,
        method: str = "gradcam",
        target_layer: str | None = None,
        batch_size: int = 8,
        image_weight: float = 0.5,
        dirname: str = "gradcam",
        log_to_logger: bool = True,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be 1 or more")
        if not 1 <= num_images <= MAX_IMAGES:
            raise ValueError(
                f"num_images={num_images} must be between 1 and {MAX_IMAGES} (a bound on the "
                "callback's cost per epoch)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be 1 or more")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.method = resolve_method(method)
        self.target_layer = target_layer
        self.batch_size = batch_size
        self.image_weight = image_weight
        self.dirname = dirname
        self.log_to_logger = log_to_logger
        self.out_dir: Path | None = None
        self.written: list[Path] = []
        self._inputs: torch.Tensor | None = None
        self._labels: list[int] = []
        self._images: np.ndarray | None = None
        self._class_names: list[str] | None = None
        self._warned = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        # trainer.log_dir broadcasts, so every rank must ask for it: here, not in the rank-0 hook.
        self.out_dir = Path(trainer.log_dir or trainer.default_root_dir) / self.dirname
        dm = trainer.datamodule
        ds = getattr(dm, "val_dataset", None)
        if ds is None:
            raise ValueError(
                "GradCAMCallback takes its images from trainer.datamodule.val_dataset, which "
                f"{'is missing: fit with a datamodule' if dm is None else 'is None after setup'}"
                "; use ImageDataModule (or give your datamodule a `val_dataset`), or remove the "
                "callback."
            )
        if trainer.is_global_zero and self._inputs is None:
            self._load(dm, ds)

    def _check_layer(self, pl_module: pl.LightningModule) -> None:
        # Not in setup(): a LightningModule may build its network in its own setup, which runs later.
        try:
            find_target_layer(network_of(pl_module), self.target_layer)
        except CamError as e:
            raise CamError(f"GradCAMCallback: {e}") from None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_layer(pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._check_layer(pl_module)

    def _load(self, dm: Any, ds: Any) -> None:
        with preserved_rng():
            if isinstance(ds, torch.utils.data.IterableDataset):  # streamed: the first images
                items = list(itertools.islice(iter(ds), self.num_images))
            else:
                n = min(self.num_images, len(ds))
                indices = np.unique(np.linspace(0, len(ds) - 1, n).round().astype(int))
                items = [ds[int(i)] for i in indices]
        self._inputs = torch.stack([torch.as_tensor(x) for x, _ in items]).float()
        self._labels = [int(y) for _, y in items]
        mean = getattr(dm, "mean", None) or IMAGENET_DEFAULT_MEAN
        std = getattr(dm, "std", None) or IMAGENET_DEFAULT_STD
        self._images = denormalize(self._inputs, mean, std)
        names = getattr(dm, "class_names", None)
        self._class_names = list(names) if names else None

    def _name(self, index: int) -> str:
        names = self._class_names
        return names[index] if names and 0 <= index < len(names) else str(index)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._inputs is None:
            return
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        with preserved_rng():
            result = compute_cam(
                network_of(pl_module),
                self._inputs.to(pl_module.device),
                method=self.method,
                target_layer=self.target_layer,
                images=self._images,
                image_weight=self.image_weight,
                batch_size=self.batch_size,
            )
        if result.degenerate and not self._warned:
            self._warned = True
            rank_zero_warn(
                f"GradCAMCallback: {degenerate_message(result.layer, self._inputs.shape[-1])}"
            )
        fig = labelled_grid(
            result.images,
            result.overlays,
            [self._name(int(p)) for p in result.predictions],
            [self._name(y) for y in self._labels],
            title=f"{result.method} @ {result.layer}, epoch {epoch}",
        )
        grid = figure_to_array(fig)
        assert self.out_dir is not None
        self.written.append(save_image(grid, self.out_dir / f"epoch_{epoch:03d}.png"))
        if self.log_to_logger:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(
                        f"gradcam/{self.method}",
                        grid,
                        global_step=trainer.global_step,
                        dataformats="HWC",
                    )

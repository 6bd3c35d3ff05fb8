"""An exponential moving average of the weights, validated beside the raw weights.

Lightning's ``EMAWeightAveraging`` swaps the average in for validation, so a run reports either
the raw or the averaged model, and it copies the average over the model when training ends.
Table 9's fine-tune compares both, so this keeps timm's ``ModelEmaV3`` outside the
LightningModule (DDP never sees it), updates it after every optimizer step and runs it on each
validation batch under the metric prefix ``val_ema``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from timm.utils import ModelEmaV3
from torch import nn

from .batchnorm import reduce_batchnorm_stats

PREFIX = "val_ema"


class EMA(L.Callback):
    """EMA of ``pl_module.model`` (decay per optimizer step; 0.9999 in Table 9's fine-tune).

    The average lives in this callback's checkpoint state (``callbacks["EMA"]["state_dict"]``);
    ``inceptionnext-zoo export last.ckpt out.safetensors --ema`` exports it.
    """

    def __init__(self, decay: float = 0.9999, validate: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay} must be in [0, 1)")
        self.decay, self.validate = decay, validate
        self.ema: ModelEmaV3 | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    state_key = "EMA"  # the average is saved under callbacks[state_key]; one instance per run

    @property
    def module(self) -> nn.Module | None:
        """The averaged network, once training or validation has started."""
        return None if self.ema is None else self.ema.module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "evaluate"):
            raise TypeError(
                f"EMA validates through pl_module.evaluate(batch, prefix, net); "
                f"{type(pl_module).__name__} has none. Use a module from inceptionnext_pl.tasks "
                "or EMA(validate=False)."
            )
        if self.validate and stage in ("fit", "validate"):
            pl_module.add_eval_prefix(PREFIX)

    def _ensure(self, pl_module: L.LightningModule) -> ModelEmaV3:
        if self.ema is None:
            self.ema = ModelEmaV3(pl_module.model, decay=self.decay)
            self.ema.requires_grad_(False)
            if self._pending is not None:
                self.ema.module.load_state_dict(self._pending)
                self._pending = None
        return self.ema

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure(pl_module)  # after pretrained weights and any resumed checkpoint

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        # After the optimizer step (on_before_zero_grad would run before it and lag a step).
        if (idx + 1) % trainer.accumulate_grad_batches == 0 or trainer.is_last_batch:
            self._ensure(pl_module).update(pl_module.model, step=trainer.global_step)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validate:
            reduce_batchnorm_stats(self._ensure(pl_module).module, trainer.world_size)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.validate and not trainer.sanity_checking:
            pl_module.evaluate(batch, PREFIX, net=self._ensure(pl_module).module)

    def state_dict(self) -> dict[str, Any]:
        if self.ema is None:
            return {"decay": self.decay}
        return {"decay": self.decay, "state_dict": self.ema.module.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        weights = state_dict.get("state_dict")
        if weights is None:
            return
        if self.ema is None:
            self._pending = weights
        else:
            self.ema.module.load_state_dict(weights)

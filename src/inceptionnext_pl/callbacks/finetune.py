"""Train the new head alone first, then everything (transfer learning)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info
from torch.optim import Optimizer


class FreezeBackbone(BaseFinetuning):
    """Freeze the backbone for the first ``epochs`` epochs.

    Lightning's own finetuning callbacks freeze with ``requires_grad=False`` before DDP wraps
    the model, so the parameters they unfreeze later are never all-reduced (Lightning issue
    #20340). Here the backbone keeps its gradients and DDP buckets; its parameter groups (tagged
    ``backbone`` by :func:`inceptionnext_pl.optim.param_groups`) get LR 0, which stops AdamW
    and its weight decay, through the timm scheduler's ``lr_scale``. BatchNorm statistics keep
    adapting to the new data.
    """

    def __init__(self, epochs: int = 1) -> None:
        super().__init__()
        if epochs < 0:
            raise ValueError(f"FreezeBackbone epochs={epochs} must be >= 0")
        self.epochs = epochs

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        """Nothing to do: freezing is an LR of 0 from the first epoch (see the class docstring)."""

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        trainer = pl_module.trainer
        frozen = epoch < self.epochs
        tagged = [g for g in optimizer.param_groups if "backbone" in g]
        if not tagged:
            raise ValueError(
                "FreezeBackbone needs parameter groups tagged `backbone`: build them with "
                "inceptionnext_pl.optim.param_groups(model, ..., head=...)."
            )
        stepped_by_scheduler = bool(trainer.lr_scheduler_configs)
        for g in tagged:
            if not g["backbone"]:
                continue
            g.setdefault("unfrozen_lr_scale", g.get("lr_scale", 1.0))
            g.setdefault("unfrozen_lr", g["lr"])
            g["lr_scale"] = 0.0 if frozen else g["unfrozen_lr_scale"]
            if frozen:
                g["lr"] = 0.0
            elif not stepped_by_scheduler:
                g["lr"] = g["unfrozen_lr"]
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "step_update"):  # timm's: apply lr_scale now
                config.scheduler.step_update(num_updates=trainer.global_step)
        if frozen and epoch == 0:
            rank_zero_info(f"Backbone frozen for {self.epochs} epoch(s): only the head trains")

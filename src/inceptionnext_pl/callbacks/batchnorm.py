"""BatchNorm statistics averaged across ranks before validation (timm's ``--dist-bn reduce``)."""

from __future__ import annotations

import lightning as L
import torch.distributed as dist
from torch import nn

_STATS = ("running_mean", "running_var")


def reduce_batchnorm_stats(module: nn.Module, world_size: int) -> int:
    """All-reduce (mean) every BatchNorm running statistic of ``module``; returns how many.

    A no-op outside an initialised process group of more than one rank.
    """
    if world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return 0
    n = 0
    for name, buf in module.named_buffers():
        if name.endswith(_STATS):
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf /= world_size
            n += 1
    return n


class ReduceBatchNorm(L.Callback):
    """Average BatchNorm running statistics across ranks before every validation.

    Under DDP each rank's statistics follow its own shard of the data; without this (or
    ``trainer.sync_batchnorm: true``) rank 0 validates, and saves, its own drifting copy.
    InceptionNeXt uses BatchNorm, so this is on by default (``model.dist_bn: reduce``).
    """

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reduce_batchnorm_stats(pl_module, trainer.world_size)

"""ImageClassifier: a LightningModule around any model that ``create_model`` knows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..models import check_model_name, create_model
from ..optim import LR_BASE_BATCH, ScheduleName
from .base import DistBN, TaskModule, check_range, check_recipe


class ImageClassifier(TaskModule):
    """Image classification with the paper's recipe (Table 9).

    Args:
        model_name: any name ``inceptionnext_pl.create_model`` builds (ours or timm's).
        num_classes: head size; ``None`` takes it from the datamodule (the network is then
            built, and its pretrained weights loaded, in ``setup``).
        pretrained: zoo name, checkpoint file or run directory (its newest ``last.ckpt``). Loaded
            when the network is built: the backbone always, the classifier when its class count
            matches. A checkpoint that Lightning restores (``--ckpt_path``) replaces it.
        drop_path_rate, drop_rate: stochastic depth and head dropout.
        model_kwargs: further keyword arguments for ``create_model`` (e.g. ``ls_init_value``,
            ``band_kernel_size``, ``norm``).
        base_lr: learning rate per ``lr_base_batch`` (1024) images; scaled by the global batch.
        warmup_epochs, warmup_lr, min_lr, cooldown_epochs: linear warmup, then cosine,
            stepped per optimizer step.
        layer_decay: layer-wise LR decay for fine-tuning (timm's grouping), ``None`` for off.
        freeze_backbone_epochs: train only the classifier for this many epochs
            (:class:`~inceptionnext_pl.callbacks.FreezeBackbone`).
        label_smoothing: used when targets are hard labels (Mixup smooths its own).
        ema_decay: keep an EMA of the weights and validate it beside the raw weights
            (:class:`~inceptionnext_pl.callbacks.EMA`, metrics ``val_ema/*``).
        dist_bn: ``reduce`` averages BatchNorm buffers across ranks before validation;
            ``none`` leaves them (use ``trainer.sync_batchnorm: true`` to sync every step).
        channels_last, compile: speed options.
    """

    def __init__(
        self,
        model_name: str = "inceptionnext_tiny",
        num_classes: int | None = None,
        pretrained: str | None = None,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adamw",
        base_lr: float = 1e-3,
        lr_base_batch: int = LR_BASE_BATCH,
        weight_decay: float = 0.05,
        opt_eps: float = 1e-8,
        betas: Sequence[float] = (0.9, 0.999),
        scheduler: ScheduleName = "cosine",
        warmup_epochs: float = 20.0,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-5,
        cooldown_epochs: int = 0,
        layer_decay: float | None = None,
        freeze_backbone_epochs: int = 0,
        label_smoothing: float = 0.1,
        ema_decay: float | None = None,
        dist_bn: DistBN = "reduce",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        check_model_name(model_name)
        self.save_hyperparameters()
        check_recipe(self.hparams)
        check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        check_range("drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        self.train_loss = SoftTargetCrossEntropy()
        if num_classes is not None:
            self.build(num_classes)

    # ---------------------------------------------------------------- pieces
    def build_network(self, num_classes: int) -> nn.Module:
        hp = self.hparams
        kwargs = dict(num_classes=num_classes, **(hp.model_kwargs or {}))
        if hp.drop_path_rate:
            kwargs["drop_path_rate"] = hp.drop_path_rate
        if hp.drop_rate:
            kwargs["drop_rate"] = hp.drop_rate
        return create_model(hp.model_name, **kwargs)

    task = "classification"

    def network_arch(self) -> dict[str, Any]:
        hp = self.hparams
        return dict(
            model_name=hp.model_name,
            num_classes=hp.num_classes,
            model_kwargs=dict(hp.model_kwargs or {}),
        )

    def load_pretrained_weights(self, source: str) -> Any:
        from ..zoo import load_pretrained

        return load_pretrained(self.model, source)

    def head_parameter_names(self) -> list[str]:
        from ..zoo import split_parameters

        return split_parameters(self.model)[1]

    def make_metrics(self) -> MetricCollection:
        n = self.hparams.num_classes
        return MetricCollection(
            {
                "acc1": MulticlassAccuracy(n, top_k=1),
                "acc5": MulticlassAccuracy(n, top_k=min(5, n)),
            },
            compute_groups=False,
        )

    # ----------------------------------------------------------------- steps
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare_input(x))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        if y.ndim == 2:  # Mixup/CutMix soft targets (already label-smoothed by Mixup)
            loss = self.train_loss(logits, y)
        else:
            loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0]
        )
        return loss

    def evaluate(self, batch: Any, prefix: str, net: nn.Module | None = None) -> None:
        x, y = batch
        logits = (net or self.model)(self.prepare_input(x))
        metrics = self.metrics_for(prefix)
        metrics.update(logits, y)
        n = x.shape[0]
        self.log(f"{prefix}/loss", F.cross_entropy(logits, y), sync_dist=True, batch_size=n)
        for name, metric in metrics.items():
            self.log(f"{prefix}/{name}", metric, prog_bar=name == "acc1", batch_size=n)

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        probs = self(x).softmax(-1)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1)
        return {"probs": top.values, "classes": top.indices}

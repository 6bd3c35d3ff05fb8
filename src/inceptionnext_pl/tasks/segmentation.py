"""SemanticSegmenter: the paper's ADE20K experiments (Sec. 4.2, Tables 6, 7 and 10)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ..errors import ConfigError
from ..models import check_model_name
from ..optim import ScheduleName
from ..seg.heads import StageNorm
from ..seg.inference import aug_test_log_probs, resize, slide_logits
from ..seg.networks import (
    POOLED_BATCHNORM,
    build_segmentation_net,
    check_decoder,
    stage_wise_layer_ids,
)
from .base import DistBN, TaskModule, check_range, check_recipe

Inference = Literal["whole", "slide"]


@contextlib.contextmanager
def exact_bincount() -> Iterator[None]:
    """Deterministic mode off for a block of unweighted bincounts, then back as it was.

    Under ``torch.use_deterministic_algorithms(True)`` (``trainer.deterministic``) torchmetrics
    counts the confusion matrix with a one-hot of pixels x classes^2 (60 GB for one 512x683 ADE20K
    image) instead of ``torch.bincount``, whose unweighted counts are exact in any order.
    """
    if not torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)


class SemanticSegmenter(TaskModule):
    """Semantic segmentation: any of smp's decoders over any ``features_only`` backbone.

    Args:
        backbone: ours (``inceptionnext_tiny``, ...) or timm's ResNet, ConvNeXt, Swin.
        decoder: the paper's ``fpn`` (Table 7: 256 pyramid / 128 segmentation channels, mmseg's
            3x3 output convs) or ``upernet`` (Table 6: 512 channels, auxiliary FCN head on stage
            3 in training, loss weight ``aux_weight``), or any other architecture of smp
            (``deeplabv3plus``, ``unet``, ``segformer``, ...; ``seg.networks.DECODERS``).
        decoder_channels: a narrower head for small inputs (the demo); None: the paper's, or
            smp's default width.
        output_stride: 16 or 8 dilates the backbone's last stages (DeepLab); None: the
            decoder's default (32; DeepLabV3+ 16).
        decoder_kwargs: further arguments of smp's architecture (``decoder_atrous_rates``, ...).
        stage_norm: a norm on each stage output of the backbone; ``auto`` takes its family's
            (SyncBN under ``sync_batchnorm`` for InceptionNeXt, LayerNorm for ConvNeXt and Swin,
            none for ResNet), which start fresh over pretrained weights.
        num_classes: ``None`` takes it from the datamodule (150 for ADE20K).
        ignore_index: label that counts neither in the loss nor in the metrics.
        pretrained: ImageNet weights of the backbone: a zoo entry, a checkpoint file or the run
            directory of an ImageClassifier run. Loaded exactly into the encoder.
        drop_path_rate: the backbone's stochastic depth (Table 10).
        backbone_kwargs: further ``timm.create_model`` arguments of the backbone.
        inference: ``whole`` image or mmseg's ``slide`` windows (``slide_crop``, ``slide_stride``).
        test_scales, test_flip: mmseg's aug test (Table 6): the image at each scale (a ratio of
            its evaluated size), and mirrored, softmax scores averaged. Used by ``lightning
            validate``, ``test`` and ``predict``; validation during ``fit`` stays single scale.
            None and False: single scale.
        base_lr: LR per ``lr_base_batch`` images (6e-5 at 16 for UperNet, 2e-4 at 32 for FPN).
        layer_decay: ConvNeXt's stage-wise LR decay (its UperNet recipe: 0.9): stem and
            downsampling layers x decay^7, stage i x decay^(6-i), stage norms and heads x 1.
        scheduler, poly_power, warmup_steps, warmup_lr, min_lr: poly decay after linear warmup.
        The remaining recipe arguments are those of ImageClassifier.
    """

    def __init__(
        self,
        backbone: str = "inceptionnext_tiny",
        decoder: str = "fpn",
        decoder_channels: int | None = None,
        output_stride: int | None = None,
        decoder_kwargs: dict[str, Any] | None = None,
        stage_norm: StageNorm = "auto",
        num_classes: int | None = None,
        ignore_index: int = 255,
        pretrained: str | None = None,
        drop_path_rate: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
        aux_weight: float = 0.4,
        inference: Inference = "whole",
        slide_crop: int = 512,
        slide_stride: int = 341,
        test_scales: Sequence[float] | None = None,
        test_flip: bool = False,
        optimizer: str = "adamw",
        base_lr: float = 2e-4,
        lr_base_batch: int = 32,
        weight_decay: float = 1e-4,
        opt_eps: float = 1e-8,
        betas: Sequence[float] = (0.9, 0.999),
        scheduler: ScheduleName = "poly",
        poly_power: float = 0.9,
        warmup_steps: int = 0,
        warmup_lr: float = 1e-6,
        min_lr: float = 0.0,
        layer_decay: float | None = None,
        freeze_backbone_epochs: int = 0,
        ema_decay: float | None = None,
        dist_bn: DistBN = "reduce",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        check_model_name(backbone)
        self.save_hyperparameters()
        check_recipe(self.hparams)
        check_range("aux_weight", aux_weight, 0.0, None)
        check_range("warmup_steps", warmup_steps, 0, None)
        check_decoder(decoder, output_stride)
        for scale in test_scales or ():
            check_range("test_scales", scale, 0.0, None, low_open=True)
        if num_classes is not None:
            self.build(num_classes)

    # ---------------------------------------------------------------- pieces
    def _backbone_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.hparams.backbone_kwargs or {})
        if self.hparams.drop_path_rate:
            kwargs["drop_path_rate"] = self.hparams.drop_path_rate
        return kwargs

    def build_network(self, num_classes: int) -> nn.Module:
        hp = self.hparams
        return build_segmentation_net(
            hp.backbone,
            hp.decoder,
            num_classes,
            decoder_channels=hp.decoder_channels,
            output_stride=hp.output_stride,
            decoder_kwargs=hp.decoder_kwargs,
            stage_norm=hp.stage_norm,
            **self._backbone_kwargs(),
        )

    task = "segmentation"

    def network_arch(self) -> dict[str, Any]:
        hp = self.hparams
        return dict(
            backbone=hp.backbone,
            backbone_kwargs=dict(hp.backbone_kwargs or {}),
            decoder=hp.decoder,
            num_classes=hp.num_classes,
            decoder_channels=hp.decoder_channels,
            output_stride=hp.output_stride,
            decoder_kwargs=dict(hp.decoder_kwargs or {}),
            stage_norm=hp.stage_norm,
        )

    def load_pretrained_weights(self, source: str) -> Any:
        from ..seg.weights import load_backbone

        report, n = load_backbone(
            self.model.encoder, self.hparams.backbone, source, **self._backbone_kwargs()
        )
        return f"{n} encoder tensors ({report})"

    def head_parameter_names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters() if not n.startswith("encoder.")]

    def layer_ids(self) -> dict[str, int] | None:
        return stage_wise_layer_ids(self.model) if self.hparams.layer_decay else None

    def schedule_steps(self, steps_per_epoch: int) -> tuple[float, int]:
        return self.hparams.warmup_steps, 0

    def make_metrics(self) -> MetricCollection:
        n, ignore = self.hparams.num_classes, self.hparams.ignore_index
        # mmseg's definitions: per-class IoU and accuracy averaged over the classes present.
        return MetricCollection(
            {
                "mIoU": MulticlassJaccardIndex(n, average="macro", ignore_index=ignore),
                "mAcc": MulticlassAccuracy(n, average="macro", ignore_index=ignore),
                "aAcc": MulticlassAccuracy(n, average="micro", ignore_index=ignore),
            },
            compute_groups=False,
        )

    def on_train_start(self) -> None:
        # A global pooling branch normalises 1x1 maps: BatchNorm needs 2+ values per channel,
        # from the batch or, with SyncBatchNorm, from the other devices (after DDP wraps).
        decoder = self.hparams.decoder
        if decoder not in POOLED_BATCHNORM or self._batch_size() > 1:
            return
        synced = self.trainer.world_size > 1 and any(
            isinstance(m, nn.SyncBatchNorm) for m in self.model.modules()
        )
        if not synced:
            raise ConfigError(
                f"model.decoder={decoder} cannot train on 1 image per step: its pooling branch "
                "applies BatchNorm to 1x1 maps. Fix: data.loader.batch_size 2 or more, or several "
                "devices with trainer.sync_batchnorm: true."
            )

    # ----------------------------------------------------------------- steps
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes, H, W) at the input resolution, by the configured inference."""
        return self.infer(self.model, x)

    def aug_test(self) -> bool:
        """Whether this call runs the multi-scale + flip test: set, and outside ``fit``."""
        hp = self.hparams
        if not (hp.test_scales or hp.test_flip) or self._trainer is None:
            return False
        return self.trainer.state.fn in (
            TrainerFn.VALIDATING,
            TrainerFn.TESTING,
            TrainerFn.PREDICTING,
        )

    def infer(
        self, net: nn.Module, x: torch.Tensor, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Logits at ``size`` (default: the input's); log mean probabilities under the aug test."""
        x = self.prepare_input(x)
        hp = self.hparams

        def logits(image: torch.Tensor) -> torch.Tensor:
            if hp.inference == "slide":
                return slide_logits(net, image, hp.num_classes, hp.slide_crop, hp.slide_stride)
            return net(image)

        if self.aug_test():
            scales = hp.test_scales or (1.0,)
            return aug_test_log_probs(logits, x, scales, hp.test_flip, size)
        return resize(logits(x), size or x.shape[-2:])

    def _loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), mask, ignore_index=self.hparams.ignore_index)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, mask = batch
        logits, aux = self.model.forward_train(self.prepare_input(x))
        loss = self._loss(logits, mask)
        n = x.shape[0]
        if aux is not None:
            aux_loss = self._loss(aux, mask)
            self.log("train/aux_loss", aux_loss, on_step=True, on_epoch=True, batch_size=n)
            loss = loss + self.hparams.aux_weight * aux_loss
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def evaluate(self, batch: Any, prefix: str, net: nn.Module | None = None) -> None:
        x, mask = batch
        # masks are evaluated at their own resolution
        logits = self.infer(net or self.model, x, mask.shape[-2:])
        metrics = self.metrics_for(prefix)
        with exact_bincount():
            metrics.update(logits.argmax(1), mask)
        n = x.shape[0]
        self.log(f"{prefix}/loss", self._loss(logits, mask), sync_dist=True, batch_size=n)
        for name, metric in metrics.items():
            self.log(f"{prefix}/{name}", metric, prog_bar=name == "mIoU", batch_size=n)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x).argmax(1)

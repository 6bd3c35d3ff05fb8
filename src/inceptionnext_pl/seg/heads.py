"""mmsegmentation's heads, where smp's differ: the Semantic FPN, the classifier with its dropout,
the auxiliary FCN head, mmseg's weight init, and the per-stage output norms of each backbone.

References: mmseg 0.x ``models/necks/fpn.py``, ``decode_heads/fpn_head.py``, ``fcn_head.py`` and
``decode_head.py`` (the heads of PoolFormer's, Swin's and ConvNeXt's segmentation configs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import Conv2dReLU
from timm.layers import LayerNorm2d
from torch import nn

StageNorm = Literal["auto", "batchnorm", "layernorm", "none"]
# The norm each family's segmentation backbone puts on its stage outputs, by name prefix:
# InceptionNeXt SyncBN (sail-sg/inceptionnext issue #10); ConvNeXt LayerNorm, eps 1e-6
# (facebookresearch/ConvNeXt semantic_segmentation/backbone/convnext.py); Swin LayerNorm
# (SwinTransformer/Swin-Transformer-Semantic-Segmentation mmseg/models/backbones/swin_transformer.py,
# eps 1e-5 there; ConvNeXt's 1e-6 is used for both).
FAMILY_STAGE_NORMS: tuple[tuple[str, StageNorm], ...] = (
    ("inceptionnext", "batchnorm"),
    ("convnext", "layernorm"),
    ("swin", "layernorm"),
)
CLASSIFIER_DROPOUT = 0.1  # mmseg's dropout_ratio in every head of the paper's configs


def family_stage_norm(backbone: str) -> StageNorm:
    """The stage-output norm of ``backbone``'s family; ``none`` for the rest (ResNet)."""
    return next((n for prefix, n in FAMILY_STAGE_NORMS if backbone.startswith(prefix)), "none")


class StageNorms(nn.Module):
    """A norm on each stage output (strides 4-32) of an smp encoder's feature list."""

    def __init__(self, channels: Sequence[int], kind: StageNorm) -> None:
        super().__init__()
        if kind not in ("batchnorm", "layernorm", "none"):
            raise ValueError(f"stage norm {kind!r} is unknown; use batchnorm, layernorm or none")
        eps = {"layernorm": 1e-6}.get(kind, 1e-5)
        layer = {"batchnorm": nn.BatchNorm2d, "layernorm": LayerNorm2d}.get(kind)
        # smp's list: the input and stride 2 first (no stage), then one level per stage.
        self.norms = nn.ModuleList(
            nn.Identity() if i < 2 or layer is None else layer(c, eps=eps)
            for i, c in enumerate(channels)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [norm(f) for norm, f in zip(self.norms, features)]


def mmseg_init(module: nn.Module) -> None:
    """mmcv's ConvModule init: Kaiming normal (fan out, ReLU) convs with zero bias, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ClassifierHead(nn.Sequential):
    """mmseg's ``cls_seg``: dropout, then a 1x1 conv to the classes.

    PyTorch's default init, not mmseg's normal(std=0.01): the small weights pass little gradient
    back at first, which 160k iterations absorb but the 8-epoch demo does not (it stayed at
    background when tried).
    """

    def __init__(self, channels: int, num_classes: int, dropout: float = CLASSIFIER_DROPOUT):
        super().__init__(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


class AuxFCNHead(nn.Module):
    """mmseg's auxiliary FCNHead: 3x3 conv-BN-ReLU, then the classifier (training only)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int) -> None:
        super().__init__()
        self.conv = Conv2dReLU(in_channels, channels, 3, padding=1)
        mmseg_init(self.conv)
        self.cls = ClassifierHead(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.conv(x))


class SemanticFPNDecoder(nn.Module):
    """Semantic FPN: mmseg's FPN neck (1x1 laterals, nearest top-down sums, 3x3 outputs) and
    FPNHead (per level, conv-BN-ReLU and 2x bilinear steps down to stride 4, summed).

    Any input size works: each level is resized to the size of the next, not doubled.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        pyramid_channels: int,
        segmentation_channels: int,
        strides: Sequence[int] = (4, 8, 16, 32),
    ) -> None:
        super().__init__()
        in_channels = list(encoder_channels)[-len(strides) :]
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(pyramid_channels, pyramid_channels, 3, padding=1) for _ in in_channels
        )
        for conv in (*self.lateral_convs, *self.fpn_convs):  # mmseg's FPN: xavier uniform
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            steps = max(1, int(math.log2(stride) - math.log2(strides[0])))
            layers: list[nn.Module] = []
            for k in range(steps):
                c_in = pyramid_channels if k == 0 else segmentation_channels
                layers.append(Conv2dReLU(c_in, segmentation_channels, 3, padding=1))
                if stride != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        mmseg_init(self.scale_heads)
        self.out_channels = segmentation_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [
            conv(f) for conv, f in zip(self.lateral_convs, features[-len(self.fpn_convs) :])
        ]
        for i in range(len(laterals) - 1, 0, -1):
            size = laterals[i - 1].shape[-2:]
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=size, mode="nearest"
            )
        pyramid = [conv(p) for conv, p in zip(self.fpn_convs, laterals)]
        out = self.scale_heads[0](pyramid[0])
        for head, p in zip(self.scale_heads[1:], pyramid[1:]):
            out = out + F.interpolate(
                head(p), size=out.shape[-2:], mode="bilinear", align_corners=False
            )
        return out

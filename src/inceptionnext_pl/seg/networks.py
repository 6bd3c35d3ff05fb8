"""Segmentation networks: smp's decoders over any ``features_only`` backbone.

segmentation-models-pytorch builds the encoder (``tu-<timm name>``, ours included) and every
decoder. The paper's two (Tables 6 and 7) get what smp lacks of mmsegmentation's heads: the
3x3 output conv that mmseg's FPN neck puts on every pyramid level, and UperNet's auxiliary FCN
head on stage 3. smp's other architectures (DeepLabV3+, U-Net, SegFormer, ...) are smp's own.

Any input size works: the FPN's top-down sums need sides divisible by the encoder's stride (32),
so its input is padded bottom and right to the next multiple and the logits cropped back (mmseg
pads the same way); so is every smp decoder that asks for divisible sides. UperNet resizes each
level to the next and takes the image as it is.
"""

from __future__ import annotations

import inspect
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from torch import nn

from ..errors import ConfigError

PAPER_DECODERS = ("fpn", "upernet")  # mmseg's heads, built here over smp's
VIT_ONLY = ("dpt",)  # its decoder reads a ViT's prefix tokens
DECODERS = PAPER_DECODERS + tuple(
    a for a in smp.MODEL_ARCHITECTURES_MAPPING if a not in PAPER_DECODERS + VIT_ONLY
)
# Decoders that add each level to the upsampled next one, so need every stride up to 32.
FULL_PYRAMID = ("fpn", "unetplusplus", "manet", "linknet")
# Decoders whose global pooling feeds BatchNorm a 1x1 map: training needs 2+ images per norm.
POOLED_BATCHNORM = ("upernet", "deeplabv3", "deeplabv3plus", "pan")
# smp's argument for a decoder's width, in the order looked for; a sequence default is halved
# level by level from ``decoder_channels`` (U-Net's 256, 128, 64, 32, 16).
WIDTH_ARGS = ("decoder_channels", "decoder_segmentation_channels", "psp_out_channels")
# mmseg's head settings (Semantic FPN: PoolFormer/PVT configs; UperNet: Swin/ConvNeXt configs).
FPN_PYRAMID, FPN_SEGMENTATION, FPN_DROPOUT = 256, 128, 0.1
UPERNET_CHANNELS, AUX_CHANNELS, AUX_STAGE = 512, 256, 2


class FPNNeckDecoder(FPNDecoder):
    """smp's FPN decoder with mmseg's 3x3 conv on each pyramid level after the top-down sum."""

    def __init__(self, encoder_channels: list[int], **kwargs: Any) -> None:
        super().__init__(encoder_channels, **kwargs)
        p = self.p5.out_channels
        self.fpn_convs = nn.ModuleList(nn.Conv2d(p, p, 3, padding=1) for _ in range(4))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        c2, c3, c4, c5 = features[-4:]
        p5 = self.p5(c5)
        p4 = self.p4(p5, c4)
        p3 = self.p3(p4, c3)
        p2 = self.p2(p3, c2)
        pyramid = [conv(p) for conv, p in zip(self.fpn_convs, (p5, p4, p3, p2))]
        x = self.merge([blk(p) for blk, p in zip(self.seg_blocks, pyramid)])
        return self.dropout(x)


class AuxFCNHead(nn.Module):
    """mmseg's auxiliary FCNHead: 3x3 conv-BN-ReLU, dropout, 1x1 classifier (training only)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = AUX_CHANNELS) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.drop = nn.Dropout2d(0.1)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.drop(self.conv(x)))


def fixed_input_size(encoder: nn.Module) -> tuple[int, int] | None:
    """The (h, w) a backbone was built for when it takes no other size (timm's Swin, ViT)."""
    for m in encoder.modules():
        if getattr(m, "strict_img_size", False) and getattr(m, "img_size", None) is not None:
            return tuple(m.img_size)
    return None


class SegmentationNet(nn.Module):
    """Encoder, decoder and head from smp, plus the optional auxiliary head.

    ``forward`` returns logits at the input resolution; ``forward_train`` also returns the
    auxiliary logits (or None). Inputs are padded (bottom, right, zeros) to a multiple of
    ``size_divisor``, or to the backbone's fixed size, and the logits cropped back.
    """

    def __init__(
        self, base: smp.base.SegmentationModel, aux_head: nn.Module | None, size_divisor: int = 1
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = base.encoder, base.decoder
        self.segmentation_head = base.segmentation_head
        self.aux_head = aux_head
        self.size_divisor = size_divisor
        self.fixed_size = fixed_input_size(self.encoder)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the network runs at for a (height, width) input."""
        if self.fixed_size is not None:
            fh, fw = self.fixed_size
            if height > fh or width > fw:
                raise ConfigError(
                    f"the backbone is built for {fh}x{fw} inputs and cannot take {height}x{width}. "
                    f"Fix: evaluate in windows (model.inference: slide, model.slide_crop: {fh}), "
                    f"or build it for the size (model.backbone_kwargs.img_size)."
                )
            return fh, fw
        d = self.size_divisor
        return -(-height // d) * d, -(-width // d) * d

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        return x if (ph, pw) == (h, w) else F.pad(x, (0, pw - w, 0, ph - h))

    @staticmethod
    def _resize(logits: torch.Tensor, like: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Logits at the padded input's resolution, cropped to the input's ``size``."""
        if logits.shape[-2:] != like.shape[-2:]:
            logits = F.interpolate(
                logits, size=like.shape[-2:], mode="bilinear", align_corners=False
            )
        return logits[..., : size[0], : size[1]]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = x.shape[-2:]
        padded = self._pad(x)
        features = self.encoder(padded)
        logits = self._resize(self.segmentation_head(self.decoder(features)), padded, size)
        if self.aux_head is None:
            return logits, None
        # features: the input, stride 2 (empty for 4-stage nets), then strides 4, 8, 16, 32.
        aux = self.aux_head(features[2 + AUX_STAGE])
        return logits, self._resize(aux, padded, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = self._pad(x)
        logits = self.segmentation_head(self.decoder(self.encoder(padded)))
        return self._resize(logits, padded, x.shape[-2:])


def check_decoder(decoder: str, output_stride: int | None = None) -> None:
    """One error for a decoder name this project cannot build, or a stride it cannot take."""
    if decoder not in DECODERS:
        raise ConfigError(
            f"model.decoder={decoder!r} is unknown; use one of: {', '.join(DECODERS)}"
        )
    if output_stride not in (None, 32) and decoder in FULL_PYRAMID:
        raise ConfigError(
            f"model.decoder={decoder} needs every level down to stride 32, not "
            f"model.output_stride={output_stride}. Fix: output_stride 32 (or null), or a decoder "
            f"for dilated backbones: {', '.join(d for d in DECODERS if d not in FULL_PYRAMID)}."
        )


def _paper_decoder(
    decoder: str,
    encoder: str,
    num_classes: int,
    decoder_channels: int | None,
    backbone_kwargs: dict[str, Any],
) -> smp.base.SegmentationModel:
    """Semantic FPN (with mmseg's output convs) or UperNet, at the paper's widths by default."""
    if decoder == "upernet":
        return smp.UPerNet(
            encoder_name=encoder,
            encoder_weights=None,
            classes=num_classes,
            decoder_channels=decoder_channels or UPERNET_CHANNELS,
            **backbone_kwargs,
        )
    pyramid = decoder_channels or FPN_PYRAMID
    segmentation = decoder_channels // 2 if decoder_channels else FPN_SEGMENTATION
    base = smp.FPN(
        encoder_name=encoder,
        encoder_weights=None,
        classes=num_classes,
        decoder_pyramid_channels=pyramid,
        decoder_segmentation_channels=segmentation,
        decoder_dropout=FPN_DROPOUT,
        **backbone_kwargs,
    )
    base.decoder = FPNNeckDecoder(
        base.encoder.out_channels,
        encoder_depth=5,
        pyramid_channels=pyramid,
        segmentation_channels=segmentation,
        dropout=FPN_DROPOUT,
    )
    return base


def _smp_decoder(
    decoder: str,
    encoder: str,
    num_classes: int,
    decoder_channels: int | None,
    output_stride: int | None,
    decoder_kwargs: dict[str, Any],
    backbone_kwargs: dict[str, Any],
) -> smp.base.SegmentationModel:
    """smp's architecture ``decoder`` over ``encoder``; ``decoder_kwargs`` win over the rest."""
    cls = smp.MODEL_ARCHITECTURES_MAPPING[decoder]
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if decoder_channels is not None:
        width = next((a for a in WIDTH_ARGS if a in params), None)
        if width is None:
            raise ConfigError(
                f"model.decoder={decoder} has no width to set with model.decoder_channels "
                "(its width follows the encoder). Fix: decoder_channels: null."
            )
        default = params[width].default
        kwargs[width] = (
            [max(decoder_channels >> i, 1) for i in range(len(default))]
            if isinstance(default, list | tuple)
            else decoder_channels
        )
    if output_stride is not None:
        # DeepLab and PAN take the stride themselves; the others pass it to the encoder.
        key = "encoder_output_stride" if "encoder_output_stride" in params else "output_stride"
        kwargs[key] = output_stride
    return cls(
        encoder_name=encoder,
        encoder_weights=None,
        classes=num_classes,
        **{**kwargs, **decoder_kwargs},
        **backbone_kwargs,
    )


def build_segmentation_net(
    backbone: str,
    decoder: str,
    num_classes: int,
    aux_head: bool | None = None,
    decoder_channels: int | None = None,
    output_stride: int | None = None,
    decoder_kwargs: dict[str, Any] | None = None,
    **backbone_kwargs: Any,
) -> SegmentationNet:
    """The ``decoder`` head over ``backbone`` (any name with ``features_only``, ours or timm's).

    ``decoder`` is one of ``DECODERS``: the paper's ``fpn`` and ``upernet`` (mmseg's heads), or
    any of smp's other architectures. ``backbone_kwargs`` go to ``timm.create_model``
    (``drop_path_rate`` of Table 10, ...); ``aux_head`` defaults to True for UperNet, as in
    mmseg. ``decoder_channels`` narrows the head for small inputs (FPN: pyramid channels, half of
    them for segmentation; UperNet: its channels; smp's: their width argument); None keeps the
    paper's 256/128 and 512, and smp's defaults. ``output_stride`` (8, 16) dilates the backbone's
    last stages; None keeps the decoder's default (32, DeepLabV3+ 16). ``decoder_kwargs`` are
    further arguments of smp's architecture (``decoder_atrous_rates``, ...), not of the paper's.
    """
    check_decoder(decoder, output_stride)
    name = f"tu-{backbone}"
    if decoder in PAPER_DECODERS:
        if decoder_kwargs:
            raise ConfigError(
                f"model.decoder_kwargs are arguments of smp's architectures; the paper's "
                f"{decoder} head is set by model.decoder_channels. Fix: decoder_kwargs: null."
            )
        if output_stride is not None:
            backbone_kwargs = {**backbone_kwargs, "output_stride": output_stride}
        base = _paper_decoder(decoder, name, num_classes, decoder_channels, backbone_kwargs)
    else:
        base = _smp_decoder(
            decoder,
            name,
            num_classes,
            decoder_channels,
            output_stride,
            dict(decoder_kwargs or {}),
            backbone_kwargs,
        )
    if aux_head is None:
        aux_head = decoder == "upernet"
    aux = None
    if aux_head:
        levels = base.encoder.out_channels  # the input, stride 2, then strides 4, 8, 16, 32
        if len(levels) <= 2 + AUX_STAGE:
            raise ConfigError(
                f"the auxiliary head reads stage {AUX_STAGE + 1}, which this {decoder} encoder "
                "(encoder_depth < 5) does not compute. Fix: aux_head off for this decoder."
            )
        aux_channels = decoder_channels // 2 if decoder_channels else AUX_CHANNELS
        aux = AuxFCNHead(levels[2 + AUX_STAGE], num_classes, aux_channels)
    # Decoders that add or concatenate levels need sides divisible by the encoder's stride;
    # UperNet resizes each level to the next.
    divisor = (
        1
        if decoder == "upernet" or not base.requires_divisible_input_shape
        else base.encoder.output_stride
    )
    return SegmentationNet(base, aux, divisor)


def slide_logits(
    net: nn.Module, x: torch.Tensor, num_classes: int, crop: int = 512, stride: int = 341
) -> torch.Tensor:
    """mmseg's sliding-window inference: overlapping ``crop`` windows, logits averaged."""
    b, _, h, w = x.shape
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    out = x.new_zeros(b, num_classes, h, w)
    count = x.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride, max(h - crop, 0)), min(c * stride, max(w - crop, 0))
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            out[:, :, y1:y2, x1:x2] += net(x[:, :, y1:y2, x1:x2]).float()
            count[:, :, y1:y2, x1:x2] += 1
    return out / count

"""Segmentation networks: an smp encoder (``tu-<timm name>``, ours included), the stage-output
norms of its family, and a decoder.

The paper's two decoders (Tables 6 and 7) are mmsegmentation's: the Semantic FPN of
``seg.heads`` and smp's UperNet decoder without its LayerNorms (the family's stage norms take
their place), each with mmseg's classifier (dropout 0.1, 1x1 conv) and, for UperNet, the
auxiliary FCN head on stage 3. smp's other architectures (DeepLabV3+, U-Net, SegFormer, ...) are
smp's own, with the same stage norms in front.

Any input size works: the paper's heads resize each level to the next; the smp decoders that ask
for sides divisible by the encoder's stride, and backbones that patchify (Swin built with
``strict_img_size: false``), get their input padded bottom and right to the next multiple and
the logits cropped back.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import nn

from ..errors import ConfigError
from .heads import (
    AuxFCNHead,
    ClassifierHead,
    SemanticFPNDecoder,
    StageNorm,
    StageNorms,
    family_stage_norm,
    mmseg_init,
)
from .inference import resize

PAPER_DECODERS = ("fpn", "upernet")  # mmseg's heads
VIT_ONLY = ("dpt",)  # its decoder reads a ViT's prefix tokens
DECODERS = PAPER_DECODERS + tuple(
    a for a in smp.MODEL_ARCHITECTURES_MAPPING if a not in PAPER_DECODERS + VIT_ONLY
)
# Decoders that need every level down to stride 32: smp's add each level to the upsampled next
# one; the Semantic FPN's scale heads are built for strides 4-32.
FULL_PYRAMID = ("fpn", "unetplusplus", "manet", "linknet")
# Decoders whose global pooling feeds BatchNorm a 1x1 map: training needs 2+ images per norm.
POOLED_BATCHNORM = ("upernet", "deeplabv3", "deeplabv3plus", "pan")
# smp's argument for a decoder's width, in the order looked for; a sequence default is halved
# level by level from ``decoder_channels`` (U-Net's 256, 128, 64, 32, 16).
WIDTH_ARGS = ("decoder_channels", "decoder_segmentation_channels", "psp_out_channels")
# mmseg's head settings (Semantic FPN: PoolFormer/PVT configs; UperNet: Swin/ConvNeXt configs).
FPN_PYRAMID, FPN_SEGMENTATION = 256, 128
UPERNET_CHANNELS, AUX_CHANNELS, AUX_STAGE = 512, 256, 2
# Parameters without weight decay beyond the 1-D ones (Swin's UperNet configs: custom_keys).
NO_WEIGHT_DECAY_KEYS = ("absolute_pos_embed", "relative_position_bias_table")
# ConvNeXt's stage-wise LR decay (its UperNet configs: decay_type stage_wise, num_layers 6; its
# LearningRateDecayOptimizerConstructor adds 2): stem and downsampling layers are layer 0, stage
# i is layer i + 1, everything else (stage norms, decoder, heads) the top layer, 7.
STAGE_WISE_LAYERS = 6 + 2
_STEM = re.compile(r"encoder\.model\.(stem|patch_embed)")
_STAGE = re.compile(r"encoder\.model\.(?:stages|layers)_(\d+)\.(downsample\.)?")


def fixed_input_size(encoder: nn.Module) -> tuple[int, int] | None:
    """The (h, w) a backbone was built for when it takes no other size (timm's Swin, ViT)."""
    for m in encoder.modules():
        if getattr(m, "strict_img_size", False) and getattr(m, "img_size", None) is not None:
            return tuple(m.img_size)
    return None


def patchifies(encoder: nn.Module) -> bool:
    """Whether the backbone cuts its input into patches at any size (Swin, ``strict_img_size``
    off): its sides must then divide by every patch and merge, i.e. by the encoder's stride."""
    return any(getattr(m, "strict_img_size", True) is False for m in encoder.modules())


class SegmentationNet(nn.Module):
    """Encoder, stage norms, decoder and classifier, plus the optional auxiliary head.

    ``forward`` returns logits at the input resolution; ``forward_train`` also returns the
    auxiliary logits (or None). Inputs are padded (bottom, right, zeros) to a multiple of
    ``size_divisor``, or to the backbone's fixed size, and the logits cropped back.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        segmentation_head: nn.Module,
        aux_head: nn.Module | None = None,
        size_divisor: int = 1,
        stage_norms: StageNorms | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.segmentation_head = encoder, decoder, segmentation_head
        self.stage_norms = stage_norms or StageNorms(encoder.out_channels, "none")
        self.aux_head = aux_head
        if patchifies(encoder):
            size_divisor = max(size_divisor, encoder.output_stride)
        self.size_divisor = size_divisor
        self.fixed_size = fixed_input_size(self.encoder)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that Swin's recipe keeps free of weight decay."""
        return {n for n, _ in self.named_parameters() if any(k in n for k in NO_WEIGHT_DECAY_KEYS)}

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the network runs at for a (height, width) input."""
        if self.fixed_size is not None:
            fh, fw = self.fixed_size
            if height > fh or width > fw:
                raise ConfigError(
                    f"the backbone is built for {fh}x{fw} inputs and cannot take {height}x{width}. "
                    f"Fix: build it for any size (model.backbone_kwargs.strict_img_size: false), "
                    f"or evaluate in windows (model.inference: slide, model.slide_crop: {fh})."
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
        return resize(logits, like.shape[-2:])[..., : size[0], : size[1]]

    def features(self, padded: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's levels (the input, stride 2, then strides 4-32), stage-normed."""
        return self.stage_norms(self.encoder(padded))

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = x.shape[-2:]
        padded = self._pad(x)
        features = self.features(padded)
        logits = self._resize(self.segmentation_head(self.decoder(features)), padded, size)
        if self.aux_head is None:
            return logits, None
        # features: the input, stride 2 (empty for 4-stage nets), then strides 4, 8, 16, 32.
        aux = self.aux_head(features[2 + AUX_STAGE])
        return logits, self._resize(aux, padded, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = self._pad(x)
        logits = self.segmentation_head(self.decoder(self.features(padded)))
        return self._resize(logits, padded, x.shape[-2:])


def stage_wise_layer_ids(net: nn.Module) -> dict[str, int]:
    """Each parameter's layer under ConvNeXt's stage-wise LR decay (``STAGE_WISE_LAYERS``)."""
    top = STAGE_WISE_LAYERS - 1
    ids: dict[str, int] = {}
    for name, _ in net.named_parameters():
        stage = _STAGE.match(name)
        if _STEM.match(name) or (stage and stage.group(2)):
            ids[name] = 0
        elif stage:
            ids[name] = int(stage.group(1)) + 1
        else:
            ids[name] = top
    if all(i == top for n, i in ids.items() if n.startswith("encoder.")):
        raise ConfigError(
            "model.layer_decay needs a backbone built of a stem and stages (InceptionNeXt, "
            "ConvNeXt, Swin); this one has neither. Fix: layer_decay: null."
        )
    return ids


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
    decoder: str, encoder_channels: list[int], decoder_channels: int | None
) -> tuple[nn.Module, int]:
    """mmseg's Semantic FPN or UperNet decoder at the paper's widths by default, and its width."""
    if decoder == "upernet":
        channels = decoder_channels or UPERNET_CHANNELS
        net = UPerNetDecoder(encoder_channels, encoder_depth=5, decoder_channels=channels)
        # mmseg's UPerHead reads the stage outputs as they come: the family's norms replace
        # smp's LayerNorm on every level.
        net.feature_norms = nn.ModuleList(nn.Identity() for _ in net.feature_norms)
        mmseg_init(net)
        return net, channels
    pyramid = decoder_channels or FPN_PYRAMID
    segmentation = decoder_channels // 2 if decoder_channels else FPN_SEGMENTATION
    return SemanticFPNDecoder(encoder_channels, pyramid, segmentation), segmentation


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
    stage_norm: StageNorm = "auto",
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
    ``stage_norm`` normalises each stage output: ``auto`` takes the family's
    (``heads.FAMILY_STAGE_NORMS``: BN for InceptionNeXt, LayerNorm for ConvNeXt and Swin, none
    for the rest).
    """
    check_decoder(decoder, output_stride)
    name = f"tu-{backbone}"
    if decoder in PAPER_DECODERS:
        if decoder_kwargs:
            raise ConfigError(
                f"model.decoder_kwargs are arguments of smp's architectures; the paper's "
                f"{decoder} head is set by model.decoder_channels. Fix: decoder_kwargs: null."
            )
        encoder = smp.encoders.get_encoder(
            name, depth=5, weights=None, output_stride=output_stride or 32, **backbone_kwargs
        )
        net, width = _paper_decoder(decoder, encoder.out_channels, decoder_channels)
        head = ClassifierHead(width, num_classes)
        divisor = 1  # both resize each level to the next
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
        encoder, net, head = base.encoder, base.decoder, base.segmentation_head
        # smp's decoders that add or concatenate levels need sides divisible by the stride.
        divisor = base.encoder.output_stride if base.requires_divisible_input_shape else 1
    if aux_head is None:
        aux_head = decoder == "upernet"
    aux = None
    if aux_head:
        levels = encoder.out_channels  # the input, stride 2, then strides 4, 8, 16, 32
        if len(levels) <= 2 + AUX_STAGE:
            raise ConfigError(
                f"the auxiliary head reads stage {AUX_STAGE + 1}, which this {decoder} encoder "
                "(encoder_depth < 5) does not compute. Fix: aux_head off for this decoder."
            )
        aux_channels = decoder_channels // 2 if decoder_channels else AUX_CHANNELS
        aux = AuxFCNHead(levels[2 + AUX_STAGE], num_classes, aux_channels)
    norm = family_stage_norm(backbone) if stage_norm == "auto" else stage_norm
    return SegmentationNet(encoder, net, head, aux, divisor, StageNorms(encoder.out_channels, norm))

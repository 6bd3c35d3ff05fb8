"""ConvNeXt-T with smaller and partial depthwise kernels (Table 1), built from MetaNeXt blocks.

The released checkpoints are in facebook's ConvNeXt format; timm's ``pretrained=True`` reads
them through ``models.keymaps``, where that format's key table lives.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs

from ._builder import build, register, zoo_cfg
from .inceptionnext import FEATURE_CFG, split_mixer_kwargs
from .metanext import MetaNeXt
from .token_mixers import MixerCfg

# name -> (kernel size, conv ratio)
TABLE1 = {
    "convnext_tiny_k5": (5, 1.0),
    "convnext_tiny_k3": (3, 1.0),
    "convnext_tiny_k3_par1_2": (3, 1 / 2),
    "convnext_tiny_k3_par3_8": (3, 3 / 8),
    "convnext_tiny_k3_par1_4": (3, 1 / 4),
    "convnext_tiny_k3_par1_8": (3, 1 / 8),
    "convnext_tiny_k3_par1_16": (3, 1 / 16),
}

# Sources and preprocessing come from the zoo registry, under the same names.
default_cfgs = generate_default_cfgs(
    {f"{n}.sail_in1k": zoo_cfg(f"{n}.sail_in1k", classifier="head.fc") for n in TABLE1}
)

# Full-depthwise variants are timm's ConvNeXt-T with smaller kernels; partial ones have no twin.
TIMM_CONVNEXT = "convnext_tiny"


def timm_convnext_args(variant: str) -> dict[str, Any] | None:
    """timm's ``convnext_tiny`` arguments that build ``variant``, or None where timm cannot."""
    kernel, ratio = TABLE1.get(variant, (0, 0.0))
    return {"kernel_sizes": kernel} if ratio == 1.0 else None


def _create(variant: str, pretrained: bool, **kwargs: Any) -> MetaNeXt:
    """``kwargs`` override the variant's arguments (timm's ``**dict(model_args, **kwargs)``)."""
    k, ratio = TABLE1[variant]
    model_args = dict(
        depths=(3, 3, 9, 3),
        dims=(96, 192, 384, 768),
        norm="layer",
        mlp_ratios=4,
        head="linear",
        mixer=MixerCfg(kind="dwconv", kernel_size=k, conv_ratio=ratio),
    )
    kwargs = dict(model_args, **kwargs)
    kwargs["mixer"] = split_mixer_kwargs(kwargs.pop("mixer"), kwargs)
    return build(MetaNeXt, variant, pretrained, FEATURE_CFG, **kwargs)


@register
def convnext_tiny_k5(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("convnext_tiny_k5", pretrained, **kwargs)


@register
def convnext_tiny_k3(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("convnext_tiny_k3", pretrained, **kwargs)


@register
def convnext_tiny_k3_par1_2(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("convnext_tiny_k3_par1_2", pretrained, **kwargs)


@register
def convnext_tiny_k3_par3_8(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("convnext_tiny_k3_par3_8", pretrained, **kwargs)


@register
def convnext_tiny_k3_par1_4(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("convnext_tiny_k3_par1_4", pretrained, **kwargs)


@register
def convnext_tiny_k3_par1_8(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("convnext_tiny_k3_par1_8", pretrained, **kwargs)


@register
def convnext_tiny_k3_par1_16(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("convnext_tiny_k3_par1_16", pretrained, **kwargs)

"""Isotropic models of Table 5: InceptionNeXt-S (iso.), ConvNeXt-S (iso.) and MetaNeXt-Attn.

All three are 16x16-patch, single-stage MetaNeXt networks matched to DeiT-S (dim 384).
MetaNeXt-Attn is the paper's negative result: it does not converge (3.9% top-1).
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs

from ._builder import build, cfg, register
from .inceptionnext import split_mixer_kwargs
from .metanext import MetaNeXtIsotropic
from .token_mixers import MixerCfg

default_cfgs = generate_default_cfgs(
    {
        "inceptionnext_small_iso": cfg(pool_size=(14, 14), classifier="head.fc"),
        "convnext_small_iso": cfg(pool_size=(14, 14), classifier="head.fc"),
        "metanext_attn_small": cfg(pool_size=(14, 14), classifier="head.fc"),
    }
)


def _create(variant: str, pretrained: bool, mixer: MixerCfg, **kwargs: Any) -> MetaNeXtIsotropic:
    mixer = split_mixer_kwargs(mixer, kwargs)
    return build(MetaNeXtIsotropic, variant, pretrained, feature_out=1, mixer=mixer, **kwargs)


@register
def inceptionnext_small_iso(pretrained: bool = False, **kwargs: Any) -> MetaNeXtIsotropic:
    return _create(
        "inceptionnext_small_iso", pretrained, MixerCfg(), **(dict(depth=18, dim=384) | kwargs)
    )


@register
def convnext_small_iso(pretrained: bool = False, **kwargs: Any) -> MetaNeXtIsotropic:
    # facebook's isotropic ConvNeXt: 7x7 depthwise conv, LayerNorm, no layer scale.
    defaults = dict(depth=18, dim=384, norm="layer", ls_init_value=0)
    return _create(
        "convnext_small_iso",
        pretrained,
        MixerCfg(kind="dwconv", kernel_size=7),
        **(defaults | kwargs),
    )


@register
def metanext_attn_small(pretrained: bool = False, **kwargs: Any) -> MetaNeXtIsotropic:
    defaults = dict(depth=12, dim=384, norm="layer", pos_embed=True)
    return _create(
        "metanext_attn_small", pretrained, MixerCfg(kind="attn", num_heads=6), **(defaults | kwargs)
    )

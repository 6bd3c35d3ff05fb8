"""Isotropic models of Table 5: InceptionNeXt-S (iso.), ConvNeXt-S (iso.) and MetaNeXt-Attn.

All three are 16x16-patch, single-stage MetaNeXt networks matched to DeiT-S (dim 384).
MetaNeXt-Attn is the paper's negative result: it does not converge (3.9% top-1).
No weights are released for them.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs

from ._builder import build, cfg, register
from .inceptionnext import split_mixer_kwargs
from .metanext import MetaNeXtIsotropic
from .token_mixers import MixerCfg

# Features are block outputs, read through forward_intermediates (as timm does for ViTs); by
# default the last three blocks.
FEATURE_CFG = dict(out_indices=3, feature_cls="getter")

default_cfgs = generate_default_cfgs(
    {
        name: cfg(pool_size=(14, 14), classifier="head.fc")
        for name in ("inceptionnext_small_iso", "convnext_small_iso", "metanext_attn_small")
    }
)


def _create(
    variant: str, pretrained: bool, model_args: dict[str, Any], **kwargs: Any
) -> MetaNeXtIsotropic:
    """``kwargs`` override ``model_args`` (timm's ``**dict(model_args, **kwargs)``)."""
    kwargs = dict(model_args, **kwargs)
    kwargs["mixer"] = split_mixer_kwargs(kwargs.pop("mixer", MixerCfg()), kwargs)
    return build(MetaNeXtIsotropic, variant, pretrained, FEATURE_CFG, **kwargs)


@register
def inceptionnext_small_iso(pretrained: bool = False, **kwargs: Any) -> MetaNeXtIsotropic:
    args = dict(depth=18, dim=384, mixer=MixerCfg())
    return _create("inceptionnext_small_iso", pretrained, args, **kwargs)


@register
def convnext_small_iso(pretrained: bool = False, **kwargs: Any) -> MetaNeXtIsotropic:
    # facebook's isotropic ConvNeXt: 7x7 depthwise conv, LayerNorm, no layer scale.
    args = dict(
        depth=18,
        dim=384,
        norm="layer",
        ls_init_value=0,
        mixer=MixerCfg(kind="dwconv", kernel_size=7),
    )
    return _create("convnext_small_iso", pretrained, args, **kwargs)


@register
def metanext_attn_small(pretrained: bool = False, **kwargs: Any) -> MetaNeXtIsotropic:
    args = dict(
        depth=12, dim=384, norm="layer", pos_embed=True, mixer=MixerCfg(kind="attn", num_heads=6)
    )
    return _create("metanext_attn_small", pretrained, args, **kwargs)

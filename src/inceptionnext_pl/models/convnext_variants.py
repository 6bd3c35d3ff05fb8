"""ConvNeXt-T with smaller and partial depthwise kernels (Table 1), built from MetaNeXt blocks.

The released checkpoints are in facebook's ConvNeXt format; ``checkpoint_filter_fn`` maps them
(and back, with ``to_facebook``) so ``pretrained=True`` loads them unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from timm.models import generate_default_cfgs

from ._builder import build, cfg, register
from .inceptionnext import split_mixer_kwargs
from .metanext import MetaNeXt
from .token_mixers import MixerCfg

_RELEASE = "https://github.com/sail-sg/inceptionnext/releases/download/model"
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

default_cfgs = generate_default_cfgs(
    {f"{n}.sail_in1k": cfg(f"{_RELEASE}/{n}_1k_224_ema.pth", classifier="head.fc") for n in TABLE1}
)

_FB_RULES = [
    (r"^downsample_layers\.0\.(\d)\.", r"stem.\1."),
    (r"^downsample_layers\.(\d)\.(\d)\.", r"stages.\1.downsample.\2."),
    (r"^stages\.(\d+)\.(\d+)\.dwconv\.(?:conv\.)?", r"stages.\1.blocks.\2.token_mixer.conv."),
    (r"^stages\.(\d+)\.(\d+)\.pwconv1\.", r"stages.\1.blocks.\2.mlp.fc1."),
    (r"^stages\.(\d+)\.(\d+)\.pwconv2\.", r"stages.\1.blocks.\2.mlp.fc2."),
    (r"^stages\.(\d+)\.(\d+)\.(norm|gamma)", r"stages.\1.blocks.\2.\3"),
    (r"^norm\.", "head.norm."),
    (r"^head\.", "head.fc."),
]


def is_facebook_format(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("downsample_layers.") for k in state_dict)


def _rename(
    state_dict: dict[str, torch.Tensor], rules: list[tuple[str, str]], pointwise: str, ndim: int
) -> dict[str, torch.Tensor]:
    """Apply the first matching rule to each key; pointwise weights become ``ndim``-D."""
    out = {}
    for k, v in state_dict.items():
        new = k
        for pat, rep in rules:
            new, n = re.subn(pat, rep, k)
            if n:
                break
        if re.search(pointwise, new) and v.ndim != ndim:
            v = v[:, :, None, None] if ndim == 4 else v[:, :, 0, 0]
        out[new] = v
    return out


def from_facebook(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """facebook ConvNeXt keys (Linear pointwise layers) -> MetaNeXt keys (1x1 convs)."""
    return _rename(state_dict, _FB_RULES, r"mlp\.fc\d\.weight$", ndim=4)


def to_facebook(state_dict: dict[str, torch.Tensor], partial: bool) -> dict[str, torch.Tensor]:
    """MetaNeXt keys -> facebook ConvNeXt keys (``partial``: the release's PartialConv2d names)."""
    rules = [
        (r"^stem\.(\d)\.", r"downsample_layers.0.\1."),
        (r"^stages\.(\d)\.downsample\.(\d)\.", r"downsample_layers.\1.\2."),
        (
            r"^stages\.(\d+)\.blocks\.(\d+)\.token_mixer\.conv\.",
            r"stages.\1.\2.dwconv." + ("conv." if partial else ""),
        ),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.\2.pwconv1."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.\2.pwconv2."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.(norm|gamma)", r"stages.\1.\2.\3"),
        (r"^head\.norm\.", "norm."),
        (r"^head\.fc\.", "head."),
    ]
    return _rename(state_dict, rules, r"pwconv\d\.weight$", ndim=2)


def checkpoint_filter_fn(
    state_dict: dict[str, Any], model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    state_dict = state_dict.get("model", state_dict)
    return from_facebook(state_dict) if is_facebook_format(state_dict) else state_dict


def _create(variant: str, pretrained: bool, **kwargs: Any) -> MetaNeXt:
    k, ratio = TABLE1[variant]
    mixer = split_mixer_kwargs(MixerCfg(kind="dwconv", kernel_size=k, conv_ratio=ratio), kwargs)
    kwargs = dict(norm="layer", mlp_ratios=4, head="linear") | kwargs
    return build(
        MetaNeXt,
        variant,
        pretrained,
        depths=(3, 3, 9, 3),
        dims=(96, 192, 384, 768),
        mixer=mixer,
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


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

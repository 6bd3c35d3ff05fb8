"""InceptionNeXt variants (Table 3), weight-compatible with the official release and timm.

Ablation knobs of Table 8 are keyword arguments of every variant, e.g.
``create_model("inceptionnext_tiny", band_kernel_size=7, branches=("w", "h"), norm="layer")``;
any of a variant's own arguments can be overridden too (``depths=(2, 2, 6, 2)``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from timm.models import generate_default_cfgs

from ._builder import build, register, zoo_cfg
from .metanext import MetaNeXt
from .token_mixers import MixerCfg

MIXER_KEYS = tuple(f.name for f in fields(MixerCfg) if f.name != "kind")
FEATURE_CFG = dict(out_indices=(0, 1, 2, 3), flatten_sequential=True)

# Sources and preprocessing come from the zoo registry, under the same names.
default_cfgs = generate_default_cfgs(
    {
        f"{name}.sail_in1k": zoo_cfg(f"{name}.sail_in1k")
        for name in (
            "inceptionnext_atto",
            "inceptionnext_tiny",
            "inceptionnext_small",
            "inceptionnext_base",
            "inceptionnext_base_384",
        )
    }
)

# timm's own InceptionNeXt has exactly these keys, so plain timm loads these weights.
TIMM_NAMES = {
    "inceptionnext_atto": "inception_next_atto",
    "inceptionnext_tiny": "inception_next_tiny",
    "inceptionnext_small": "inception_next_small",
    "inceptionnext_base": "inception_next_base",
    "inceptionnext_base_384": "inception_next_base",  # the same network, evaluated at 384
}


def split_mixer_kwargs(base: MixerCfg, kwargs: dict[str, Any]) -> MixerCfg:
    """Move token-mixer options out of ``kwargs`` into a copy of ``base``."""
    overrides = {k: kwargs.pop(k) for k in MIXER_KEYS if k in kwargs}
    if "branches" in overrides:
        overrides["branches"] = tuple(overrides["branches"])
    return replace(base, **overrides)


def _create(variant: str, pretrained: bool, model_args: dict[str, Any], **kwargs: Any) -> MetaNeXt:
    """``kwargs`` override ``model_args`` (timm's ``**dict(model_args, **kwargs)``)."""
    kwargs = dict(model_args, **kwargs)
    kwargs["mixer"] = split_mixer_kwargs(kwargs.pop("mixer", MixerCfg()), kwargs)
    return build(MetaNeXt, variant, pretrained, FEATURE_CFG, **kwargs)


_TINY = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
_BASE = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))


@register
def inceptionnext_atto(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    args = dict(
        depths=(2, 2, 6, 2),
        dims=(40, 80, 160, 320),
        mixer=MixerCfg(band_kernel_size=9, branch_ratio=0.25),
    )
    return _create("inceptionnext_atto", pretrained, args, **kwargs)


@register
def inceptionnext_tiny(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("inceptionnext_tiny", pretrained, _TINY, **kwargs)


@register
def inceptionnext_small(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("inceptionnext_small", pretrained, dict(_TINY, depths=(3, 3, 27, 3)), **kwargs)


@register
def inceptionnext_base(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("inceptionnext_base", pretrained, _BASE, **kwargs)


@register
def inceptionnext_base_384(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create("inceptionnext_base_384", pretrained, _BASE, **kwargs)

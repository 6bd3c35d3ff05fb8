"""InceptionNeXt variants (Table 3), weight-compatible with the official release and timm.

Ablation knobs of Table 8 are keyword arguments of every variant, e.g.
``create_model("inceptionnext_tiny", band_kernel_size=7, branches=("w", "h"), norm="layer")``.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from timm.models import generate_default_cfgs

from ._builder import build, cfg, register
from .metanext import MetaNeXt
from .token_mixers import MixerCfg

_RELEASE = "https://github.com/sail-sg/inceptionnext/releases/download/model"
MIXER_KEYS = tuple(f.name for f in fields(MixerCfg) if f.name != "kind")

default_cfgs = generate_default_cfgs(
    {
        "inceptionnext_atto.sail_in1k": cfg(
            f"{_RELEASE}/inceptionnext_atto.pth", hf_hub_id="timm/inception_next_atto.sail_in1k"
        ),
        "inceptionnext_tiny.sail_in1k": cfg(
            f"{_RELEASE}/inceptionnext_tiny.pth", hf_hub_id="timm/inception_next_tiny.sail_in1k"
        ),
        "inceptionnext_small.sail_in1k": cfg(
            f"{_RELEASE}/inceptionnext_small.pth", hf_hub_id="timm/inception_next_small.sail_in1k"
        ),
        "inceptionnext_base.sail_in1k": cfg(
            f"{_RELEASE}/inceptionnext_base.pth", hf_hub_id="timm/inception_next_base.sail_in1k"
        ),
        "inceptionnext_base_384.sail_in1k": cfg(
            f"{_RELEASE}/inceptionnext_base_384.pth",
            hf_hub_id="timm/inception_next_base.sail_in1k_384",
            input_size=(3, 384, 384),
            pool_size=(12, 12),
            crop_pct=1.0,
        ),
    }
)


def split_mixer_kwargs(base: MixerCfg, kwargs: dict[str, Any]) -> MixerCfg:
    """Move token-mixer options out of ``kwargs`` into a copy of ``base``."""
    overrides = {k: kwargs.pop(k) for k in MIXER_KEYS if k in kwargs}
    if "branches" in overrides:
        overrides["branches"] = tuple(overrides["branches"])
    return replace(base, **overrides)


def _create(
    variant: str, pretrained: bool, depths, dims, mixer: MixerCfg, **kwargs: Any
) -> MetaNeXt:
    mixer = split_mixer_kwargs(mixer, kwargs)
    return build(MetaNeXt, variant, pretrained, depths=depths, dims=dims, mixer=mixer, **kwargs)


@register
def inceptionnext_atto(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    mixer = MixerCfg(band_kernel_size=9, branch_ratio=0.25)
    return _create(
        "inceptionnext_atto", pretrained, (2, 2, 6, 2), (40, 80, 160, 320), mixer, **kwargs
    )


@register
def inceptionnext_tiny(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create(
        "inceptionnext_tiny", pretrained, (3, 3, 9, 3), (96, 192, 384, 768), MixerCfg(), **kwargs
    )


@register
def inceptionnext_small(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create(
        "inceptionnext_small", pretrained, (3, 3, 27, 3), (96, 192, 384, 768), MixerCfg(), **kwargs
    )


@register
def inceptionnext_base(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create(
        "inceptionnext_base", pretrained, (3, 3, 27, 3), (128, 256, 512, 1024), MixerCfg(), **kwargs
    )


@register
def inceptionnext_base_384(pretrained: bool = False, **kwargs: Any) -> MetaNeXt:
    return _create(
        "inceptionnext_base_384",
        pretrained,
        (3, 3, 27, 3),
        (128, 256, 512, 1024),
        MixerCfg(),
        **kwargs,
    )

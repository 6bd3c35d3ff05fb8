"""Registration of our variants with timm's registry, without overriding timm's own names."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, is_model
from timm.models._registry import register_model

# Names of the variants this package defines, in registration order.
OUR_MODELS: dict[str, Callable[..., Any]] = {}


def cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    """A timm pretrained config with ImageNet-1k defaults."""
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0",
        "classifier": "head.fc2",
        **kwargs,
    }


def register(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` with timm unless timm already owns the name; ours stays reachable either way."""
    name = fn.__name__
    OUR_MODELS[name] = fn
    if is_model(name):
        warnings.warn(
            f"timm already registers {name!r}; inceptionnext_pl leaves timm's in place",
            stacklevel=2,
        )
        return fn
    return register_model(fn)


def build(cls: type, variant: str, pretrained: bool, feature_out: int = 4, **kwargs: Any) -> Any:
    """Build through timm so that ``features_only``, pretrained configs and loading behave as in timm."""
    if kwargs.get("features_only") and feature_out < 2:
        raise ValueError(
            f"{variant} is isotropic (one stage): features_only is for the 4-stage models"
        )
    return build_model_with_cfg(
        cls,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=tuple(range(feature_out)), flatten_sequential=True),
        **kwargs,
    )

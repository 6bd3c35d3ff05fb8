"""Registration of our variants with timm's registry, and how they take pretrained weights.

Where released weights exist, a variant's pretrained config is read from the zoo registry
(``checkpoints/registry.yaml``, the one place their URLs, hub ids and preprocessing are written).

``pretrained=True`` weights are found and read by the weights layer above (``inceptionnext_pl.zoo``),
which the package installs with ``set_weights_reader``; this room never imports it. timm then loads
the state dict as it loads any: the classifier dropped when ``num_classes`` differs, ``in_chans``
adapted, ``features_only`` wrapped afterwards.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, is_model
from timm.models._builder import resolve_pretrained_cfg
from timm.models._registry import register_model

from .. import registry
from .keymaps import checkpoint_filter_fn

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


@cache
def _zoo_entries() -> dict[str, Any]:
    """Every name and alias of the registry shipped with the package -> its entry."""
    # The package's own copy (a link to checkpoints/registry.yaml in a checkout), not a registry
    # chosen through $INCEPTIONNEXT_ZOO_REGISTRY: timm's configs for our names stay fixed.
    entries = registry.load_registry(Path(registry.__file__).with_name("registry.yaml"))
    return {n: e for e in entries.values() for n in (e.name, *e.aliases)}


def zoo_cfg(tag: str, reduction: int = 32, **kwargs: Any) -> dict[str, Any]:
    """The pretrained config of ``arch.tag`` from its zoo entry: sources and preprocessing."""
    entry = _zoo_entries()[tag]
    url = next((s.url for s in entry.sources if s.url), "")
    hf_hub_id = next((s.hf for s in entry.sources if s.hf), None)
    _, h, w = entry.input_size
    return cfg(
        url,
        **({"hf_hub_id": hf_hub_id} if hf_hub_id else {}),
        input_size=tuple(entry.input_size),
        pool_size=(h // reduction, w // reduction),
        crop_pct=entry.crop_pct,
        interpolation=entry.interpolation,
        license=entry.license,
        **kwargs,
    )


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


WeightsReader = Callable[[dict[str, Any], Mapping[str, Any]], dict[str, torch.Tensor]]
"""``reader(pretrained_cfg, overlay) -> state dict``: the weights a pretrained config names."""

_weights_reader: list[WeightsReader] = []


def set_weights_reader(reader: WeightsReader) -> None:
    """Install the function that finds and reads ``pretrained=True`` weights (the weights layer's)."""
    _weights_reader[:] = [reader]


def _with_weights(variant: str, kwargs: dict[str, Any]) -> Any:
    """The pretrained config timm will load, with the state dict the weights layer read for it."""
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.pop("pretrained_cfg", None), pretrained_cfg_overlay=overlay
    )
    if cfg.state_dict:  # the caller passed the tensors themselves
        return cfg
    if not _weights_reader:
        raise RuntimeError("pretrained=True needs inceptionnext_pl's weights layer installed")
    return replace(cfg, state_dict=_weights_reader[0](cfg.to_dict(), overlay))


def build(
    cls: type, variant: str, pretrained: bool, feature_cfg: dict[str, Any], **kwargs: Any
) -> Any:
    """Build through timm so that ``features_only``, pretrained configs and loading behave as in timm.

    ``pretrained=True`` weights (the zoo entry of the tag, or ``pretrained_cfg_overlay`` with
    ``file``, ``url`` or ``hf_hub_id``) are read by the weights layer in any format it knows;
    ``checkpoint_filter_fn`` unwraps and maps foreign key layouts on the way in.
    """
    if pretrained:
        kwargs["pretrained_cfg"] = _with_weights(variant, kwargs)
    # timm's factory passes device / dtype to the model as its own models take them.
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    with torch.device(device) if device is not None else nullcontext():
        model = build_model_with_cfg(
            cls,
            variant,
            pretrained,
            feature_cfg=dict(feature_cfg),  # timm edits it in place
            pretrained_filter_fn=checkpoint_filter_fn,
            **kwargs,
        )
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):
        cfg.pop("state_dict", None)  # loaded: the model keeps no second copy of its weights
    return model if dtype is None else model.to(dtype=dtype)

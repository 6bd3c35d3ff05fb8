"""One ``create_model`` for our variants and timm's baselines, with helpful errors."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any

import timm
from timm.models import model_entrypoint, split_model_name_tag
from torch import nn

from ..errors import InceptionNextError
from ._builder import OUR_MODELS

# timm families the paper compares against (Tables 1, 4, 5 and Figure 4).
BASELINE_PATTERNS = ("convnext_*", "swin_*", "resnet*", "inception_next_*")


def list_models(pattern: str = "*", baselines: bool = True) -> list[str]:
    """Our variants first, then timm's baselines (ConvNeXt, Swin, ResNet, timm's InceptionNeXt)."""
    names = [n for n in OUR_MODELS if fnmatch.fnmatch(n, pattern)]
    if baselines:
        timm_names = sorted(
            {n for p in BASELINE_PATTERNS for n in timm.list_models(p)} - set(OUR_MODELS)
        )
        names += [n for n in timm_names if fnmatch.fnmatch(n, pattern)]
    return names


class UnknownModelError(InceptionNextError, ValueError):
    """A model name that neither this package nor timm registers."""


def check_model_name(name: str) -> None:
    """Raise ``UnknownModelError`` with the closest known names when ``name`` is not buildable."""
    arch = split_model_name_tag(name)[0]
    if arch in OUR_MODELS or timm.is_model(arch):
        return
    known = list(dict.fromkeys([*OUR_MODELS, *timm.list_models()]))  # ours are in timm's list too
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {name!r}.{hint} `inceptionnext-table --list` prints every known name."
    )


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build one of our variants or any timm model by name (kwargs as in ``timm.create_model``)."""
    check_model_name(name)
    arch = split_model_name_tag(name)[0]
    if arch in OUR_MODELS and model_entrypoint(arch) is not OUR_MODELS[arch]:
        # timm itself owns this name; ours stays reachable here.
        return OUR_MODELS[arch](pretrained=pretrained, **kwargs)
    return timm.create_model(name, pretrained=pretrained, **kwargs)

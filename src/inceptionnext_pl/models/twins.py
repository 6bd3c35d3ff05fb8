"""Our architectures that timm builds too: timm's name, its arguments and the key map.

A hub-format export names timm's architecture where it has one, so that plain timm, without this
package, loads the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .convnext_variants import TIMM_CONVNEXT, timm_convnext_args
from .inceptionnext import TIMM_NAMES
from .keymaps import to_facebook

StateDict = dict[str, torch.Tensor]
# Arguments that change training, not the weights: they do not stand in the way of a twin.
TRAINING_ONLY = ("drop_rate", "drop_path_rate")


def _same_keys(sd: StateDict, model: nn.Module) -> StateDict:
    return dict(sd)


def _to_timm_convnext(sd: StateDict, model: nn.Module) -> StateDict:
    from timm.models.convnext import checkpoint_filter_fn

    # Our keys -> facebook's release layout, which timm's ConvNeXt filter reads.
    return checkpoint_filter_fn(to_facebook(sd, partial=False), model)


@dataclass(frozen=True)
class TimmTwin:
    name: str  # timm's architecture
    model_args: dict[str, Any] = field(default_factory=dict)  # what timm must be told
    to_timm: Callable[[StateDict, nn.Module], StateDict] = _same_keys  # our keys -> timm's


def timm_twin(arch: str, model_kwargs: Mapping[str, Any] | None = None) -> TimmTwin | None:
    """timm's architecture for ``create_model(arch, **model_kwargs)``, or None where timm has none."""
    if any(k not in TRAINING_ONLY for k in model_kwargs or {}):
        return None  # Table 8 knobs and the like have no spelling in timm's constructors
    if arch in TIMM_NAMES:
        return TimmTwin(TIMM_NAMES[arch])
    args = timm_convnext_args(arch)
    if args is not None:
        return TimmTwin(TIMM_CONVNEXT, args, _to_timm_convnext)
    return None

"""InceptionNeXt, its MetaNeXt relatives and the paper's ablations, registered with timm."""

from . import convnext_variants, inceptionnext, isotropic  # noqa: F401  (registers the variants)
from ._builder import OUR_MODELS
from .factory import UnknownModelError, check_model_name, create_model, list_models
from .metanext import MetaNeXt, MetaNeXtBlock, MetaNeXtIsotropic, MetaNeXtStage
from .token_mixers import Attention2d, InceptionDWConv2d, MixerCfg, PartialDWConv2d

__all__ = [
    "OUR_MODELS",
    "Attention2d",
    "InceptionDWConv2d",
    "MetaNeXt",
    "MetaNeXtBlock",
    "MetaNeXtIsotropic",
    "MetaNeXtStage",
    "MixerCfg",
    "PartialDWConv2d",
    "UnknownModelError",
    "check_model_name",
    "create_model",
    "list_models",
]

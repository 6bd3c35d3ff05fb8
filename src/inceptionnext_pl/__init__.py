"""inceptionnext-pl: a PyTorch Lightning template and model zoo for InceptionNeXt (CVPR 2024).

``import inceptionnext_pl`` registers the models with timm and stays light: the Lightning
classes load on first use (``inceptionnext_pl.ImageClassifier``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .models import create_model, list_models
from .models._builder import set_weights_reader

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "ImageClassifier": ".tasks.classification",
    "TaskModule": ".tasks.base",
    "ImageDataModule": ".data",
    "SemanticSegmenter": ".tasks.segmentation",
    "SegmentationDataModule": ".data",
}

__all__ = ["create_model", "list_models", "__version__", *_LAZY]


def _read_weights(cfg: dict[str, Any], overlay: Any) -> dict[str, Any]:
    # The weights layer sits above the models; they reach it only through this installed reader.
    from .zoo.transfer import pretrained_state_dict

    return pretrained_state_dict(cfg, overlay)


set_weights_reader(_read_weights)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""inceptionnext-pl: a PyTorch Lightning template and model zoo for InceptionNeXt (CVPR 2024)."""

from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "__version__"]

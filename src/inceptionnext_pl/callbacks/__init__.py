"""Training callbacks."""

from .gradcam import GradCAMCallback
from .throughput import Throughput

__all__ = ["GradCAMCallback", "Throughput"]

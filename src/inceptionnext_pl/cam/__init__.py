"""Grad-CAM for InceptionNeXt and its baselines: one API over pytorch-grad-cam.

``compute_cam`` computes maps and overlays; ``figures`` draws grids and Figure-4-style
comparisons; ``meaning`` measures how much of a map falls on a digit's strokes.
"""

from .core import (
    KNOWN_FAMILIES,
    METHODS,
    CamError,
    CamResult,
    TargetLayer,
    compute_cam,
    degenerate_message,
    denormalize,
    find_target_layer,
    isolated,
    nhwc_to_nchw,
    resolve_method,
)

__all__ = [
    "KNOWN_FAMILIES",
    "METHODS",
    "CamError",
    "CamResult",
    "TargetLayer",
    "compute_cam",
    "degenerate_message",
    "denormalize",
    "find_target_layer",
    "isolated",
    "nhwc_to_nchw",
    "resolve_method",
]

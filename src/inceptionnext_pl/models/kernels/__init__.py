"""Fast paths for the token mixers, each with the reference PyTorch module as its fallback."""

from .inception_op import (
    TRITON_AVAILABLE,
    geometry,
    inception_dwconv,
    inception_dwconv_backward,
    interpreter_enabled,
    unsupported_reason,
)

__all__ = [
    "TRITON_AVAILABLE",
    "geometry",
    "inception_dwconv",
    "inception_dwconv_backward",
    "interpreter_enabled",
    "unsupported_reason",
]

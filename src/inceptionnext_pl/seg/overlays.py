"""Colour masks and blend them over images (prediction and ground-truth overlays)."""

from __future__ import annotations

import numpy as np


def palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """(num_classes, 3) uint8 colours: class 0 dark grey, the rest distinct and fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 256, size=(num_classes, 3), dtype=np.uint8)
    colors[0] = (40, 40, 40)
    return colors


def colorize(mask: np.ndarray, colors: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W) int labels -> (H, W, 3) uint8; ``ignore_index`` (and anything unknown) is black."""
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    valid = (mask >= 0) & (mask < len(colors)) & (mask != ignore_index)
    out[valid] = colors[mask[valid]]
    return out


def overlay(image: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float = 0.6,
            ignore_index: int = 255) -> np.ndarray:  # fmt: skip
    """Blend the colourised ``mask`` over ``image`` ((H, W, 3) float in [0, 1]) as uint8."""
    color = colorize(mask, colors, ignore_index).astype(np.float32) / 255
    blended = (1 - alpha) * image + alpha * color
    return (blended.clip(0, 1) * 255).round().astype(np.uint8)

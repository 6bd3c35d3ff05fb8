"""Drawing CAM results: labelled grids for training logs and Figure-4-style model comparisons.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so that
drawing inside a training process touches no global GUI state. Every file is written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_write_bytes

_OK, _WRONG = "#1a7f37", "#cf222e"


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG at ``path`` (atomically)."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def save_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Save an (H, W, 3) uint8 RGB array as PNG at ``path`` (atomically)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render ``fig`` to an (H, W, 3) uint8 RGB array (what TensorBoard's add_image takes)."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _show(ax, img: np.ndarray, title: str | None = None, color: str = "black") -> None:
    ax.imshow(img, interpolation="nearest" if img.shape[0] < 64 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8, color=color)


def labelled_grid(
    images: np.ndarray,
    overlays: np.ndarray,
    predicted: Sequence[str],
    true: Sequence[str] | None = None,
    pairs_per_row: int = 4,
    title: str | None = None,
) -> Figure:
    """Image and overlay side by side for every sample, titled 'pred X / true Y' (red when wrong)."""
    n = len(images)
    cols = min(pairs_per_row, n) if n else 1
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(2.6 * cols, 1.5 * rows + (0.3 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        a_img, a_cam = axes[r, 2 * c], axes[r, 2 * c + 1]
        a_img.axis("on")
        a_cam.axis("on")
        label = f"pred {predicted[i]}"
        color = "black"
        if true is not None:
            label += f" / true {true[i]}"
            color = _OK if predicted[i] == true[i] else _WRONG
        _show(a_img, images[i])
        _show(a_cam, overlays[i], label, color)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def comparison_figure(
    images: np.ndarray,
    overlays: Mapping[str, np.ndarray],
    row_labels: Sequence[str] | None = None,
    input_title: str = "input",
) -> Figure:
    """Paper Figure 4 layout: one row per image, the input first, then one column per model/method.

    ``overlays`` maps a column title (model name, or 'model / method') to (B, H, W, 3) overlays.
    """
    n, cols = len(images), 1 + len(overlays)
    fig = Figure(figsize=(1.9 * cols, 1.9 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        _show(axes[r, 0], images[r], input_title if r == 0 else None)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        for c, (name, ovl) in enumerate(overlays.items(), start=1):
            _show(axes[r, c], ovl[r], name if r == 0 else None)
    return fig

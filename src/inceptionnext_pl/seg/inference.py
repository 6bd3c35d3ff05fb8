"""mmsegmentation's test-time inference: sliding windows, and the multi-scale + flip aug test."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# mmseg's aug test of Swin's and ConvNeXt's UperNet results (Table 6): ratios of the 2048x512
# test scale, each image also flipped (mmseg configs/_base_/datasets/ade20k.py, img_ratios).
AUG_TEST_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def slide_logits(
    net: nn.Module, x: torch.Tensor, num_classes: int, crop: int = 512, stride: int = 341
) -> torch.Tensor:
    """mmseg's sliding-window inference: overlapping ``crop`` windows, logits averaged."""
    b, _, h, w = x.shape
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    out = x.new_zeros(b, num_classes, h, w)
    count = x.new_zeros(1, 1, h, w)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride, max(h - crop, 0)), min(c * stride, max(w - crop, 0))
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            out[:, :, y1:y2, x1:x2] += net(x[:, :, y1:y2, x1:x2]).float()
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear, ``align_corners=False``, as mmseg resizes images and logits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def aug_test_log_probs(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scales: Sequence[float] = AUG_TEST_SCALES,
    flip: bool = True,
    size: Sequence[int] | None = None,
) -> torch.Tensor:
    """mmseg's aug test: the image at each scale (and flipped), logits resized to ``size``
    (default: the input's), softmax scores averaged. Returns their log, so that argmax and the
    cross-entropy read it as logits."""
    size = tuple(size or x.shape[-2:])
    h, w = x.shape[-2:]
    total = None
    for scale in scales:
        scaled = resize(x, (max(1, round(h * scale)), max(1, round(w * scale))))
        for flipped in (False, True) if flip else (False,):
            inp = scaled.flip(-1) if flipped else scaled
            logits = logits_fn(inp).float()
            if flipped:
                logits = logits.flip(-1)
            probs = resize(logits, size).softmax(1)
            total = probs if total is None else total + probs
    n = len(scales) * (2 if flip else 1)
    return (total / n).clamp_min(torch.finfo(total.dtype).tiny).log()

"""Do the maps mean something? The share of CAM mass on a digit's strokes, against chance.

For the digits demo a map that ignored the digit would put on the strokes about the share of the
image the strokes cover (``stroke_share``). ``cam_share`` is the share of the map's total mass
(sum of the [0, 1] map) on stroke pixels; a map that looks at the digit has ``cam_share`` well above
``stroke_share`` (``ratio`` > 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import CamError, compute_cam, degenerate_message, denormalize


def stroke_mask(image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Pixels of the stroke in an (H, W[, 3]) image in [0, 1], whatever the ink's polarity.

    The background level is the median of the border pixels; a pixel is stroke when it is at least
    ``threshold`` of the way from that level to the pixel farthest from it.
    """
    g = image.mean(-1) if image.ndim == 3 else image
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    dev = np.abs(g - np.median(border))
    peak = float(dev.max())
    if peak < 1e-6:
        return np.zeros(g.shape, dtype=bool)
    return dev >= threshold * peak


@dataclass(frozen=True)
class MeaningReport:
    method: str
    layer: str
    images: int  # images measured
    empty_maps: int  # maps that were zero everywhere (left out of the means)
    cam_share: float  # mean share of CAM mass on stroke pixels
    stroke_share: float  # mean share of the image covered by strokes
    ratio: float  # cam_share / stroke_share: 1 is chance
    above_chance: float  # fraction of images whose own cam share exceeds their stroke share

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.method} @ {self.layer}: {self.cam_share:.1%} of CAM mass on stroke pixels that "
            f"cover {self.stroke_share:.1%} of the image (ratio {self.ratio:.2f}, above chance on "
            f"{self.above_chance:.1%} of {self.images} images"
            + (f", {self.empty_maps} empty maps left out)" if self.empty_maps else ")")
        )


def stroke_energy(
    model: nn.Module,
    dataset: Any,
    mean: Sequence[float],
    std: Sequence[float],
    method: str = "gradcam",
    target_layer: str | None = None,
    use_true_class: bool = True,
    limit: int | None = None,
    batch_size: int = 64,
    threshold: float = 0.5,
) -> MeaningReport:
    """Measure ``MeaningReport`` over ``dataset`` (items: normalised CHW tensor, int label).

    Maps explain the true class (``use_true_class``) or the predicted one.
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("the dataset is empty: nothing to measure")
    cam_shares, stroke_shares, empty = [], [], 0
    method_name, layer = method, ""
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        x = torch.stack([torch.as_tensor(t) for t, _ in items]).float()
        labels = [int(y) for _, y in items]
        images = denormalize(x, mean, std)
        res = compute_cam(
            model,
            x.to(next(model.parameters()).device),
            targets=labels if use_true_class else None,
            method=method,
            target_layer=target_layer,
            images=images,
            batch_size=batch_size,
        )
        method_name, layer = res.method, res.layer
        if res.degenerate:
            raise CamError(degenerate_message(res.layer, x.shape[-1]))
        for img, cam in zip(images, res.maps):
            mask = stroke_mask(img, threshold)
            total = float(cam.sum())
            if total <= 0:
                empty += 1
                continue
            cam_shares.append(float(cam[mask].sum()) / total)
            stroke_shares.append(float(mask.mean()))
    if not cam_shares:
        raise ValueError(f"every {method_name} map was empty: the model gives no signal")
    cam_s, stroke_s = np.asarray(cam_shares), np.asarray(stroke_shares)
    return MeaningReport(
        method=method_name,
        layer=layer,
        images=n,
        empty_maps=empty,
        cam_share=float(cam_s.mean()),
        stroke_share=float(stroke_s.mean()),
        ratio=float(cam_s.mean() / stroke_s.mean()),
        above_chance=float((cam_s > stroke_s).mean()),
    )

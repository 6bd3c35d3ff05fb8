"""Segmentation FPS as Tables 6 and 7 measure it: one image at a time, inference only.

Semantic FPN at 512x512 and UperNet at 512x2048 (the short side times 1 or 4), 150 classes,
the forward pass of the network that ``SemanticSegmenter`` trains (no auxiliary head).
"""

from __future__ import annotations

from typing import Any

import torch

from ..paper import PAPER_SEG
from .measure import MEMORY_FORMATS, autocast, count, median_step_time, synchronize, takes_img_size
from .suites import BenchError, Log, Settings

ADE_CLASSES = 150
ASPECT = {"fpn": 1, "upernet": 4}  # width / height of the paper's measurement


def parse_seg_spec(spec: str) -> tuple[str, str]:
    """``DECODER/BACKBONE`` (``fpn/inceptionnext_tiny``) -> (decoder, backbone)."""
    decoder, sep, backbone = spec.partition("/")
    if not sep or decoder not in ASPECT or not backbone:
        raise BenchError(
            f"--seg-models {spec!r}: write DECODER/BACKBONE with DECODER fpn or upernet, "
            "e.g. fpn/inceptionnext_tiny"
        )
    return decoder, backbone


def input_size(decoder: str, short_side: int) -> tuple[int, int]:
    return short_side, short_side * ASPECT[decoder]


def bench_segmentation(
    decoder: str, backbone: str, settings: Settings, short_side: int, log: Log = print
) -> dict[str, Any]:
    """Params, MACs and frames per second of one segmentation network at batch 1."""
    from ..seg.networks import build_segmentation_net  # smp: imported only for --mode seg

    h, w = input_size(decoder, short_side)
    kwargs = {"img_size": (h, w)} if takes_img_size(backbone) else {}
    with torch.device("meta"):
        params, macs = count(
            build_segmentation_net(backbone, decoder, ADE_CLASSES, **kwargs), (h, w)
        )
    device = settings.device
    net = build_segmentation_net(backbone, decoder, ADE_CLASSES, **kwargs).to(device).eval()
    fmt = settings.memory_formats[-1]
    net = net.to(memory_format=MEMORY_FORMATS[fmt])
    x = torch.randn(1, 3, h, w, device=device).to(memory_format=MEMORY_FORMATS[fmt])

    def step() -> None:
        with torch.inference_mode(), autocast(device, settings.precision):
            net(x)

    log(f"  {decoder}/{backbone} at {h}x{w} ({fmt})")
    seconds = median_step_time(step, device, settings.warmup, settings.iters)
    synchronize(device)
    ref = PAPER_SEG.get((decoder, backbone))
    return {
        "decoder": decoder,
        "backbone": backbone,
        "input": f"{h}x{w}",
        "params_m": round(params, 2),
        "macs_g": round(macs, 1),
        "fps": round(1.0 / seconds, 3),
        "ms": round(seconds * 1e3, 2),
        "memory_format": fmt,
        "paper_fps_2080ti": ref.fps_2080ti if ref else None,
        "paper_miou": ref.miou if ref else None,
    }

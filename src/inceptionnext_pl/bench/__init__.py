"""Throughput benchmark (`inceptionnext-bench`): networks and token mixers, timed as in the paper.

Networks: training (forward, backward, AdamW step) and inference images/s at batch 128 (halved on
out-of-memory), the better of channels-first and channels-last, median of synchronised steps.
Token mixers: InceptionDWConv2d against 7x7 and 3x3 depthwise conv at InceptionNeXt-T's stages.
The command is ``bench.cli``; this package's import stays below it (measuring, reporting, plots).
"""

from .plot import PAPER_TOP1, plot_figure1
from .suites import BenchError, Settings, bench_mixers, bench_model

__all__ = [
    "PAPER_TOP1",
    "BenchError",
    "Settings",
    "bench_mixers",
    "bench_model",
    "plot_figure1",
]

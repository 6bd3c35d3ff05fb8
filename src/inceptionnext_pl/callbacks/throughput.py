"""Images per second in the logs, through Lightning's ThroughputMonitor."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ThroughputMonitor


def _batch_size(batch: Any) -> int:
    return batch[0].shape[0]


class Throughput(ThroughputMonitor):
    """ThroughputMonitor that counts the images of an ``(images, labels)`` batch (YAML-friendly)."""

    def __init__(self, window_size: int = 50) -> None:
        super().__init__(batch_size_fn=_batch_size, window_size=window_size)

"""Training callbacks that any LightningModule of the project can use."""

from .batchnorm import ReduceBatchNorm, reduce_batchnorm_stats
from .ema import EMA
from .finetune import FreezeBackbone
from .gradcam import GradCAMCallback
from .seeding import RankSeeds
from .seg_overlays import SegmentationOverlays
from .throughput import Throughput

__all__ = [
    "EMA",
    "FreezeBackbone",
    "GradCAMCallback",
    "RankSeeds",
    "SegmentationOverlays",
    "ReduceBatchNorm",
    "Throughput",
    "reduce_batchnorm_stats",
]

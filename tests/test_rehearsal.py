"""Every shipped config, as a user rehearses a real run: one training and one validation batch
(`--trainer.fast_dev_run=1`) on folders in ImageNet's and ADE20K's own layouts at their real
image sizes, with only the device, precision, batch size, workers and `pretrained` overridden.
The configs' transforms, image sizes, evaluation resize, inference mode and metrics run as set.
The demo configs are built for the 64 px digit sets and run in test_training / test_segmentation.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from pathlib import Path

import pytest
import torch

from inceptionnext_pl.callbacks import SegmentationOverlays
from inceptionnext_pl.cli import build_cli
from real_shapes import ADE_CLASSES, ADE_VAL_SIZES, WNIDS, BatchShapes, NetInputs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "configs").rglob("*.yaml")
    if "demo" not in p.stem
)
SEG_CONFIGS = [c for c in CONFIGS if c.startswith("configs/seg/")]
CLS_CONFIGS = [c for c in CONFIGS if c not in SEG_CONFIGS]

# A real run's command line, on one CPU: nothing else of the config changes.
REHEARSE = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.num_nodes=1",
    "--trainer.strategy=auto",
    "--trainer.sync_batchnorm=false",
    "--trainer.precision=32-true",
    "--trainer.fast_dev_run=1",
    "--trainer.enable_progress_bar=false",
    "--data.loader.batch_size=2",  # Mixup and UperNet's pooling BatchNorm need 2
    "--data.loader.num_workers=0",
    "--model.pretrained=null",
]


def rehearse(config: str, dataset: Path, root: Path, *observers: str):
    """``lightning fit --config CONFIG`` on ``dataset``; the run and its first batches' shapes."""
    args = ["fit", "--config", config, *REHEARSE, f"--data.dataset={dataset}"]
    args += [f"--trainer.default_root_dir={root}"]
    for observer in ("real_shapes.BatchShapes", *observers):
        args.append(f"--trainer.callbacks+={observer}")
    cli = build_cli(args)
    assert cli.trainer.state.finished
    (shapes,) = [c for c in cli.trainer.callbacks if isinstance(c, BatchShapes)]
    return cli, shapes.shapes


@pytest.mark.parametrize("config", CLS_CONFIGS)
def test_classification_config_rehearses_on_imagenet(config, imagenet_folder, tmp_path):
    cli, shapes = rehearse(config, imagenet_folder, tmp_path)
    size = cli.config.fit.data.image_size  # as the command read the config
    assert size == (384 if "384" in config else 224)
    assert shapes["train"][0] == (2, 3, size, size)  # the mixed batch keeps its images' size
    assert shapes["val"] == [(2, 3, size, size), (2,)]
    model, metrics = cli.model, cli.trainer.callback_metrics
    assert model.hparams.num_classes == len(WNIDS)
    assert model.model.get_classifier().out_features == len(WNIDS)
    assert {"train/loss", "val/loss", "val/acc1"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    assert torch.isfinite(torch.stack([p.sum() for p in model.model.parameters()])).all()


@pytest.fixture
def _return_memory():
    """A full-size UperNet step peaks near 8 GB: give it back to the system after each run."""
    yield
    gc.collect()
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# One worker runs these one after another, so that two 8 GB peaks never meet on a 24 GB machine.
@pytest.mark.xdist_group("full-size-segmentation")
@pytest.mark.usefixtures("_return_memory")
@pytest.mark.parametrize("config", SEG_CONFIGS)
def test_segmentation_config_rehearses_on_ade20k(config, ade_folder, tmp_path):
    cli, shapes = rehearse(config, ade_folder, tmp_path, "real_shapes.NetInputs")
    crop = tuple(cli.config.fit.data.augment.crop_size)
    assert crop == (512, 512)
    assert shapes["train"] == [(2, 3, *crop), (2, *crop)]
    # The first validation image, 683x512, fits 2048x512 as it is: 683 is not a multiple of 32.
    w, h = ADE_VAL_SIZES[0]
    assert shapes["val"] == [(1, 3, h, w), (1, h, w)]
    # fit's validation runs the image once, whole, even where the config sets the aug test
    (inputs,) = [c for c in cli.trainer.callbacks if isinstance(c, NetInputs)]
    assert inputs.shapes == [(1, 3, h, w)]
    model, metrics = cli.model, cli.trainer.callback_metrics
    assert model.hparams.num_classes == ADE_CLASSES
    assert {"train/loss", "val/loss", "val/mIoU", "val/mAcc", "val/aAcc"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    (overlays,) = [c for c in cli.trainer.callbacks if isinstance(c, SegmentationOverlays)]
    assert [p.name for p in overlays.written] == ["epoch_000.png"]  # drawn at the image's size

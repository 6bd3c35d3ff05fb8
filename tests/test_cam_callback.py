"""GradCAMCallback in real fits of ImageClassifier on the digits demo set."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image

from inceptionnext_pl.callbacks import GradCAMCallback
from inceptionnext_pl.cam import CamError
from inceptionnext_pl.data import ImageDataModule
from inceptionnext_pl.tasks import ImageClassifier

MODEL = "inceptionnext_atto"


def _datamodule() -> ImageDataModule:
    return ImageDataModule(
        dataset="digits",
        model_name=MODEL,
        image_size=32,
        loader=dict(batch_size=16, num_workers=0, persistent_workers=False, pin_memory=False),
        max_train_samples=32,
        max_val_samples=16,
        augment=dict(auto_augment=None),
        mixup=None,
    )


def _fit(root: Path, callbacks: list[Callback], logger) -> tuple[ImageClassifier, L.Trainer]:
    """Two short epochs whose result depends on BN statistics and on every random draw
    (shuffling, random-resized crops, flips, random erasing, drop path)."""
    L.seed_everything(0, verbose=False)
    module = ImageClassifier(MODEL, drop_path_rate=0.1, warmup_epochs=0, base_lr=4e-2)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        default_root_dir=root,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,  # the callback must skip the sanity check
        deterministic=True,
    )
    trainer.fit(module, datamodule=_datamodule())
    return module, trainer


class _LeakyCAM(Callback):
    """A careless CAM callback: a train-mode forward that updates BN running statistics."""

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        ds = trainer.datamodule.val_dataset
        x = torch.stack([ds[0][0], ds[1][0]])
        with torch.inference_mode():
            pl_module.model.train()(x)
        pl_module.model.eval()


def _same_weights(a: ImageClassifier, b: ImageClassifier) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> ImageClassifier:
    root = tmp_path_factory.mktemp("clean")
    return _fit(root, [], CSVLogger(root))[0]


def test_callback_logs_and_leaves_training_unchanged(tmp_path, clean_run):
    every = GradCAMCallback(num_images=4)
    every2 = GradCAMCallback(
        num_images=3, every_n_epochs=2, dirname="cam2", method="eigencam", target_layer="stages.2"
    )
    with_cb, trainer = _fit(tmp_path, [every, every2], TensorBoardLogger(tmp_path))
    # weights and BN statistics identical with and without the callback
    assert _same_weights(with_cb, clean_run)
    assert any("running_mean" in k for k in with_cb.model.state_dict())

    run_dir = Path(trainer.log_dir)
    assert [p.name for p in sorted((run_dir / "gradcam").iterdir())] == [
        "epoch_000.png",
        "epoch_001.png",
    ]
    assert [p.name for p in sorted((run_dir / "cam2").iterdir())] == ["epoch_001.png"]  # every 2nd
    with Image.open(run_dir / "gradcam" / "epoch_001.png") as im:
        assert im.mode == "RGB" and im.width > im.height > 50

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"gradcam/gradcam", "gradcam/eigencam"} <= set(events.Tags()["images"])
    logged = events.Images("gradcam/gradcam")
    assert len(logged) == 2 and logged[0].step < logged[1].step and logged[0].width > 50

    # `validate` runs it too (inside its own inference-mode loop)
    trainer.validate(with_cb, datamodule=_datamodule(), verbose=False)
    assert (run_dir / "gradcam" / f"epoch_{trainer.current_epoch:03d}.png").is_file()


class _RandomDraw(Callback):
    """A careless callback that draws from the global random generator (e.g. to pick images)."""

    def on_validation_epoch_end(self, trainer, pl_module):
        torch.rand(1)


@pytest.mark.parametrize("leak", [_LeakyCAM, _RandomDraw], ids=["bn-stats", "rng"])
def test_the_equality_check_would_catch_a_leak(tmp_path, clean_run, leak):
    """Same fit with a careless callback: weights differ, so the test above can fail."""
    leaky, trainer = _fit(tmp_path, [leak(), GradCAMCallback(num_images=2)], CSVLogger(tmp_path))
    assert not _same_weights(leaky, clean_run)
    # PNGs still land in the run directory with a logger that takes no images
    assert (Path(trainer.log_dir) / "gradcam" / "epoch_001.png").is_file()


def test_rank_zero_only(tmp_path):
    cb = GradCAMCallback(num_images=2)
    cb._inputs = torch.zeros(2, 3, 32, 32)  # as if set up
    cb.out_dir = tmp_path
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=False, current_epoch=0)
    cb.on_validation_epoch_end(trainer, pl_module=None)  # would fail if it did any work
    assert not any(tmp_path.iterdir())


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_images=0 must be between 1 and 32"):
        GradCAMCallback(num_images=0)
    with pytest.raises(ValueError, match="num_images=100 must be between 1 and 32"):
        GradCAMCallback(num_images=100)
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        GradCAMCallback(every_n_epochs=0)
    with pytest.raises(CamError, match="Unknown CAM method 'gradcum'.*layercam"):
        GradCAMCallback(method="gradcum")


def test_without_a_datamodule_the_error_says_what_to_do(tmp_path):
    dm = _datamodule()
    dm.setup("fit")
    module = ImageClassifier(MODEL, num_classes=10, warmup_epochs=0)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[GradCAMCallback()],
    )
    with pytest.raises(ValueError, match="trainer.datamodule.val_dataset.*fit with a datamodule"):
        trainer.fit(
            module, train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader()
        )

"""The paper's recipe reaches timm's transforms, and Mixup/CutMix runs on training batches only."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybePILToTensor, RandomResizedCropAndInterpolation
from torchvision import transforms as T

from inceptionnext_pl.data import IMAGENET_MEAN, IMAGENET_STD, ImageDataModule

NO_MIX = dict(mixup=None)


def _setup(**kwargs) -> ImageDataModule:
    loader = dict(batch_size=8, num_workers=0)
    dm = ImageDataModule(**{"dataset": "digits", "image_size": 32, "loader": loader, **kwargs})
    dm.setup("fit")
    return dm


def _by_type(compose, cls):
    found = [t for t in compose.transforms if isinstance(t, cls)]
    return found[0] if found else None


def test_default_train_transform_is_the_papers_recipe():
    """Table 9: RRC + flip, RandAugment rand-m9-mstd0.5-inc1, bicubic, RE 0.25 pixel, IN mean/std."""
    dm = _setup()
    tf = dm.train_dataset.transform
    rrc = tf.transforms[0]
    assert isinstance(rrc, RandomResizedCropAndInterpolation)
    assert rrc.size == (32, 32) and rrc.scale == (0.08, 1.0)
    assert rrc.ratio == pytest.approx((3 / 4, 4 / 3))
    assert rrc.interpolation == T.InterpolationMode.BICUBIC  # timm's default: bilinear

    flip = _by_type(tf, T.RandomHorizontalFlip)
    assert flip is not None and flip.p == 0.5
    assert _by_type(tf, T.RandomVerticalFlip) is None

    ra = _by_type(tf, RandAugment)
    assert ra is not None and ra.num_layers == 2  # the 'rand' default n=2
    assert {op.magnitude for op in ra.ops} == {9}
    assert {op.magnitude_std for op in ra.ops} == {0.5}
    assert "PosterizeIncreasing" in [op.name for op in ra.ops]  # the 'inc1' op set
    assert {op.hparams["interpolation"] for op in ra.ops} == {Image.BICUBIC}
    # timm leaves ColorJitter out while RandAugment is on (as in the official timm 0.6 runs)
    assert _by_type(tf, T.ColorJitter) is None

    # the tail (normalise, random erasing) runs per batch: in the loader or on the device
    assert isinstance(tf.transforms[-1], MaybePILToTensor)
    fin = dm.finisher
    assert fin.mean == IMAGENET_MEAN and fin.std == IMAGENET_STD
    erase = fin.eraser("cpu")
    assert isinstance(erase, RandomErasing)
    assert erase.probability == 0.25 and erase.mode == "pixel" and erase.per_pixel  # timm: 'const'
    assert (erase.min_count, erase.max_count) == (1, 1)


def test_split_pipeline_matches_timms_single_image_transform():
    """finisher(per_image(img)) == timm's full create_transform output, draw for draw."""
    import random

    import numpy as np

    from inceptionnext_pl.data import build_train_pipeline, build_train_transform

    recipe = dict(
        scale=(0.08, 1.0), ratio=(0.75, 4 / 3), hflip=0.5, vflip=0.0, auto_augment="rand-m9-mstd0.5-inc1",
        color_jitter=0.4, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        reprob=1.0, remode="pixel", recount=1,
    )  # fmt: skip
    full = build_train_transform(32, **recipe)
    per_image, finisher = build_train_pipeline(32, **recipe)
    img = Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8))
    for seed in range(5):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        a = full(img)
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        b = finisher(per_image(img))
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        batch = finisher(torch.stack([per_image(img)] * 4))  # batch mode: erasing per sample
        assert batch.shape == (4, 3, 32, 32)


def test_randaugment_posterize_at_full_magnitude_does_not_crash():
    """m9 + mstd0.5 reaches the cap 10, where PosterizeIncreasing keeps 0 bits (Pillow 13 raises)."""
    import copy

    ra = _by_type(_setup().train_dataset.transform, RandAugment)
    op = copy.deepcopy([o for o in ra.ops if o.name == "PosterizeIncreasing"][0])
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0.0
    img = Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy())
    out = op(img)
    assert out.mode == "RGB" and out.size == img.size and out.getextrema() == ((0, 0),) * 3
    op.magnitude = 5  # 2 bits kept: a real posterize, not black
    assert len(set(op(img).getdata())) > 1


def test_every_recipe_value_is_configurable():
    augment = dict(
        scale=(0.5, 0.9),
        ratio=(0.9, 1.1),
        hflip=0.0,
        vflip=0.3,
        auto_augment="rand-m7-n3",
        reprob=0.4,
        remode="const",
        recount=2,
    )
    dm = _setup(
        augment=augment,
        interpolation="bilinear",
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    tf = dm.train_dataset.transform
    rrc = tf.transforms[0]
    assert (
        rrc.scale == (0.5, 0.9)
        and rrc.ratio == (0.9, 1.1)
        and rrc.interpolation == T.InterpolationMode.BILINEAR
    )
    assert _by_type(tf, T.RandomHorizontalFlip) is None
    assert _by_type(tf, T.RandomVerticalFlip).p == 0.3
    ra = _by_type(tf, RandAugment)
    assert ra.num_layers == 3 and {op.magnitude for op in ra.ops} == {7}
    erase = dm.finisher.eraser("cpu")
    assert erase.probability == 0.4 and erase.mode == "const" and erase.max_count == 2
    assert dm.mean == (0.5, 0.5, 0.5) and dm.std == (0.25, 0.25, 0.25)
    assert dm.finisher.mean == (0.5, 0.5, 0.5) and dm.finisher.std == (0.25, 0.25, 0.25)


def test_color_jitter_applies_without_randaugment_and_light_recipe_is_light():
    tf = _setup(augment=dict(auto_augment=None, color_jitter=0.4)).train_dataset.transform
    jitter = _by_type(tf, T.ColorJitter)
    assert jitter is not None and jitter.brightness == (0.6, 1.4) and jitter.hue is None
    light = _setup(
        augment=dict(auto_augment=None, color_jitter=None, hflip=0.0, reprob=0.0)
    ).train_dataset.transform
    kinds = [type(t) for t in light.transforms]
    assert RandAugment not in kinds and T.ColorJitter not in kinds and RandomErasing not in kinds
    assert T.RandomHorizontalFlip not in kinds


def test_eval_transform_resizes_by_crop_pct_then_center_crops():
    dm = _setup(image_size=32, crop_pct=0.8, interpolation="random")
    tf = dm.val_dataset.transform
    resize, crop = tf.transforms[0], tf.transforms[1]
    assert isinstance(resize, T.Resize) and resize.size == 40  # short side to 32 / 0.8
    assert resize.interpolation == T.InterpolationMode.BICUBIC  # 'random' is training-only
    assert isinstance(crop, T.CenterCrop) and tuple(crop.size) == (32, 32)
    assert not any(
        isinstance(t, (RandAugment, RandomErasing, T.RandomHorizontalFlip)) for t in tf.transforms
    )
    x, _ = dm.val_dataset[0]
    y, _ = dm.val_dataset[0]
    assert torch.equal(x, y)  # deterministic


def test_training_items_are_augmented_and_normalised():
    dm = _setup(**NO_MIX)
    a, label_a = dm.train_dataset[5]
    b, label_b = dm.train_dataset[5]
    assert label_a == label_b and a.shape == (3, 32, 32) and not torch.equal(a, b)
    assert a.dtype == torch.float32  # item access applies the finisher
    raw = dm.train_dataset.__getitems__([5, 6])  # what loader workers ship: uint8
    assert raw[0][0].dtype == torch.uint8 and raw[0][0].shape == (3, 32, 32)
    x, y = next(iter(dm.train_dataloader()))  # no Trainer: the loader finishes the batch
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    # normalised with ImageNet statistics: black background maps to -mean/std
    assert x.min() < -1.5 and x.max() > 1.5


def _batch(dm, n=8):
    x = torch.randn(n, 3, 32, 32)
    y = torch.arange(n) % dm.num_classes
    return x, y


def test_mixup_runs_only_while_training():
    dm = _setup(mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0), label_smoothing=0.1)
    assert dm.mixup_active and dm.mixup_fn is not None
    fn = dm.mixup_fn
    assert (fn.mixup_alpha, fn.cutmix_alpha, fn.mix_prob, fn.switch_prob) == (0.8, 1.0, 1.0, 0.5)
    assert fn.mode == "batch" and fn.label_smoothing == 0.1 and fn.num_classes == 10

    x, y = _batch(dm)
    dm.trainer = SimpleNamespace(training=True)
    mx, my = dm.on_after_batch_transfer((x.clone(), y.clone()), 0)
    assert my.shape == (8, 10) and my.dtype == torch.float32
    assert torch.allclose(my.sum(1), torch.ones(8))
    assert my.min() >= 0.1 / 10 - 1e-6  # label smoothing folded into the soft targets
    assert not torch.equal(mx, x)  # images mixed (or cut and pasted)

    dm.trainer = SimpleNamespace(training=False)  # validation / test / predict
    vx, vy = dm.on_after_batch_transfer((x, y), 0)
    assert vx is x and vy is y and vy.dtype == torch.int64


def test_no_mixup_keeps_int_labels_for_the_module_to_smooth():
    dm = _setup(**NO_MIX, label_smoothing=0.1)
    assert not dm.mixup_active and dm.mixup_fn is None
    dm.trainer = SimpleNamespace(training=True)
    x, y = _batch(dm)
    assert dm.on_after_batch_transfer((x, y), 0)[1] is y
    assert dm.hparams.label_smoothing == 0.1  # the CLI links this to model.label_smoothing
    cutmix_only = _setup(mixup=dict(mixup_alpha=0.0, cutmix_alpha=1.0))
    assert cutmix_only.mixup_active
    assert not _setup(mixup=dict(mixup_alpha=0.0, cutmix_alpha=0.0)).mixup_active


class _Probe(L.LightningModule):
    """Records the target shapes each stage sees through a real Trainer."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 10)
        self.train_targets: list[tuple] = []
        self.val_targets: list[tuple] = []

    def forward(self, x):
        return self.net(x.mean((2, 3)))

    def training_step(self, batch, _):
        x, y = batch
        assert x.dtype == torch.float32  # finished on the device after transfer
        self.train_targets.append((tuple(y.shape), y.dtype))
        return torch.sum(-y * torch.log_softmax(self(x), 1), 1).mean()

    def validation_step(self, batch, _):
        self.val_targets.append((tuple(batch[1].shape), batch[1].dtype))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_uint8_batches_are_finished_after_transfer():
    dm = _setup(**NO_MIX, augment=dict(reprob=0.0))
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    dm.trainer = SimpleNamespace(training=True)
    out, _ = dm.on_after_batch_transfer((x, torch.tensor([0, 1])), 0)
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    assert dm.train_dataloader().finisher is None  # under a Trainer the loader ships uint8


def test_mixup_through_a_real_trainer():
    dm = ImageDataModule(
        dataset="digits",
        image_size=16,
        loader=dict(batch_size=8, num_workers=0),
        augment=dict(auto_augment=None, reprob=0.0),
    )
    probe = _Probe()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=2,
    )
    trainer.fit(probe, datamodule=dm)
    assert probe.train_targets == [((8, 10), torch.float32)] * 2  # soft targets while training
    assert probe.val_targets and set(probe.val_targets) == {((8,), torch.int64)}

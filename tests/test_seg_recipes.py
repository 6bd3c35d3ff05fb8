"""Segmentation as the paper's references ran it (issue 18): mmseg's multi-scale + flip test,
each family's stage-output norms, mmseg's heads, ConvNeXt's stage-wise LR decay, Swin on whole
images, and the classification recipes' cooldown epochs."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from timm.layers import LayerNorm2d
from torch import nn

from inceptionnext_pl import optim
from inceptionnext_pl.cli import build_cli
from inceptionnext_pl.errors import ConfigError
from inceptionnext_pl.seg.inference import AUG_TEST_SCALES, aug_test_log_probs
from inceptionnext_pl.seg.networks import build_segmentation_net
from inceptionnext_pl.tasks.segmentation import SemanticSegmenter
from real_shapes import ADE_VAL_SIZES, NetInputs
from test_rehearsal import REHEARSE

CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
       "--model.num_classes=150", "--model.pretrained=null"]  # fmt: skip


def _by_hand(net, x, scales, flip):
    """mmseg's aug test written out: resize, (mirror,) logits back to size, softmax, mean."""
    h, w = x.shape[-2:]
    probs = []
    for s in scales:
        scaled = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear")
        for mirrored in (False, True)[: 1 + flip]:
            out = net(scaled.flip(-1)).flip(-1) if mirrored else net(scaled)
            probs.append(F.interpolate(out, size=(h, w), mode="bilinear").softmax(1))
    return torch.stack(probs).mean(0)


def test_aug_test_averages_softmax_over_scales_and_mirrors():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 5, padding=2))
    x = torch.randn(2, 3, 20, 30)
    scales = (0.5, 1.0, 1.75)
    with torch.no_grad():
        got = aug_test_log_probs(net, x, scales, flip=True).exp()
        expected = _by_hand(net, x, scales, flip=True)
        assert torch.allclose(got, expected, atol=1e-6)
        # the mirrors and the scales each change the answer: the test can see either missing
        assert not torch.allclose(got, _by_hand(net, x, scales, flip=False), atol=1e-4)
        assert not torch.allclose(got, _by_hand(net, x, (1.0,), flip=True), atol=1e-4)
        assert aug_test_log_probs(net, x, scales, True, size=(40, 60)).shape == (2, 4, 40, 60)


def test_the_module_runs_the_aug_test_only_outside_fit(monkeypatch):
    """validate / test / predict average the scales; fit's validation loop stays single scale."""
    torch.manual_seed(0)
    module = SemanticSegmenter(
        "inceptionnext_atto", "fpn", decoder_channels=32, num_classes=4,
        test_scales=[0.75, 1.25], test_flip=True,
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 48, 64)
    trainer = type("T", (), {"state": type("S", (), {"fn": TrainerFn.VALIDATING})()})()
    monkeypatch.setattr(SemanticSegmenter, "trainer", property(lambda self: trainer))
    monkeypatch.setattr(module, "_trainer", trainer)
    with torch.no_grad():
        got = module(x).exp()
        assert torch.allclose(got, _by_hand(module.model, x, (0.75, 1.25), True), atol=1e-6)
        trainer.state.fn = TrainerFn.FITTING
        assert torch.equal(module(x), module.model(x))


@pytest.mark.parametrize(
    ("config", "aug"),
    [("configs/seg/upernet_tiny.yaml", True), ("configs/seg/fpn_tiny.yaml", False)],
)
def test_lightning_validate_runs_each_tables_evaluation(config, aug, ade_folder, tmp_path):
    """`lightning validate` on a real-sized ADE20K image: UperNet's config (Table 6) runs the
    net at six scales, each mirrored; FPN's (Table 7) once, on the image as it is."""
    args = ["validate", "--config", config, *REHEARSE, f"--data.dataset={ade_folder}",
            "--model.backbone=inceptionnext_atto", "--model.decoder_channels=32",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks+=real_shapes.NetInputs"]  # fmt: skip
    cli = build_cli(args)
    (inputs,) = [c for c in cli.trainer.callbacks if isinstance(c, NetInputs)]
    w, h = ADE_VAL_SIZES[0]
    if aug:
        assert cli.model.hparams.test_scales == list(AUG_TEST_SCALES)
        expected = [(1, 3, round(h * s), round(w * s)) for s in AUG_TEST_SCALES for _ in "ab"]
    else:
        assert not cli.model.hparams.test_scales and not cli.model.hparams.test_flip
        expected = [(1, 3, h, w)]
    assert inputs.shapes == expected
    assert torch.isfinite(cli.trainer.callback_metrics["val/mIoU"])
    del cli
    gc.collect()


@pytest.mark.parametrize(
    ("backbone", "kwargs", "norm"),
    [
        ("inceptionnext_atto", {}, nn.BatchNorm2d),
        ("convnext_tiny_k3_par1_8", {}, LayerNorm2d),
        ("convnext_atto", {}, LayerNorm2d),
        ("swin_tiny_patch4_window7_224", {"img_size": 64}, LayerNorm2d),
        ("resnet18", {}, None),
    ],
)
def test_each_family_gets_its_own_stage_norms(backbone, kwargs, norm):
    net = build_segmentation_net(backbone, "upernet", 5, decoder_channels=32, **kwargs)
    norms = list(net.stage_norms.norms)
    assert all(isinstance(n, nn.Identity) for n in norms[:2])  # the input and stride 2
    for n, c in zip(norms[2:], net.encoder.out_channels[2:]):
        assert type(n) is (norm or nn.Identity)
        assert norm is None or n.weight.shape == (c,)
    # they replace smp's LayerNorm on every UperNet level, not add to it
    assert all(isinstance(n, nn.Identity) for n in net.decoder.feature_norms)
    none = build_segmentation_net(
        backbone, "fpn", 5, decoder_channels=32, stage_norm="none", **kwargs
    )
    assert not any(p.numel() for p in none.stage_norms.parameters())
    if norm is nn.BatchNorm2d:  # what trainer.sync_batchnorm does to them
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        assert all(type(n) is nn.SyncBatchNorm for n in list(synced.stage_norms.norms)[2:])


def test_stage_norms_normalise_what_the_decoder_reads():
    torch.manual_seed(0)
    net = build_segmentation_net("convnext_atto", "fpn", 5, decoder_channels=32).eval()
    levels = net.features(torch.randn(2, 3, 64, 64))
    for f in levels[2:]:  # LayerNorm over channels: zero mean, unit variance per pixel
        assert torch.allclose(f.mean(1), torch.zeros(()), atol=1e-4)
        assert torch.allclose(f.var(1, unbiased=False), torch.ones(()), atol=1e-2)


@pytest.mark.parametrize("decoder", ["fpn", "upernet"])
def test_the_paper_heads_are_mmsegs(decoder):
    net = build_segmentation_net("inceptionnext_atto", decoder, 5)
    modules = list(net.decoder.modules()) + list(net.segmentation_head.modules())
    assert not any(isinstance(m, nn.GroupNorm | nn.UpsamplingBilinear2d) for m in modules)
    assert all(not m.align_corners for m in modules if isinstance(m, nn.Upsample))
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.decoder.modules())
    drop, cls = net.segmentation_head  # dropout 0.1, then the 1x1 classifier
    assert isinstance(drop, nn.Dropout2d) and drop.p == 0.1
    assert cls.kernel_size == (1, 1) and cls.out_channels == 5
    if decoder == "fpn":  # mmseg's FPNHead: 1, 1, 2, 3 conv-BN-ReLU steps from strides 4-32
        convs = [
            sum(isinstance(m, nn.Conv2d) for m in h.modules()) for h in net.decoder.scale_heads
        ]
        assert convs == [1, 1, 2, 3]
        assert [c.kernel_size for c in net.decoder.fpn_convs] == [(3, 3)] * 4


def test_convnext_stage_wise_lr_decay_as_its_upernet_recipe():
    module = SemanticSegmenter(
        "convnext_atto", "upernet", decoder_channels=32, num_classes=5, layer_decay=0.9
    )
    ids = module.layer_ids()
    groups = optim.param_groups(module.model, 0.05, layer_decay=0.9, layer_ids=ids)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(module.model.named_parameters())
    expected = {
        "encoder.model.stem_0.weight": 0.9**7,
        "encoder.model.stages_1.downsample.1.weight": 0.9**7,
        "encoder.model.stages_0.blocks.0.conv_dw.weight": 0.9**6,
        "encoder.model.stages_3.blocks.0.mlp.fc1.weight": 0.9**3,
        "stage_norms.norms.5.weight": 1.0,
        "decoder.psp.out_conv.0.weight": 1.0,
        "segmentation_head.1.weight": 1.0,
    }
    for name, value in expected.items():
        assert scale[id(named[name])] == pytest.approx(value), name
    assert decay[id(named["encoder.model.stages_3.blocks.0.mlp.fc1.bias"])] == 0.0
    assert decay[id(named["encoder.model.stages_3.blocks.0.mlp.fc1.weight"])] == 0.05
    # timm's schedule applies the scales
    opt = optim.create_optimizer(groups, "adamw", lr=1e-4, weight_decay=0.05)
    optim.create_schedule(opt, "poly", total_steps=10, power=1.0).step_update(num_updates=0)
    assert {round(g["lr"] / 1e-4, 6) for g in opt.param_groups} == {
        round(0.9**k, 6) for k in (7, 6, 5, 4, 3, 0)
    }
    with pytest.raises(ConfigError, match="layer_decay needs a backbone built of a stem"):
        SemanticSegmenter("resnet18", "upernet", num_classes=5, layer_decay=0.9).layer_ids()


def test_swin_takes_whole_images_padded_to_its_stride():
    net = build_segmentation_net(
        "swin_tiny_patch4_window7_224",
        "upernet",
        3,
        decoder_channels=32,
        img_size=64,
        strict_img_size=False,
    ).eval()
    assert net.size_divisor == 32 and net.fixed_size is None
    x = torch.randn(1, 3, 51, 83)  # 512x683-like: neither side divides by 4
    padded = F.pad(x, (0, 96 - 83, 0, 64 - 51))
    with torch.no_grad():
        assert torch.equal(net(x), net(padded)[..., :51, :83])
    # Swin's recipe keeps its position tables free of weight decay, as its norms
    assert net.no_weight_decay() and all(
        "relative_position_bias_table" in n for n in net.no_weight_decay()
    )


def test_the_recipes_cite_their_references(tmp_path):
    cli = build_cli(["--config", "configs/seg/baselines/upernet_convnext_tiny.yaml", *CPU,
                     f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
    hp = cli.model.hparams
    assert (hp.base_lr, hp.lr_base_batch, hp.weight_decay, hp.layer_decay) == (1e-4, 16, 0.05, 0.9)
    assert (hp.drop_path_rate, hp.inference, hp.test_flip) == (0.4, "whole", True)
    assert isinstance(cli.model.model.stage_norms.norms[2], LayerNorm2d)
    for config in ("upernet", "fpn"):
        cli = build_cli([f"--config=configs/seg/baselines/{config}_swin_tiny.yaml", *CPU,
                         f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
        assert cli.model.hparams.inference == "whole"
        assert cli.model.model.fixed_size is None and cli.model.model.size_divisor == 32
    for config, epochs in (("tiny", 310), ("small", 310), ("base", 310), ("atto", 460)):
        cli = build_cli([f"--config=configs/{config}.yaml", "--trainer.accelerator=cpu",
                         "--trainer.devices=1", "--trainer.strategy=auto", "--model.num_classes=10",
                         f"--trainer.default_root_dir={tmp_path}"], run=False)  # fmt: skip
        assert cli.model.hparams.cooldown_epochs == 10 and cli.trainer.max_epochs == epochs
    cli = build_cli(["--config=configs/base_384_finetune.yaml", "--trainer.accelerator=cpu",
                     "--trainer.devices=1", "--trainer.strategy=auto", "--model.num_classes=10",
                     "--model.pretrained=null", f"--trainer.default_root_dir={tmp_path}"],
                    run=False)  # fmt: skip
    assert cli.model.hparams.cooldown_epochs == 0 and cli.trainer.max_epochs == 30

"""SemanticSegmenter: the paper's sizes, exact backbone transfer, metrics, inference."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from inceptionnext_pl.bench.measure import count
from inceptionnext_pl.bench.table import main, seg_table
from inceptionnext_pl.cli import build_cli
from inceptionnext_pl.errors import ConfigError
from inceptionnext_pl.paper import PAPER_SEG
from inceptionnext_pl.seg.inference import slide_logits
from inceptionnext_pl.seg.networks import (
    DECODERS,
    POOLED_BATCHNORM,
    build_segmentation_net,
)
from inceptionnext_pl.seg.weights import feature_net_names
from inceptionnext_pl.tasks import ImageClassifier
from inceptionnext_pl.tasks.segmentation import SemanticSegmenter
from inceptionnext_pl.zoo import StateDictMismatchError


def test_sizes_match_the_paper(capsys):
    """Every row of Tables 6 and 7 this project can build, within 5% (the table command)."""
    main(["--seg"])
    printed = capsys.readouterr().out
    rows = seg_table()
    assert len(rows) == len(PAPER_SEG)
    for r in rows:
        assert abs(r["params_m"] - r["paper_params_m"]) / r["paper_params_m"] < 0.05, r
        assert abs(r["macs_g"] - r["paper_macs_g"]) / r["paper_macs_g"] < 0.05, r
        assert f"| {r['decoder']:7} | {r['backbone']:28} |" in printed


def test_the_module_builds_the_paper_network_on_meta():
    with torch.device("meta"):
        module = SemanticSegmenter(backbone="inceptionnext_tiny", decoder="fpn", num_classes=150)
    params, macs = count(module.model, (512, 512))
    ref = PAPER_SEG[("fpn", "inceptionnext_tiny")]
    assert abs(params - ref.params_m) / ref.params_m < 0.05
    assert abs(macs - ref.macs_g) / ref.macs_g < 0.05


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory):
    """An ImageClassifier checkpoint with non-trivial weights and BN statistics."""
    torch.manual_seed(3)
    module = ImageClassifier("inceptionnext_atto", num_classes=10)
    with torch.no_grad():
        for t in module.model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t).abs() if t.ndim == 1 else torch.randn_like(t))
    path = tmp_path_factory.mktemp("cls") / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path, {k: v.clone() for k, v in module.model.state_dict().items()}


@pytest.mark.parametrize("decoder", ["fpn", "upernet"])
def test_classification_backbone_loads_exactly(classifier_ckpt, decoder):
    path, cls_sd = classifier_ckpt
    seg = SemanticSegmenter(
        backbone="inceptionnext_atto", decoder=decoder, num_classes=11, pretrained=str(path)
    )
    names = feature_net_names(ImageClassifier("inceptionnext_atto", num_classes=10).model)
    enc = seg.model.encoder.state_dict()
    loaded = 0
    for key, value in cls_sd.items():
        target = "model." + names[key]
        if target in enc:
            assert torch.equal(enc[target], value), key
            loaded += 1
    # every encoder tensor came from the checkpoint: the backbone without its head
    assert loaded == len(enc) == len([k for k in cls_sd if not k.startswith("head.")])


def test_weights_of_another_backbone_are_refused_with_the_keys(classifier_ckpt):
    path, _ = classifier_ckpt
    with pytest.raises(StateDictMismatchError, match=r"stem\.0\.weight"):
        SemanticSegmenter(
            backbone="inceptionnext_atto",
            backbone_kwargs={"dims": (48, 96, 192, 384)},
            num_classes=11,
            pretrained=str(path),
        )


def test_metrics_against_a_hand_computed_confusion_matrix():
    module = SemanticSegmenter(backbone="inceptionnext_atto", num_classes=3, ignore_index=255)
    metrics = module.make_metrics()
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    metrics.update(pred[None], target[None])
    got = {k: float(v) for k, v in metrics.compute().items()}
    # Confusion matrix (rows truth, columns prediction), the ignored pixel left out:
    #   0: [1, 1, 0]   1: [1, 2, 0]   2: [1, 0, 1]
    iou = [1 / (2 + 3 - 1), 2 / (3 + 3 - 2), 1 / (2 + 1 - 1)]
    acc = [1 / 2, 2 / 3, 1 / 2]
    assert got["mIoU"] == pytest.approx(sum(iou) / 3)
    assert got["mAcc"] == pytest.approx(sum(acc) / 3)
    assert got["aAcc"] == pytest.approx(4 / 7)


def test_metrics_count_with_bincount_under_deterministic_mode(monkeypatch):
    """trainer.deterministic would make torchmetrics count a one-hot of pixels x classes^2."""
    from torchmetrics.classification import MulticlassJaccardIndex

    modes, update = [], MulticlassJaccardIndex.update

    def spy(self, *args):
        modes.append(torch.are_deterministic_algorithms_enabled())
        return update(self, *args)

    monkeypatch.setattr(MulticlassJaccardIndex, "update", spy)
    module = SemanticSegmenter(backbone="inceptionnext_atto", num_classes=150, decoder_channels=64)
    module.setup("validate")
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)  # no Trainer here
    x, mask = torch.randn(1, 3, 64, 85), torch.randint(0, 150, (1, 64, 85))
    torch.use_deterministic_algorithms(True)  # conftest restores the mode after the test
    module.eval().evaluate((x, mask), "val")
    assert modes == [False] and torch.are_deterministic_algorithms_enabled()


def test_sliding_window_matches_whole_image_on_a_pointwise_net():
    net = nn.Conv2d(3, 5, 1)
    x = torch.randn(2, 3, 37, 53)
    whole = net(x)
    slid = slide_logits(net, x, num_classes=5, crop=16, stride=11)
    assert torch.allclose(slid, whole, atol=1e-6)


def test_upernet_trains_with_its_auxiliary_head():
    net = build_segmentation_net("inceptionnext_atto", "upernet", num_classes=4)
    logits, aux = net.forward_train(torch.randn(2, 3, 64, 64))
    assert logits.shape == aux.shape == (2, 4, 64, 64)
    assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    fpn = build_segmentation_net("inceptionnext_atto", "fpn", num_classes=4)
    assert fpn.aux_head is None and fpn.forward_train(torch.randn(1, 3, 64, 64))[1] is None


# ADE20K evaluation sizes at a tenth (683x512 -> 68x51 ...), odd crops, a window's remainder.
ODD_SIZES = [(51, 68), (68, 51), (37, 53), (33, 97), (60, 60)]


@pytest.mark.parametrize("decoder", ["fpn", "upernet"])
def test_any_input_size_gives_logits_of_that_size(decoder):
    """The paper's heads resize each level to the next: they take the image as it is."""
    net = build_segmentation_net("inceptionnext_atto", decoder, 5, decoder_channels=64).eval()
    assert net.size_divisor == 1
    for h, w in ODD_SIZES:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            logits = net(x)
        assert logits.shape == (1, 5, h, w) and torch.isfinite(logits).all()
        train_logits, aux = net.train().forward_train(torch.randn(2, 3, h, w))
        net.eval()
        assert train_logits.shape == (2, 5, h, w)
        assert aux is None or aux.shape == (2, 5, h, w)
        with torch.no_grad():  # windows of 48 and the remainders at the edges
            assert slide_logits(net, x, 5, crop=48, stride=32).shape == (1, 5, h, w)


def test_a_decoder_that_needs_divisible_sides_is_padded_and_cropped():
    net = build_segmentation_net("inceptionnext_atto", "manet", 5, decoder_channels=64).eval()
    assert net.size_divisor == 32
    x = torch.randn(1, 3, 51, 68)
    padded = torch.nn.functional.pad(x, (0, 96 - 68, 0, 64 - 51))
    with torch.no_grad():  # the same as padding by hand and cropping the logits
        assert torch.equal(net(x), net(padded)[..., :51, :68])


def test_a_fixed_size_backbone_is_padded_up_or_refused_with_the_fix():
    net = build_segmentation_net("swin_tiny_patch4_window7_224", "fpn", 3, img_size=64).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 48, 40)).shape == (1, 3, 48, 40)  # padded up to 64x64
        assert slide_logits(net, torch.randn(1, 3, 64, 85), 3, crop=64, stride=43).shape == (
            1, 3, 64, 85)  # fmt: skip
        with pytest.raises(ConfigError, match=r"built for 64x64 inputs.*64x85.*inference: slide"):
            net(torch.randn(1, 3, 64, 85))


def test_a_size_the_backbone_cannot_take_is_one_line_from_the_command(tmp_path, capsys):
    from inceptionnext_pl.cli import main

    args = ["fit", "--config", "configs/seg/demo.yaml", "--trainer.fast_dev_run=1",
            "--model.backbone=swin_tiny_patch4_window7_224", "--model.backbone_kwargs={img_size: 32}",
            "--data.max_train_samples=4", "--data.max_val_samples=2", "--data.loader.batch_size=2",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "built for 32x32 inputs and cannot take 64x64" in err and "Traceback" not in err


def test_upernet_on_one_image_per_step_names_the_fix(tmp_path, capsys):
    from inceptionnext_pl.cli import main

    args = ["fit", "--config", "configs/seg/demo.yaml", "--trainer.fast_dev_run=1",
            "--model.decoder=upernet", "--data.loader.batch_size=1", "--data.max_train_samples=2",
            "--data.max_val_samples=2", f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "data.loader.batch_size 2 or more" in err and "Traceback" not in err


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_trains_over_ours_at_any_size(decoder):
    """smp's architectures over InceptionNeXt, at a size no stride divides; the ones that
    BatchNorm a global pool (POOLED_BATCHNORM) cannot train on one image, the others can."""
    width = None if decoder == "linknet" else 64  # LinkNet's width follows the encoder
    net = build_segmentation_net("inceptionnext_atto", decoder, 5, decoder_channels=width).train()
    logits = net(torch.randn(2, 3, 130, 170))
    assert logits.shape == (2, 5, 130, 170)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in net.encoder.parameters())
    one = torch.randn(1, 3, 130, 170)
    if decoder in POOLED_BATCHNORM:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            net(one)
    else:
        assert net(one).shape == (1, 5, 130, 170)


def test_decoder_options_reach_smps_architectures():
    unet = build_segmentation_net("inceptionnext_atto", "unet", 5, decoder_channels=64)
    widths = [m.out_channels for m in unet.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert widths[::2] == [64, 32, 16, 8, 4]  # halved level by level, as smp's 256..16
    net = build_segmentation_net(
        "inceptionnext_atto",
        "deeplabv3plus",
        5,
        output_stride=8,
        decoder_kwargs={"decoder_atrous_rates": (6, 12, 18)},
    )
    assert net.encoder.output_stride == 8 and net.size_divisor == 8
    rates = {m.dilation[0] for m in net.decoder.modules() if isinstance(m, nn.Conv2d)}
    assert rates == {1, 6, 12, 18}
    default = build_segmentation_net("inceptionnext_atto", "deeplabv3plus", 5)
    assert default.encoder.output_stride == 16  # DeepLabV3+'s own default
    upernet = build_segmentation_net("inceptionnext_atto", "upernet", 5, output_stride=16)
    assert upernet.encoder.model.feature_info.reduction() == [4, 8, 16, 16]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(decoder="deeplab"), "model.decoder='deeplab' is unknown; use one of: fpn, upernet"),
        (dict(decoder="fpn", output_stride=16), "needs every level down to stride 32"),
        (dict(decoder="fpn", decoder_kwargs={"x": 1}), "decoder_kwargs are arguments of smp"),
        (dict(decoder="linknet", decoder_channels=32), "linknet has no width to set"),
        (dict(decoder="pspnet", aux_head=True), "does not compute. Fix: aux_head off"),
    ],
)
def test_decoder_settings_that_cannot_work_are_one_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_segmentation_net("inceptionnext_atto", num_classes=5, **kwargs)


def test_an_unknown_decoder_is_one_line_from_the_command(tmp_path, capsys):
    from inceptionnext_pl.cli import main

    args = ["fit", "--config", "configs/seg/demo.yaml", "--model.decoder=deeplab",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "deeplabv3plus" in err and "Traceback" not in err


def test_a_run_reruns_from_its_saved_config(tmp_path):
    """config.yaml in the run directory keeps `task: segmentation`: it runs again as it is."""
    smoke = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--data.loader.batch_size=2",
             "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]",
             "--data.max_train_samples=2", "--data.max_val_samples=2"]  # fmt: skip
    build_cli(["fit", "--config", "configs/seg/demo.yaml", *smoke,
               f"--trainer.default_root_dir={tmp_path / 'a'}"])  # fmt: skip
    (saved,) = (tmp_path / "a").rglob("config.yaml")  # lightning_logs/version_0/
    assert "task: segmentation" in saved.read_text()
    again = build_cli(
        ["fit", "--config", str(saved), f"--trainer.default_root_dir={tmp_path / 'b'}"]
    )
    assert isinstance(again.model, SemanticSegmenter) and again.trainer.state.finished


def test_a_config_of_the_other_task_is_one_line():
    from inceptionnext_pl.cli import main

    with pytest.raises(SystemExit, match="name different tasks"):
        main(["fit", "--config", "configs/seg/demo.yaml", "--task", "classification"])


def test_paper_recipes_reach_the_module(tmp_path):
    """Table 6 / 7 / 10 values as the configs give them."""
    expected = {
        "configs/seg/fpn_tiny.yaml": ("fpn", 0.1, 2e-4, 32, 40000),
        "configs/seg/fpn_small.yaml": ("fpn", 0.2, 2e-4, 32, 40000),
        "configs/seg/fpn_base.yaml": ("fpn", 0.2, 2e-4, 32, 40000),
        "configs/seg/upernet_tiny.yaml": ("upernet", 0.2, 6e-5, 16, 160000),
        "configs/seg/upernet_small.yaml": ("upernet", 0.3, 6e-5, 16, 160000),
        "configs/seg/upernet_base.yaml": ("upernet", 0.4, 6e-5, 16, 160000),
    }
    for config, (decoder, dpr, lr, batch, steps) in expected.items():
        cli = build_cli(
            ["--config", config, "--trainer.accelerator=cpu", "--trainer.devices=1",
             "--trainer.strategy=auto", "--model.num_classes=150", "--model.pretrained=null",
             f"--trainer.default_root_dir={tmp_path}"],
            run=False,
        )  # fmt: skip
        hp, dm = cli.model.hparams, cli.datamodule
        assert (hp.decoder, hp.drop_path_rate, hp.base_lr, hp.lr_base_batch) == (
            decoder,
            dpr,
            lr,
            batch,
        )
        assert cli.trainer.max_steps == steps
        # per-GPU batch x the configs' 8 GPUs is the paper's global batch
        assert dm.batch_size * 8 == batch and dm.num_classes == 150 and dm.reduce_zero_label
        assert (
            cli.model.model.aux_head is not None
            if decoder == "upernet"
            else cli.model.model.aux_head is None
        )


@pytest.fixture(scope="module")
def seg_demo(tmp_path_factory, torch_threads):
    """The README's segmentation demo, once, as a user runs it."""
    root = tmp_path_factory.mktemp("segdemo")
    with torch_threads(2):  # as a user runs it: both cores, if the other workers leave them
        cli = build_cli(
            [
                "fit",
                "--config",
                "configs/seg/demo.yaml",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={root}",
            ]
        )
    return cli, root


@pytest.mark.timeout(900)
def test_seg_demo_reaches_its_miou(seg_demo):
    """>= 0.55 val/mIoU on the digit scenes, with logs, last/best checkpoints and overlays."""
    cli, _ = seg_demo
    best = cli.trainer.checkpoint_callback.best_model_score
    assert best is not None and best >= 0.55, best
    logdir = Path(cli.trainer.log_dir)
    assert list(logdir.glob("events.out.tfevents.*"))
    ckpts = {p.name for p in Path(cli.trainer.checkpoint_callback.dirpath).glob("*.ckpt")}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert len(list((logdir / "overlays").glob("epoch_*.png"))) == 4  # every 2nd of 8 epochs


def test_lightning_validate_prints_the_seg_demo_miou(seg_demo, validate_metric):
    _, root = seg_demo
    last = next(root.rglob("last.ckpt"))
    miou = validate_metric(
        "configs/seg/demo.yaml", last, root, "val/mIoU", "--trainer.callbacks=[]"
    )
    assert miou >= 0.55


@pytest.mark.timeout(600)
def test_seg_demo_trains_deeplabv3plus_at_output_stride_16(tmp_path, torch_threads):
    """The README's demo with ``--model.decoder deeplabv3plus``, for 2 of its 8 epochs.

    The full 8 epochs reach about 0.59 val/mIoU; after 2, it beats labelling every pixel
    background (the largest class: at most 1/11 mean IoU over the 11 classes).
    """
    with torch_threads(2):
        cli = build_cli(
            [
                "fit",
                "--config",
                "configs/seg/demo.yaml",
                "--model.decoder",
                "deeplabv3plus",
                "--trainer.max_epochs=2",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    net = cli.model.model
    assert type(net.decoder).__name__ == "DeepLabV3PlusDecoder"
    assert net.encoder.output_stride == 16
    assert cli.trainer.checkpoint_callback.best_model_score > 1 / 11
    assert list((Path(cli.trainer.log_dir) / "overlays").glob("epoch_*.png"))


def test_bench_seg_mode_measures_fps_at_batch_one(tmp_path, capsys):
    from inceptionnext_pl.bench.cli import main as bench

    argv = ["--mode", "seg", "--img-size", "64", "--warmup", "1", "--iters", "2", "--threads", "1"]
    bench(
        [
            *argv,
            "--seg-models",
            "fpn/inceptionnext_atto",
            "upernet/resnet18",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert "batch 1" in out and "short side 64 (UperNet 4x wide)" in out
    with open(tmp_path / "seg-cpu-fp32.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["decoder"], r["backbone"], r["input"]) for r in rows] == [
        ("fpn", "inceptionnext_atto", "64x64"),
        ("upernet", "resnet18", "64x256"),
    ]
    assert all(float(r["fps"]) > 0 for r in rows)
    with pytest.raises(SystemExit):
        bench(["--mode", "seg", "--seg-models", "segformer/inceptionnext_atto"])
    assert "DECODER/BACKBONE" in capsys.readouterr().err

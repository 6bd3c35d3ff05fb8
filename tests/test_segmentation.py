"""SemanticSegmenter: the paper's sizes, exact backbone transfer, metrics, inference."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from inceptionnext_pl.cli import build_cli
from inceptionnext_pl.models.table import count, main, seg_table
from inceptionnext_pl.paper import PAPER_SEG
from inceptionnext_pl.seg.networks import build_segmentation_net, slide_logits
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


ROOT = Path(__file__).resolve().parents[1]
SEG_CONFIGS = sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "configs" / "seg").rglob("*.yaml")
)
# What turns any segmentation config into a couple of CPU steps on the digit scenes.
SEG_SMOKE = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.sync_batchnorm=false",
    "--trainer.precision=32-true",
    "--trainer.fast_dev_run=1",
    "--trainer.enable_progress_bar=false",
    "--model.pretrained=null",
    "--data.dataset=digits_scenes",
    "--data.scale=[64,64]",
    "--data.augment.crop_size=[64,64]",
    "--data.augment.cat_max_ratio=1.0",
    "--data.eval_mask=resized",
    "--data.loader.batch_size=2",
    "--data.loader.val_batch_size=2",
    "--data.loader.num_workers=0",
    "--data.max_train_samples=8",
    "--data.max_val_samples=4",
]


@pytest.mark.parametrize("config", SEG_CONFIGS)
def test_every_seg_config_runs_a_step(config, tmp_path):
    extra = []
    if "swin" in config:  # the window grid is fixed when Swin is built: build it for 64 px
        extra = ["--model.backbone_kwargs={img_size: 64}", "--model.slide_crop=64"]
    cli = build_cli(
        ["fit", "--config", config, *SEG_SMOKE, *extra, f"--trainer.default_root_dir={tmp_path}"]
    )
    assert cli.trainer.state.finished
    model = cli.model
    assert isinstance(model, SemanticSegmenter) and model.hparams.num_classes == 11
    assert {"train/loss", "val/mIoU", "val/mAcc", "val/aAcc"} <= set(cli.trainer.callback_metrics)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


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
    with torch_threads(2):  # as a user runs it: both cores (the rest of the suite uses one)
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


def test_bench_seg_mode_measures_fps_at_batch_one(tmp_path, capsys):
    from inceptionnext_pl.bench import main as bench

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

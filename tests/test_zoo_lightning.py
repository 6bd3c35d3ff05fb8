"""Lightning checkpoints in and out of the zoo: read, export for timm, convert, fine-tune."""

from __future__ import annotations

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from inceptionnext_pl.callbacks import EMA
from inceptionnext_pl.tasks import ImageClassifier
from inceptionnext_pl.zoo import (
    LAYOUT_KEY,
    CheckpointFormatError,
    StateDictMismatchError,
    convert_file,
    export_checkpoint,
    load_pretrained,
    model_from_checkpoint,
    read_checkpoint,
)
from inceptionnext_pl.zoo.cli import main
from inceptionnext_pl.zoo.runs import RunDirError
from test_zoo_transfer import fast_model, fill_, small_convnext_variant

CLASSES = 10


class RandomImages(L.LightningDataModule):
    def __init__(self, classes: int = CLASSES, size: int = 32, batch_size: int = 4) -> None:
        super().__init__()
        self.num_classes, self.batch_size = classes, batch_size
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 3, size, size, generator=g)
        self.data = TensorDataset(x, torch.randint(0, classes, (8,), generator=g))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_trainer):
    """A real ImageClassifier trained for two steps with an EMA, saved by the Trainer."""
    root = tmp_path_factory.mktemp("run")
    module = ImageClassifier(
        model_name="inceptionnext_atto", num_classes=CLASSES, ema_decay=0.5, warmup_epochs=0
    )
    trainer = tiny_trainer(default_root_dir=root, max_steps=2, limit_val_batches=0)
    trainer.fit(module, RandomImages())
    trainer.save_checkpoint(root / "run.ckpt")
    raw = {k: v.clone() for k, v in module.model.state_dict().items()}
    (ema_cb,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
    ema = {k: v.clone() for k, v in ema_cb.module.state_dict().items()}
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)  # the two are distinguishable
    return root / "run.ckpt", raw, ema


def test_read_lightning_checkpoint_raw_and_ema(run, state_dicts_equal):
    path, raw, ema = run
    ckpt = read_checkpoint(path)
    assert ckpt.container == "lightning" and ckpt.has_ema and not ckpt.ema
    assert ckpt.arch["model_name"] == "inceptionnext_atto"
    assert set(ckpt.state_dict) == set(raw) and state_dicts_equal(ckpt.state_dict, raw)
    assert state_dicts_equal(read_checkpoint(path, ema=True).state_dict, ema)
    with pytest.raises(CheckpointFormatError, match=r"prefixes: model\.\)"):
        read_checkpoint(path, prefix="net.")


def test_finetune_from_lightning_checkpoint(run, state_dicts_equal):
    path, raw, ema = run
    model = fast_model("inceptionnext_atto", num_classes=3)
    report = load_pretrained(model, path, progress=False)
    assert (
        state_dicts_equal(model.state_dict(), raw, skip="head.fc2.")
        and not report.classifier_loaded
    )
    assert "EMA weights (ema=True)" in str(report)
    load_pretrained(model, path, ema=True, progress=False)
    assert state_dicts_equal(model.state_dict(), ema, skip="head.fc2.")


def test_export_loads_in_timm_with_the_printed_call(run, tmp_path, capsys, state_dicts_equal):
    path, raw, ema = run
    dst = tmp_path / "atto10.safetensors"
    assert main(["export", str(path), str(dst), "--ema"]) == 0
    out = capsys.readouterr().out
    call = (
        f"timm.create_model('inceptionnext_atto', pretrained=True, num_classes=10, "
        f"pretrained_cfg_overlay=dict(file='{dst}', num_classes=10))"
    )
    assert call in out
    model = eval(call, {"timm": timm})
    assert state_dicts_equal(model.state_dict(), ema)  # the fine-tuned classifier included


def test_export_1000_class_checkpoint_exact_timm_call(tmp_path, state_dicts_equal):
    """A Lightning checkpoint made by `convert`, exported, then timm's plain overlay call."""
    src = fast_model("inceptionnext_atto", seed=7).state_dict()
    torch.save(src, tmp_path / "official.pth")
    res = convert_file(
        tmp_path / "official.pth", tmp_path / "run.ckpt", model_name="inceptionnext_atto"
    )
    assert res.target == "lightning" and res.num_classes == 1000
    module = ImageClassifier.load_from_checkpoint(tmp_path / "run.ckpt")
    assert state_dicts_equal(module.model.state_dict(), src)

    for suffix in (".safetensors", ".pth"):
        dst = tmp_path / f"export{suffix}"
        res = export_checkpoint(tmp_path / "run.ckpt", dst)
        assert res.timm_call() == (
            f"timm.create_model('inceptionnext_atto', pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='{dst}'))"
        )
        model = timm.create_model(
            "inceptionnext_atto", pretrained=True, pretrained_cfg_overlay=dict(file=str(dst))
        )
        assert state_dicts_equal(model.state_dict(), src)


def test_export_refuses_what_it_cannot_check(tmp_path, run):
    torch.save(fast_model("inceptionnext_atto").state_dict(), tmp_path / "plain.pth")
    with pytest.raises(CheckpointFormatError, match="not a Lightning checkpoint.*convert"):
        export_checkpoint(tmp_path / "plain.pth", tmp_path / "out.pth")
    with pytest.raises(StateDictMismatchError, match="inceptionnext_tiny"):
        export_checkpoint(run[0], tmp_path / "out.pth", model_name="inceptionnext_tiny")
    assert not (tmp_path / "out.pth").exists()


def test_lightning_weight_averaging_layout(tmp_path, state_dicts_equal):
    # Lightning's WeightAveraging callbacks save the average as `state_dict` and move the
    # trained weights to `current_model_state`.
    raw = small_convnext_variant().state_dict()
    avg = {k: v + 1 for k, v in raw.items()}
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in avg.items()},
            "current_model_state": {f"model.{k}": v for k, v in raw.items()},
            "averaging_state": {"n_averaged": torch.tensor(3)},
            "pytorch-lightning_version": L.__version__,
        },
        tmp_path / "wa.ckpt",
    )
    assert state_dicts_equal(read_checkpoint(tmp_path / "wa.ckpt").state_dict, raw)
    assert state_dicts_equal(read_checkpoint(tmp_path / "wa.ckpt", ema=True).state_dict, avg)


def test_convert_between_official_timm_and_facebook(tmp_path, capsys, state_dicts_equal):
    src = small_convnext_variant()
    fill_(src, 8)
    sd = src.state_dict()
    torch.save(sd, tmp_path / "timm.pth")
    assert (
        main(["convert", str(tmp_path / "timm.pth"), str(tmp_path / "fb.pth"), "--to", "facebook"])
        == 0
    )
    fb = torch.load(tmp_path / "fb.pth")
    assert "downsample_layers.0.0.weight" in fb and "stages.0.0.dwconv.conv.weight" in fb
    assert fb["stages.0.0.pwconv1.weight"].ndim == 2  # facebook's Linear pointwise layers
    # official == facebook for the ConvNeXt variants; back to timm keys is lossless
    convert_file(tmp_path / "fb.pth", tmp_path / "official.pth", to="official")
    assert state_dicts_equal(torch.load(tmp_path / "official.pth"), fb)
    convert_file(tmp_path / "fb.pth", tmp_path / "back.safetensors")
    back = read_checkpoint(tmp_path / "back.safetensors")
    assert back.container == "safetensors" and set(back.state_dict) == set(sd)
    assert state_dicts_equal(back.state_dict, sd)
    capsys.readouterr()

    atto = tmp_path / "atto.pth"
    torch.save(fast_model("inceptionnext_atto").state_dict(), atto)
    assert main(["convert", str(atto), str(tmp_path / "x.pth"), "--to", "facebook"]) == 1
    assert "Only ConvNeXt-style networks" in capsys.readouterr().err
    assert (
        main(["convert", str(atto), str(tmp_path / "x.pth"), "--model", "inceptionnext_tiny"]) == 1
    )
    err = capsys.readouterr().err
    assert "does not fit inceptionnext_tiny (1000 classes)" in err and "shape mismatch" in err
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("num_classes", [5, None])
def test_image_classifier_starts_from_the_file_backbone(
    tmp_path, num_classes, state_dicts_equal, tiny_trainer
):
    src = fast_model("inceptionnext_atto", seed=9).state_dict()
    torch.save(src, tmp_path / "official.pth")
    module = ImageClassifier(
        model_name="inceptionnext_atto",
        num_classes=num_classes,
        pretrained=str(tmp_path / "official.pth"),
    )
    if num_classes is not None:  # the weights are in place as soon as the module is built
        assert state_dicts_equal(module.model.state_dict(), src, skip="head.fc2.")
    else:  # the head waits for the data's class count: built, and loaded, in setup
        assert module.model is None
    tiny_trainer(default_root_dir=tmp_path, limit_val_batches=1).validate(
        module, RandomImages(classes=5)
    )
    assert state_dicts_equal(module.model.state_dict(), src, skip="head.fc2.")
    assert module.model.get_classifier().out_features == 5


def test_the_task_declares_its_layout_in_the_checkpoint(run):
    path, raw, _ = run
    saved = torch.load(path, map_location="cpu", weights_only=False)
    layout = saved[LAYOUT_KEY]
    assert {k: layout[k] for k in ("task", "network", "ema_callback", "arch")} == {
        "task": "classification",
        "network": "model.",
        "ema_callback": "EMA",
        "arch": {"model_name": "inceptionnext_atto", "num_classes": CLASSES, "model_kwargs": {}},
    }
    assert layout["trained"] == {"epoch": saved["epoch"], "step": saved["global_step"]}
    assert read_checkpoint(path).arch["model_name"] == "inceptionnext_atto"


def test_the_weights_layer_reads_the_declared_layout_not_its_own(run, tmp_path, state_dicts_equal):
    """A checkpoint that keeps its network and EMA elsewhere is read where it says."""
    path, raw, ema = run
    saved = torch.load(path, map_location="cpu", weights_only=False)
    saved["state_dict"] = {
        "net." + k.removeprefix("model."): v for k, v in saved["state_dict"].items()
    }
    saved["callbacks"] = {"Average": saved["callbacks"]["EMA"]}
    saved[LAYOUT_KEY] |= {"network": "net.", "ema_callback": "Average", "added_later": 1}
    moved = tmp_path / "moved.ckpt"
    torch.save(saved, moved)
    state_dicts_equal(read_checkpoint(moved).state_dict, raw)
    state_dicts_equal(read_checkpoint(moved, ema=True).state_dict, ema)


def test_a_run_rebuilds_from_its_directory_raw_or_ema(run, tmp_path, state_dicts_equal):
    path, raw, ema = run
    run_dir = tmp_path / "runs" / "demo" / "lightning_logs" / "version_0" / "checkpoints"
    run_dir.mkdir(parents=True)
    (run_dir / "last.ckpt").write_bytes(path.read_bytes())
    model, ckpt, report = model_from_checkpoint(tmp_path / "runs" / "demo")
    assert not model.training and ckpt.path == run_dir / "last.ckpt"
    state_dicts_equal(model.state_dict(), raw)
    assert report.classifier_loaded and "Lightning checkpoint" in str(report)
    model, _, _ = model_from_checkpoint(run_dir / "last.ckpt", ema=True)
    state_dicts_equal(model.state_dict(), ema)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="directory without weights"):
        model_from_checkpoint(tmp_path / "empty")


def test_a_segmentation_run_is_not_taken_for_a_classifier(tmp_path):
    from inceptionnext_pl.tasks.segmentation import SemanticSegmenter

    module = SemanticSegmenter(backbone="resnet18", decoder="fpn", num_classes=3)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "seg.ckpt"
    trainer.save_checkpoint(path)
    ckpt = read_checkpoint(path)
    assert ckpt.lightning.task == "segmentation" and ckpt.arch["backbone"] == "resnet18"
    with pytest.raises(CheckpointFormatError, match="segmentation module, not of ImageClassifier"):
        model_from_checkpoint(path)


def test_cli_convert_and_export_take_a_run_directory(run, tmp_path, capsys, state_dicts_equal):
    path, raw, _ = run
    run_dir = tmp_path / "runs" / "demo" / "version_0" / "checkpoints"
    run_dir.mkdir(parents=True)
    (run_dir / "last.ckpt").write_bytes(path.read_bytes())
    assert main(["export", str(tmp_path / "runs" / "demo"), str(tmp_path / "raw.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "runs"), str(tmp_path / "raw.pth")]) == 0
    for out in ("raw.safetensors", "raw.pth"):
        state_dicts_equal(read_checkpoint(tmp_path / out).state_dict, raw)
    assert main(["convert", str(tmp_path / "nowhere.ckpt"), str(tmp_path / "x.pth")]) == 1
    assert "No checkpoint file at" in capsys.readouterr().err

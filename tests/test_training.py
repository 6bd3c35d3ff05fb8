"""ImageClassifier and the `lightning` command: every config, precision, resume, DDP, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from inceptionnext_pl.callbacks import EMA
from inceptionnext_pl.cli import build_cli, expand_bases
from inceptionnext_pl.data import DataError
from inceptionnext_pl.errors import ConfigError
from inceptionnext_pl.models import UnknownModelError
from inceptionnext_pl.tasks import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]
# What turns any config into a few CPU steps on the digits set.
SMOKE = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.num_nodes=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.fast_dev_run=1",
    "--trainer.enable_progress_bar=false",
    "--data.dataset=digits",
    "--data.image_size=32",
    "--data.loader.batch_size=4",
    "--data.loader.num_workers=0",
    "--data.max_train_samples=16",
    "--data.max_val_samples=8",
]


def run_cli(args: list[str], tmp_path: Path):
    return build_cli([args[0], *args[1:], f"--trainer.default_root_dir={tmp_path}"])


def test_paper_recipe_reaches_the_components(tmp_path):
    cli = run_cli(
        [
            "fit",
            "--config",
            "configs/tiny.yaml",
            *SMOKE,
            "--data.loader.batch_size=8",
            "--trainer.fast_dev_run=2",
        ],
        tmp_path,
    )
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    assert model.hparams.drop_path_rate == 0.1 and model.hparams.model_kwargs == {
        "ls_init_value": 1e-6
    }
    assert model.model.stages[3].blocks[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert (
        dm.mixup_active
        and dm.augment.auto_augment == "rand-m9-mstd0.5-inc1"
        and dm.augment.reprob == 0.25
    )
    assert model.hparams.label_smoothing == 0.1  # linked from data
    assert dm.hparams.model_name == "inceptionnext_tiny"  # linked from model
    opt = trainer.optimizers[0]
    # 4e-3 at 4096: here 1e-3 * 8 * 1 device * 4 accumulation / 1024.
    assert model.effective_lr == pytest.approx(1e-3 * 8 * 4 / 1024)
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0.0]
    decay = [g for g in opt.param_groups if g["weight_decay"] == 0.05]
    nd_ids = {id(p) for g in no_decay for p in g["params"]}
    assert id(model.model.stages[0].blocks[0].gamma) in nd_ids
    assert id(model.model.stem[1].weight) in nd_ids and id(model.model.stem[0].bias) in nd_ids
    assert id(model.model.stem[0].weight) in {id(p) for g in decay for p in g["params"]}
    assert type(opt).__name__ == "AdamW"


def test_config_bases_compose():
    args = expand_bases(["fit", "--config", "configs/ablations/band_kernel_7.yaml"])
    assert args[:3] == ["fit", "--config", str((ROOT / "configs/tiny.yaml").resolve())] or args[
        2
    ].endswith("tiny.yaml")
    assert "band_kernel_size: 7" in args[-1] and "__base__" not in args[-1]


def test_print_config_validate_test_predict(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        build_cli(["fit", "--config", "configs/demo.yaml", "--print_config"])
    assert e.value.code == 0
    printed = capsys.readouterr().out
    assert "model_name: inceptionnext_atto" in printed and "dataset: digits" in printed
    base = ["--config", "configs/demo.yaml", *SMOKE[:-1], "--trainer.callbacks=[]"]
    for sub in ("validate", "test", "predict"):
        cli = run_cli([sub, *base], tmp_path)
        assert cli.trainer.state.finished
    out = capsys.readouterr().out
    assert "val/acc1" in out and "test/acc1" in out


def test_a_run_reruns_from_its_saved_config(tmp_path):
    """config.yaml in the run directory is a config of its own: `lightning fit --config` it."""
    once = [a for a in SMOKE if "fast_dev_run" not in a]  # which saves no config
    once += ["--trainer.max_steps=1", "--trainer.limit_val_batches=1"]
    run_cli(
        ["fit", "--config", "configs/demo.yaml", *once, "--trainer.callbacks=[]"], tmp_path / "a"
    )
    (saved,) = (tmp_path / "a").rglob("config.yaml")  # lightning_logs/version_0/
    assert "task: classification" in saved.read_text()
    again = run_cli(["fit", "--config", str(saved)], tmp_path / "b")
    assert isinstance(again.model, ImageClassifier) and again.trainer.state.finished


@pytest.mark.parametrize(
    "args, error, match",
    [
        (["--model.bogus_key=1"], SystemExit, "bogus_key"),  # jsonargparse's own error
        (["--model.base_lr=-1"], ConfigError, "base_lr"),
        (["--data.loader.batch_size=zero"], SystemExit, "batch_size"),
        (["--model.model_name=inceptionnext_tinny"], UnknownModelError, "inceptionnext_tiny"),
        (["--model.num_classes=7"], DataError, "7 classes"),
        (["--data.batch_size=8"], DataError, "data.loader.batch_size"),  # a key that moved
    ],
)
def test_bad_config_values_name_the_key(args, error, match, tmp_path, capsys):
    with pytest.raises(error) as e:
        run_cli(["fit", "--config", "configs/demo.yaml", *SMOKE, *args], tmp_path)
    text = str(e.value) + capsys.readouterr().err
    assert match in text


def test_num_classes_mismatch_gives_both_numbers(tmp_path, digits_dm):
    trainer = L.Trainer(accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"7 classes.*10 classes"):
        trainer.fit(ImageClassifier("inceptionnext_atto", num_classes=7), datamodule=digits_dm())


def _fit(tmp_path: Path, dm, max_epochs: int, ckpt_path=None, callbacks=(), **trainer_kwargs):
    L.seed_everything(0, workers=True)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        callbacks=[ckpt, *callbacks],
        default_root_dir=tmp_path,
        deterministic=True,
        **trainer_kwargs,
    )
    model = ImageClassifier("inceptionnext_atto", base_lr=2e-3, warmup_epochs=1, drop_path_rate=0.1)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, model


class _Killed(Exception):
    pass


class _KillAtEpoch(L.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise _Killed


def test_resume_matches_an_uninterrupted_run(tmp_path, digits_dm):
    t_full, m_full = _fit(tmp_path / "full", digits_dm(), 2)
    with pytest.raises(_Killed):
        _fit(tmp_path / "cut", digits_dm(), 2, callbacks=[_KillAtEpoch(1)])
    last = tmp_path / "cut" / "ckpt" / "last.ckpt"
    assert last.is_file() and not list((tmp_path / "cut" / "ckpt").glob("*.tmp*"))
    t_res, m_res = _fit(tmp_path / "cut", digits_dm(), 2, ckpt_path=str(last))
    for (k, a), b in zip(m_full.state_dict().items(), m_res.state_dict().values()):
        assert torch.equal(a, b), k
    assert t_full.callback_metrics["val/acc1"] == t_res.callback_metrics["val/acc1"]
    # The checkpoint reloads on its own, with the class count the data gave.
    reloaded = ImageClassifier.load_from_checkpoint(last)
    assert reloaded.hparams.num_classes == 10


def test_bf16_mixed_and_ema_side_by_side(tmp_path, digits_dm):
    L.seed_everything(0)
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    model = ImageClassifier("inceptionnext_atto", ema_decay=0.9, warmup_epochs=0)
    trainer.fit(model, datamodule=digits_dm())
    metrics = trainer.callback_metrics
    assert {"val/acc1", "val_ema/acc1", "train/loss_epoch"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss_epoch"])
    # The EMA copy moved towards the trained weights but is not them, and it was never optimized.
    (ema,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
    w, e = model.model.stem[0].weight, ema.module.stem[0].weight
    assert not torch.equal(w, e) and not e.requires_grad
    ema_ids = {id(q) for q in ema.module.parameters()}
    assert all(
        id(p) not in ema_ids for g in trainer.optimizers[0].param_groups for p in g["params"]
    )
    assert not any(n.startswith("model_ema") for n in model.state_dict())  # DDP never sees it


def test_freeze_backbone_then_layer_decay(tmp_path, digits_dm):
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    model = ImageClassifier(
        "inceptionnext_atto", freeze_backbone_epochs=1, layer_decay=0.8, warmup_epochs=0
    )

    class Snap(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snaps.append(
                (
                    pl_module.model.stem[0].weight.detach().clone(),
                    pl_module.model.head.fc2.weight.detach().clone(),
                )
            )

    snaps = []
    start = None

    class First(L.Callback):
        def on_train_start(self, trainer, pl_module):
            nonlocal start
            start = (
                pl_module.model.stem[0].weight.detach().clone(),
                pl_module.model.head.fc2.weight.detach().clone(),
            )

    trainer.callbacks.extend([First(), Snap()])
    trainer.fit(model, datamodule=digits_dm())
    assert torch.equal(snaps[0][0], start[0])  # backbone frozen in epoch 0
    assert not torch.equal(snaps[0][1], start[1])  # the head trained
    assert not torch.equal(snaps[1][0], snaps[0][0])  # backbone trains from epoch 1
    scales = {g["lr_scale"] for g in trainer.optimizers[0].param_groups}
    assert len(scales) > 2 and max(scales) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, torch_threads):
    """The README's quickstart, once: configs/demo.yaml as a user runs it."""
    root = tmp_path_factory.mktemp("demo")
    with torch_threads(2):  # as a user runs it: both cores, if the other workers leave them
        cli = build_cli(
            [
                "fit",
                "--config",
                "configs/demo.yaml",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={root}",
            ]
        )
    return cli, root


@pytest.mark.timeout(900)
def test_demo_reaches_its_accuracy(demo_run):
    """>= 97% val/acc1 on the digits set, with TensorBoard logs and last/best checkpoints."""
    cli, _ = demo_run
    best = cli.trainer.checkpoint_callback.best_model_score
    assert best is not None and best >= 0.97, best
    logdir = Path(cli.trainer.log_dir)
    assert list(logdir.glob("events.out.tfevents.*"))
    ckpts = {p.name for p in Path(cli.trainer.checkpoint_callback.dirpath).glob("*.ckpt")}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert len(list((logdir / "gradcam").glob("epoch_*.png"))) == 4  # every 2nd of 8 epochs


def test_demo_maps_fall_on_the_strokes(demo_run):
    """Grad-CAM means something: the demo model's maps sit on the digit's strokes."""
    from inceptionnext_pl.cam.meaning import stroke_energy

    cli, _ = demo_run
    dm, model = cli.datamodule, cli.model.model
    report = stroke_energy(
        model, dm.val_dataset, dm.mean, dm.std, method="gradcam++", target_layer="stages.1"
    )
    assert report.images == len(dm.val_dataset) == 360
    assert report.ratio >= 1.5, report  # chance is 1.0: the share of the image the strokes cover
    assert report.above_chance >= 0.75, report


def test_finetune_demo_starts_from_the_checkpoint(demo_run, tmp_path):
    cli, root = demo_run
    source = ImageClassifier.load_from_checkpoint(next(root.rglob("last.ckpt"))).model

    class FirstStep(L.Callback):
        def on_train_start(self, trainer, pl_module):
            for (k, a), b in zip(
                source.state_dict().items(), pl_module.model.state_dict().values()
            ):
                assert torch.equal(a, b), k  # the whole network, head included: 10 classes both

    ft = build_cli(
        [
            "--config",
            "configs/finetune_demo.yaml",
            f"--model.pretrained={root}",
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            "--data.max_train_samples=256",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    ft.trainer.callbacks.append(FirstStep())
    ft.trainer.fit(ft.model, datamodule=ft.datamodule)
    assert ft.trainer.state.finished
    assert ft.trainer.callback_metrics["val/acc1"] >= 0.9


def test_ddp_two_processes_on_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable,
        "-m",
        "inceptionnext_pl.cli",
        "fit",
        "--config",
        "configs/demo.yaml",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=[]",
        "--data.image_size=32",
        "--data.loader.batch_size=8",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Effective LR" in proc.stdout + proc.stderr
    assert "world 2" in proc.stdout + proc.stderr


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch, digits_dm):
    """A write that dies half-way leaves the previous checkpoint intact and no partial file."""
    from fsspec.implementations.local import LocalFileOpener

    trainer = L.Trainer(accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False)
    trainer.fit(ImageClassifier("inceptionnext_atto", warmup_epochs=0), datamodule=digits_dm())
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()

    def dying_write(self, data):
        LocalFileOpener.__dict__["_orig_write"](self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(LocalFileOpener, "_orig_write", LocalFileOpener.write, raising=False)
    monkeypatch.setattr(LocalFileOpener, "write", dying_write)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_lightning_validate_command_on_the_demo_checkpoint(demo_run, validate_metric):
    """The console script as a user types it: exit status 0 and val/acc1 printed."""
    _, root = demo_run
    last = next(root.rglob("last.ckpt"))
    assert validate_metric("configs/demo.yaml", last, root, "val/acc1") >= 0.97


def test_ckpt_path_last_resumes_the_run_directory(tmp_path):
    """`lightning fit --config ... --ckpt_path last` continues the newest last.ckpt of the run."""
    args = [
        "fit",
        "--config",
        "configs/demo.yaml",
        *SMOKE[:-2],
        "--trainer.fast_dev_run=false",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--data.max_train_samples=64",
        "--data.max_val_samples=16",
    ]
    first = run_cli([*args, "--trainer.max_epochs=1"], tmp_path)
    assert first.trainer.global_step == 2
    resumed = run_cli([*args, "--trainer.max_epochs=2", "--ckpt_path=last"], tmp_path)
    assert Path(resumed.trainer.ckpt_path).name == "last.ckpt"
    assert resumed.trainer.global_step == 4  # two more steps, not four from scratch
    with pytest.raises(SystemExit, match="no last.ckpt"):
        run_cli([*args, "--ckpt_path=last"], tmp_path / "empty")


def test_fit_with_plain_dataloaders(digits_dm):
    """Without a datamodule: num_classes given, the LR scaled by the loader's batch size."""
    dm = digits_dm()
    dm.setup("fit")
    model = ImageClassifier("inceptionnext_atto", num_classes=10, warmup_epochs=0)
    trainer = L.Trainer(accelerator="cpu", fast_dev_run=2, logger=False, enable_progress_bar=False)
    trainer.fit(model, dm.train_dataloader(), dm.val_dataloader())
    assert model.effective_lr == pytest.approx(1e-3 * 16 / 1024)

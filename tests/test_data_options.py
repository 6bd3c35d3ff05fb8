"""The data option groups (data.augment / data.mixup / data.loader) and the keys that moved there."""

from __future__ import annotations

import glob

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from inceptionnext_pl.data import (
    AugmentConfig,
    DataError,
    ImageDataModule,
    LoaderConfig,
    MixupConfig,
    SegmentationDataModule,
    check_moved_keys,
)
from inceptionnext_pl.data.options import MOVED_KEYS


class _Model(L.LightningModule):
    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()


def _parse(datamodule, args: list[str]):
    cli = LightningCLI(_Model, datamodule, run=False, args=args, save_config_callback=None)
    return cli.datamodule


def test_groups_nest_in_the_cli_and_null_turns_mixup_off(tmp_path):
    dm = _parse(
        ImageDataModule,
        [
            "--data.dataset=digits",
            "--data.loader.batch_size=6",
            "--data.augment.auto_augment=null",
            "--data.mixup.cutmix_alpha=0.5",
        ],
    )
    assert dm.loader == LoaderConfig(batch_size=6) and dm.batch_size == 6
    assert dm.augment.auto_augment is None and dm.augment.reprob == 0.25  # the rest: defaults
    assert dm.mixup_config == MixupConfig(cutmix_alpha=0.5) and dm.mixup_active
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  dataset: digits\n  mixup: null\n  loader: {num_workers: 0}\n")
    dm = _parse(ImageDataModule, ["--config", str(config)])
    assert dm.mixup_config is None and not dm.mixup_active and dm.loader.num_workers == 0
    seg = _parse(
        SegmentationDataModule,
        [
            "--data.dataset=digits_scenes",
            "--data.augment.crop_size=[64,64]",
            "--data.scale=[64,64]",
        ],
    )
    assert seg.crop_size == (64, 64) and seg.num_classes == 11 and seg.loader.val_batch_size == 1


def test_old_flat_keyword_arguments_name_their_new_key():
    with pytest.raises(DataError, match=r"data.cutmix -> data.mixup.cutmix_alpha") as err:
        ImageDataModule(dataset="digits", cutmix=1.0, num_workers=2)
    assert "data.num_workers -> data.loader.num_workers" in str(err.value)
    with pytest.raises(DataError, match=r"data.mixup=0.8 is a number.*data.mixup.mixup_alpha: 0.8"):
        ImageDataModule(dataset="digits", mixup=0.8)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['bogus'\]"):
        ImageDataModule(dataset="digits", bogus=1)
    with pytest.raises(DataError, match=r"data.loader has no field\(s\) \['workers'\]"):
        ImageDataModule(dataset="digits", loader={"workers": 2})
    with pytest.raises(DataError, match=r"data.loader.batch_size must be >= 1"):
        ImageDataModule(dataset="digits", loader=LoaderConfig(batch_size=0))


def test_old_keys_on_the_command_line_and_in_configs_name_their_new_key(tmp_path):
    from inceptionnext_pl.cli import expand_bases

    with pytest.raises(
        DataError, match=r"(?s)in the command line moved.*data.cutmix -> data.mixup.cutmix_alpha"
    ):
        check_moved_keys(["fit", "--data.cutmix=0.5"])
    with pytest.raises(DataError, match=r"data.mixup -> data.mixup.mixup_alpha"):
        check_moved_keys(["fit", "--data.mixup", "0.3"])
    check_moved_keys(["fit", "--data.mixup=null", "--data.mixup.mixup_alpha=0.3"])  # new keys

    base = tmp_path / "base.yaml"
    base.write_text("data:\n  batch_size: 64\n  auto_augment: null\n")
    child = tmp_path / "child.yaml"
    child.write_text("__base__: base.yaml\ndata:\n  mixup_switch_prob: 0.2\n")
    with pytest.raises(DataError) as err:
        check_moved_keys(expand_bases(["fit", "--config", str(child)]))
    text = str(err.value)
    for old in ("batch_size", "auto_augment", "mixup_switch_prob"):
        assert f"data.{old} -> data.{MOVED_KEYS[old]}" in text
    assert str(base) in text and "an inline config" in text  # the base file, the child's rest


@pytest.mark.parametrize("config", sorted(glob.glob("configs/**/*.yaml", recursive=True)))
def test_every_config_uses_the_new_keys(config):
    module = SegmentationDataModule if "configs/seg/" in config else ImageDataModule
    check_moved_keys(["fit", "--config", config], module.moved_keys)
    with open(config) as f:
        data = (yaml.safe_load(f) or {}).get("data") or {}
    assert not set(data) & (set(module.moved_keys) - {"mixup"})


def test_segmentation_flat_loader_keys_name_the_loader_group():
    moved = SegmentationDataModule.moved_keys
    check_moved_keys(["fit", "--data.scale=[64,64]", "--data.mixup=0.2"], moved)  # its own keys
    with pytest.raises(DataError, match=r"data.num_workers -> data.loader.num_workers"):
        check_moved_keys(["fit", "--data.num_workers=2"], moved)


def test_hyperparameters_are_primitive_and_rebuild_the_module(tmp_path):
    dm = ImageDataModule(
        dataset="digits",
        augment=AugmentConfig(hflip=0.0),
        mixup=MixupConfig(mixup_alpha=0.2),
        loader=dict(batch_size=4, num_workers=0),
    )
    path = tmp_path / "hp.pt"
    torch.save(dict(dm.hparams), path)
    loaded = torch.load(path, weights_only=True)  # what checkpoint loading does
    assert loaded["augment"]["hflip"] == 0.0 and loaded["mixup"]["mixup_alpha"] == 0.2
    again = ImageDataModule(**loaded)
    assert again.augment == dm.augment and again.mixup_config == dm.mixup_config
    assert again.loader == dm.loader
    seg = SegmentationDataModule(dataset="digits_scenes", augment=dict(crop_size=(32, 32)))
    torch.save(dict(seg.hparams), path)
    seg_again = SegmentationDataModule(**torch.load(path, weights_only=True))
    assert seg_again.augment == seg.augment and seg_again.class_names == seg.class_names

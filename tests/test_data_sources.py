"""ImageDataModule over every source: ImageNet folder tree, hub-schema parquet, save_to_disk, digits.

The test data are real photos (scikit-image's bundled samples) saved in the modes ImageNet and
local folders really contain: RGB and grayscale JPEGs, a CMYK JPEG and an RGBA PNG, under wnid
directories / a wnid ClassLabel.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from inceptionnext_pl.data import (
    DataError,
    ImageDataModule,
    TrainLoader,
    decode_rgb,
    load_digits_dataset,
)

WNIDS = ["n01440764", "n01443537", "n01484850"]
SIZE = 24
LIGHT = dict(  # cheap settings: the transforms themselves are tested in test_data_transforms.py
    image_size=SIZE,
    loader=dict(batch_size=2, num_workers=0),
    mixup=None,
    augment=dict(auto_augment=None, reprob=0.0),
)


def light(**loader) -> dict:
    """LIGHT with some loader settings changed."""
    return {**LIGHT, "loader": {**LIGHT["loader"], **loader}}


def _photos() -> list[Image.Image]:
    """Small real photos in the modes found in ImageNet and in local folders."""
    from skimage import data

    def small(a: np.ndarray) -> Image.Image:
        img = Image.fromarray(a)
        img.thumbnail((48, 48))
        return img

    rgb = [
        small(data.astronaut()),
        small(data.coffee()),
        small(data.chelsea()),
        small(data.rocket()),
    ]
    gray = small(data.camera())  # mode L
    cmyk = small(data.coffee()).convert("CMYK")
    rgba = small(data.astronaut()).convert("RGBA")
    rgba.putalpha(128)
    return rgb + [gray, cmyk, rgba]


def _save(img: Image.Image, path: str) -> None:
    img.save(path, format="PNG" if path.endswith(".png") else "JPEG", quality=90)


def _names(i: int) -> str:
    return "png" if i == 6 else "JPEG"  # the RGBA photo is a PNG, the others JPEGs


@pytest.fixture(scope="module")
def photos():
    return _photos()


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory, photos):
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG like the official repo expects."""
    root = tmp_path_factory.mktemp("imagenet")
    counts = {"train": 0, "val": 0}
    for split, per_class in (("train", 3), ("val", 2)):
        for c, wnid in enumerate(WNIDS):
            os.makedirs(root / split / wnid)
            for k in range(per_class):
                i = (c * per_class + k) % len(photos)
                _save(photos[i], str(root / split / wnid / f"{wnid}_{k}.{_names(i)}"))
                counts[split] += 1
    return root, counts


def _hub_dataset(photos, n: int, offset: int):
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=WNIDS)}
    )
    images, labels = [], []
    for k in range(n):
        i = (k + offset) % len(photos)
        buf = io.BytesIO()
        photos[i].save(buf, format="PNG" if photos[i].mode == "RGBA" else "JPEG")
        images.append({"bytes": buf.getvalue(), "path": f"{WNIDS[k % 3]}_{k}.JPEG"})
        labels.append(k % 3)
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory, photos):
    """The hub's layout: data/<split>-0000i-of-0000n.parquet, image bytes embedded."""
    root = tmp_path_factory.mktemp("parquet")
    os.makedirs(root / "data")
    for s in range(2):
        _hub_dataset(photos, 6, 6 * s).to_parquet(
            str(root / "data" / f"train-{s:05d}-of-00002.parquet")
        )
    _hub_dataset(photos, 5, 1).to_parquet(str(root / "data" / "validation-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def disk_dir(tmp_path_factory, photos):
    import datasets

    root = tmp_path_factory.mktemp("disk") / "saved"
    dd = datasets.DatasetDict(
        {"train": _hub_dataset(photos, 8, 0), "validation": _hub_dataset(photos, 4, 3)}
    )
    dd.save_to_disk(str(root))
    return root


def _check_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    assert x.dtype == torch.float32 and x.ndim == 4 and tuple(x.shape[1:]) == (3, SIZE, SIZE)
    assert y.dtype == torch.int64 and y.ndim == 1 and len(y) == len(x)
    assert int(y.min()) >= 0 and int(y.max()) < num_classes
    assert torch.isfinite(x).all()


def _labels(loader) -> list[int]:
    out = []
    for x, y in loader:
        _check_batch(x, y, 3)
        out += y.tolist()
    return out


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_decode_converts_every_mode_to_rgb(photos, mode):
    src = photos[4] if mode in ("L", "I;16") else photos[0]
    img = src.convert("I;16") if mode == "I;16" else src.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG" if mode in ("L", "CMYK") else "PNG")
    out = decode_rgb({"bytes": buf.getvalue(), "path": None})
    assert out.mode == "RGB" and out.size == img.size
    arr = np.asarray(out).astype(int)
    if mode in ("L", "I;16"):  # grey stays grey: three equal channels, and not saturated
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
        assert arr.std() > 10
    else:  # the colours survive the conversion
        ref = np.asarray(photos[0].convert("RGB")).astype(int)
        assert np.abs(arr - ref).mean() < 25


def test_imagenet_folder_tree(imagenet_tree, tmp_path):
    root, counts = imagenet_tree
    dm = ImageDataModule(dataset=str(root), cache_dir=str(tmp_path), **LIGHT)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.class_names == WNIDS
    assert len(dm.train_dataset) == counts["train"] and len(dm.val_dataset) == counts["val"]
    train = _labels(dm.train_dataloader())
    assert len(train) == counts["train"] - counts["train"] % 2  # drop_last
    # validation: every file once, labelled by its wnid directory
    assert sorted(_labels(dm.val_dataloader())) == sorted([0, 0, 1, 1, 2, 2])
    x, y = dm.val_dataset[0]
    assert x.shape == (3, SIZE, SIZE) and isinstance(y, int)
    dm.check_num_classes(3)


def test_grey_image_stays_grey_through_the_loader(imagenet_tree, tmp_path):
    """The grayscale JPEG arrives as 3 equal channels once the normalisation is undone."""
    root, _ = imagenet_tree
    dm = ImageDataModule(dataset=str(root), cache_dir=str(tmp_path), **LIGHT)
    dm.setup("validate")
    hf = dm.val_dataset.hf
    index = [i for i, row in enumerate(hf) if Image.open(row["image"]["path"]).mode == "L"][0]
    x, _ = dm.val_dataset[index]
    pixels = x * torch.tensor(dm.std)[:, None, None] + torch.tensor(dm.mean)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(
        pixels[1], pixels[2], atol=1e-5
    )


@pytest.mark.parametrize("as_glob", [False, True])
def test_parquet_in_hub_schema(parquet_dir, tmp_path, as_glob):
    dataset = str(parquet_dir / "data" / "*.parquet") if as_glob else str(parquet_dir)
    dm = ImageDataModule(dataset=dataset, cache_dir=str(tmp_path), **LIGHT)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.class_names == WNIDS
    assert len(dm.train_dataset) == 12 and len(dm.val_dataset) == 5
    assert len(_labels(dm.train_dataloader())) == 12
    assert _labels(dm.val_dataloader()) == [k % 3 for k in range(5)]


def test_save_to_disk_directory(disk_dir):
    dm = ImageDataModule(dataset=str(disk_dir), **LIGHT)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.class_names == WNIDS
    assert len(_labels(dm.train_dataloader())) == 8
    assert _labels(dm.val_dataloader()) == [0, 1, 2, 0]


def test_digits_demo_set():
    import datasets

    dd = load_digits_dataset()
    assert set(dd) == {"train", "validation"}
    assert len(dd["train"]) == 1437 and len(dd["validation"]) == 360  # 1,797 in all
    assert isinstance(dd["train"].features["image"], datasets.Image)
    assert dd["train"].features["label"].names == [str(d) for d in range(10)]
    # stratified: every class holds ~20% of its images in validation
    counts = np.bincount(dd["validation"]["label"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    img = dd["train"][0]["image"]
    assert img.mode == "RGB" and img.size == (8, 8)
    # fixed split: the first validation image is always the same digit image
    first = np.asarray(dd["validation"][0]["image"])
    from sklearn.datasets import load_digits

    raw = load_digits().images
    matches = [
        i for i in range(len(raw)) if np.array_equal(np.round(raw[i] * 255 / 16), first[..., 0])
    ]
    assert matches  # the pixels are the real sklearn digits, not synthetic

    dm = ImageDataModule(dataset="digits", **light(batch_size=64))
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.class_names == [str(d) for d in range(10)]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, SIZE, SIZE) and y.dtype == torch.int64
    assert len(dm.train_dataloader()) == 1437 // 64


@pytest.mark.parametrize("source", ["tree", "parquet", "disk", "digits"])
def test_streaming_reads_each_validation_sample_once(
    source, imagenet_tree, parquet_dir, disk_dir, tmp_path
):
    dataset = {
        "tree": str(imagenet_tree[0]),
        "parquet": str(parquet_dir),
        "disk": str(disk_dir),
        "digits": "digits",
    }[source]
    kw = {**LIGHT, "max_val_samples": 40} if source == "digits" else LIGHT
    streamed = ImageDataModule(dataset=dataset, streaming=True, cache_dir=str(tmp_path), **kw)
    mapped = ImageDataModule(dataset=dataset, streaming=False, cache_dir=str(tmp_path), **LIGHT)
    streamed.setup("fit")
    mapped.setup("validate")
    assert streamed.class_names == mapped.class_names
    val = [y for _, ys in streamed.val_dataloader() for y in ys.tolist()]
    if source == "digits":
        assert len(val) == 40
    else:
        assert sorted(val) == sorted(mapped.val_dataset.hf[mapped.hparams.label_column])
    # the train stream has a fixed length in whole batches (so schedulers and DDP know it)
    train_loader = streamed.train_dataloader()
    batches = list(train_loader)
    assert len(batches) == len(train_loader) >= 1
    for x, y in batches:
        _check_batch(x, y, streamed.num_classes)


def test_streaming_epochs_reshuffle_with_persistent_workers(parquet_dir, tmp_path):
    """`datasets` ignores set_epoch in persistent workers unless it is shared; check it is."""
    dm = ImageDataModule(
        dataset=str(parquet_dir),
        streaming=True,
        cache_dir=str(tmp_path),
        **light(num_workers=2, persistent_workers=True, shuffle_buffer_size=16),
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, TrainLoader) and loader.num_workers == 2 and loader.persistent_workers

    def epoch_paths() -> list[str]:
        return [y for _, ys in loader for y in ys.tolist()]

    orders = [epoch_paths() for _ in range(3)]
    assert all(len(o) == 12 for o in orders)
    assert len({tuple(o) for o in orders}) == 3  # each pass reshuffled


def test_eval_geometry_comes_from_the_model(tmp_path):
    base = dict(dataset="digits", loader=dict(batch_size=2, num_workers=0), mixup=None)
    dm = ImageDataModule(model_name="inceptionnext_base_384", **base)
    dm.setup("validate")
    assert (dm.image_size, dm.crop_pct) == (384, 1.0)
    dm = ImageDataModule(model_name="convnext_tiny", **base)
    dm.setup("validate")
    assert (dm.image_size, dm.crop_pct) == (224, 0.95)
    resize = dm.val_dataset.transform.transforms[0]
    assert resize.size == int(224 / 0.95)
    dm = ImageDataModule(model_name="convnext_tiny", image_size=32, crop_pct=0.5, **base)
    dm.setup("validate")
    assert (dm.image_size, dm.crop_pct) == (32, 0.5)
    assert dm.val_dataset[0][0].shape == (3, 32, 32)
    dm = ImageDataModule(**base)  # no model: timm's ImageNet defaults
    dm.setup("validate")
    assert (dm.image_size, dm.crop_pct) == (224, 0.875)


def test_model_head_mismatch_names_both_numbers():
    dm = ImageDataModule(dataset="digits", **LIGHT)
    with pytest.raises(DataError, match="setup"):
        dm.check_num_classes(10)
    dm.setup("validate")
    dm.check_num_classes(10)
    with pytest.raises(DataError, match=r"1000 classes.*'digits' has 10 classes"):
        dm.check_num_classes(1000)


def test_max_samples_takes_a_fixed_seeded_subset():
    a = ImageDataModule(dataset="digits", max_train_samples=50, max_val_samples=20, seed=3, **LIGHT)
    b = ImageDataModule(dataset="digits", max_train_samples=50, max_val_samples=20, seed=3, **LIGHT)
    for dm in (a, b):
        dm.setup("fit")
    assert len(a.train_dataset) == 50 and len(a.val_dataset) == 20
    assert a.val_dataset.hf["label"] == b.val_dataset.hf["label"]
    assert len(set(a.val_dataset.hf["label"])) > 3  # a random subset, not the first rows


def test_lightning_can_recreate_the_train_loader():
    """Lightning re-creates loaders to add a DistributedSampler; our options must survive."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DataLoader, DistributedSampler

    dm = ImageDataModule(dataset="digits", **LIGHT)
    dm.setup("fit")
    with _replace_dunder_methods(DataLoader, "dataset"):  # what Lightning wraps the hooks in
        loader = dm.train_dataloader()
    sampler = DistributedSampler(dm.train_dataset, num_replicas=2, rank=1, shuffle=True)
    new = _update_dataloader(loader, sampler)
    assert isinstance(new, TrainLoader) and new.sampler is sampler
    assert new.finisher is dm.finisher and new.epoch_fn == dm._current_epoch
    assert new.drop_last and new.batch_size == loader.batch_size
    x, y = next(iter(new))
    assert x.dtype == torch.float32 and len(x) == 2

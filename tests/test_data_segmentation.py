"""SegmentationDataModule: every source, ADE20K's label rules, the mmseg transforms, bad inputs,
DDP shards, and the digits_scenes demo set.

The test data encode their labels in their pixels (class c is drawn in PALETTE[c]), so after any
random rescale, crop and flip the image must still show each label's colour where the mask says.
"""

from __future__ import annotations

import colorsys
import io
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from inceptionnext_pl.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    SegmentationDataModule,
    load_digit_scenes,
)
from inceptionnext_pl.data.ade20k import ADE20K_CLASSES, ADE20K_HUB_ID
from inceptionnext_pl.data.digit_scenes import SCENES_PER_SPLIT, render_split
from inceptionnext_pl.data.digits import digits_split
from inceptionnext_pl.data.seg_transforms import (
    PhotoMetricDistortion,
    RandomCatCrop,
    Rescale,
    build_seg_train_transform,
    rescaled_size,
)
from inceptionnext_pl.data.segmentation import LabelMap

PALETTE = np.array(
    [[20, 20, 20], [230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [30, 230, 230]],
    dtype=np.uint8,
)
LOADER = dict(batch_size=2, val_batch_size=1, num_workers=0)
SMALL = dict(scale=(64, 48), augment=dict(crop_size=(32, 32), photometric=False), loader=LOADER)


def _blocks(seed: int, h: int = 36, w: int = 48, values=(1, 2, 3, 4)) -> np.ndarray:
    """A mask of 12x12 blocks with labels from ``values`` (raw values, before any reduction)."""
    rng = np.random.default_rng(seed)
    grid = rng.choice(values, size=(-(-h // 12), -(-w // 12)))
    return np.kron(grid, np.ones((12, 12), dtype=np.int64))[:h, :w].astype(np.uint8)


def _image_for(labels: np.ndarray) -> np.ndarray:
    """RGB pixels whose colour is the label's palette entry (255 / out of range: grey)."""
    out = np.full((*labels.shape, 3), 128, dtype=np.uint8)
    ok = labels < len(PALETTE)
    out[ok] = PALETTE[labels[ok]]
    return out


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    jpeg = {"quality": 98, "subsampling": 0}  # no chroma subsampling: colours stay put
    Image.fromarray(array).save(buf, format=fmt, **(jpeg if fmt == "JPEG" else {}))
    return buf.getvalue()


def _rows(n: int, seed: int, *, reduce: bool, fmt: str = "PNG") -> tuple[list, list]:
    """n (image, mask) cells; with ``reduce`` mask values are ADE-style (label + 1, 0 = other)."""
    images, masks = [], []
    for i in range(n):
        raw = _blocks(seed + i, values=(0, 1, 2, 3, 4) if reduce else (0, 1, 2, 3))
        labels = np.where(raw == 0, 255, raw - 1) if reduce else raw
        images.append({"bytes": _encode(_image_for(labels), fmt), "path": f"img_{i}.{fmt.lower()}"})
        masks.append({"bytes": _encode(raw), "path": f"img_{i}.png"})
    return images, masks


def _denormalise(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x * std + mean) * 255).permute(1, 2, 0).numpy()


def _check_aligned(image: torch.Tensor, mask: torch.Tensor, ignore: int = 255) -> int:
    """Interior pixels (5x5 neighbourhood of one label, away from the crop's border; bilinear
    resizing blends the colours near edges) show their label's colour; returns their count."""
    rgb, m = _denormalise(image), mask.numpy()
    pad = np.pad(m, 2, constant_values=-1)
    same = np.ones_like(m, dtype=bool)
    for dy in range(5):
        for dx in range(5):
            same &= pad[dy : dy + m.shape[0], dx : dx + m.shape[1]] == m
    inner = same & (m != ignore)
    assert inner.sum() > 0
    diff = np.abs(rgb[inner] - PALETTE[m[inner]].astype(np.float32)).max()
    assert diff < 12, f"image and mask disagree by {diff} levels"
    return int(inner.sum())


# ------------------------------------------------------------------ sources
@pytest.fixture(scope="module")
def hub_layout(tmp_path_factory):
    """ADE20K's parquet conversion as the hub holds it: scene_parsing/{split}/0000.parquet with
    image, annotation and scene_category, next to another config with another schema."""
    import datasets

    root = tmp_path_factory.mktemp("scene_parse_150")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "annotation": datasets.Image(),
            "scene_category": datasets.ClassLabel(names=["bathroom", "kitchen"]),
        }
    )
    for split, n in (("train", 6), ("validation", 3)):
        images, masks = _rows(n, 100 if split == "train" else 200, reduce=True, fmt="JPEG")
        os.makedirs(root / "scene_parsing" / split)
        datasets.Dataset.from_dict(
            {"image": images, "annotation": masks, "scene_category": [0] * n}, features=features
        ).to_parquet(str(root / "scene_parsing" / split / "0000.parquet"))
        os.makedirs(root / "instance_segmentation" / split)
        other = datasets.Dataset.from_dict({"image": images[:1], "annotation": ["x"]})
        other.to_parquet(str(root / "instance_segmentation" / split / "0000.parquet"))
    return root


def test_ade20k_hub_id_reads_the_parquet_conversion(hub_layout, monkeypatch, tmp_path):
    """The default dataset: revision refs/convert/parquet, data_dir scene_parsing, column
    annotation, 150 classes with mmseg's names and reduce_zero_label. The hub is replaced by the
    local copy above, reached through the same `datasets` builder call."""
    import datasets

    real, calls = datasets.load_dataset_builder, []

    def from_local_copy(path, **kwargs):
        if path != ADE20K_HUB_ID:
            return real(path, **kwargs)
        calls.append(dict(kwargs))
        kwargs.pop("revision")
        return real(str(hub_layout), **kwargs)

    monkeypatch.setattr(datasets, "load_dataset_builder", from_local_copy)
    dm = SegmentationDataModule(cache_dir=str(tmp_path), **SMALL)
    assert dm.hparams.dataset == ADE20K_HUB_ID
    assert (dm.num_classes, dm.ignore_index, dm.reduce_zero_label) == (150, 255, True)
    assert dm.class_names == list(ADE20K_CLASSES) and dm.class_names[:3] == [
        "wall",
        "building",
        "sky",
    ]
    dm.setup("fit")
    assert calls and {c["revision"] for c in calls} == {"refs/convert/parquet"}
    assert {c["data_dir"] for c in calls} == {"scene_parsing"}
    assert len(dm.train_dataset) == 6 and len(dm.val_dataset) == 3
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (2, 32, 32) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1, 2, 3, 255}  # raw 1..4 shifted down, 0 -> 255
    for image, mask in zip(x, y):
        _check_aligned(image, mask)


def test_ade20k_folder_layout(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for folder, n, seed in (("training", 4, 0), ("validation", 2, 50)):
        os.makedirs(root / "images" / folder)
        os.makedirs(root / "annotations" / folder)
        for i in range(n):
            raw = _blocks(seed + i, values=(0, 1, 2, 3, 4))
            labels = np.where(raw == 0, 255, raw - 1)
            stem = f"ADE_{folder}_{i:08d}"
            jpg = root / "images" / folder / f"{stem}.jpg"
            jpg.write_bytes(_encode(_image_for(labels), "JPEG"))
            Image.fromarray(raw).save(root / "annotations" / folder / f"{stem}.png")
    dm = SegmentationDataModule(dataset=str(root), **SMALL)
    assert (dm.num_classes, dm.reduce_zero_label) == (150, True)  # ADE's layout: ADE's rules
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 and len(dm.val_dataset) == 2
    paths = dm.train_dataset.hf.with_format(None)[0]
    assert paths["image"]["path"].endswith("images/training/ADE_training_00000000.jpg")
    assert paths["mask"]["path"].endswith("annotations/training/ADE_training_00000000.png")
    for x, y in dm.train_dataloader():
        for image, mask in zip(x, y):
            _check_aligned(image, mask)
    image, mask = dm.val_dataset[0]
    assert mask.shape == (36, 48) and image.shape == (3, 48, 64)  # fits (64, 48), mask original

    os.remove(root / "annotations" / "validation" / "ADE_validation_00000001.png")
    broken = SegmentationDataModule(dataset=str(root), **SMALL)
    with pytest.raises(
        DataError,
        match=r"1 image\(s\) have no mask.*images/validation/ADE_validation_00000001.jpg has no "
        r"annotations/validation/ADE_validation_00000001.png.*Fix",
    ):
        broken.setup("fit")


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("seg_parquet")
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    for split, n in (("train", 8), ("validation", 4)):
        images, masks = _rows(n, 300 if split == "train" else 400, reduce=False)
        datasets.Dataset.from_dict({"image": images, "mask": masks}, features=features).to_parquet(
            str(root / f"{split}-00000-of-00001.parquet")
        )
    return root


def test_parquet_with_an_image_and_a_mask_column(parquet_files, tmp_path):
    with pytest.raises(DataError, match=r"data.num_classes is not set.*Fix: set data.num_classes"):
        SegmentationDataModule(dataset=str(parquet_files / "*.parquet"), **SMALL)
    dm = SegmentationDataModule(
        dataset=str(parquet_files / "*.parquet"),
        num_classes=4,
        cache_dir=str(tmp_path),
        **SMALL,
    )
    assert (dm.reduce_zero_label, dm.class_names) == (False, ["0", "1", "2", "3"])
    dm.setup("fit")
    assert len(dm.train_dataset) == 8 and len(dm.val_dataset) == 4
    for x, y in dm.train_dataloader():
        assert set(y.unique().tolist()) <= {0, 1, 2, 3, 255}  # 255: padding only
        for image, mask in zip(x, y):
            _check_aligned(image, mask)
    wrong = SegmentationDataModule(
        dataset=str(parquet_files / "*.parquet"),
        num_classes=4,
        mask_column="annotation",
        cache_dir=str(tmp_path),
        **SMALL,
    )
    match = r"no column 'annotation'.*\['image', 'mask'\].*data.mask_column"
    with pytest.raises(DataError, match=match):
        wrong.setup("fit")


def test_builtin_sets_belong_to_their_module():
    from inceptionnext_pl.data import ImageDataModule

    with pytest.raises(DataError, match=r"'digits' is a built-in set for ImageDataModule"):
        SegmentationDataModule(dataset="digits", num_classes=10, **SMALL).setup("fit")
    with pytest.raises(DataError, match=r"'digits_scenes' is a built-in set for Segmentation"):
        ImageDataModule(dataset="digits_scenes", mixup=None).setup("fit")


# ------------------------------------------------------------------ labels
def test_reduce_zero_label_and_ignore_index():
    ade = LabelMap(150, 255, reduce_zero_label=True)
    raw = np.array([[0, 1, 2], [150, 255, 7]], dtype=np.uint8)
    assert ade(raw, "m").tolist() == [[255, 0, 1], [149, 255, 6]]
    wide = raw.astype(np.int32)  # 16-bit masks take the other path, with the same result
    assert ade(wide, "m").tolist() == [[255, 0, 1], [149, 255, 6]]
    plain = LabelMap(4, 255, reduce_zero_label=False)
    assert plain(np.array([[0, 3, 255]], dtype=np.uint8), "m").tolist() == [[0, 3, 255]]
    with pytest.raises(DataError, match=r"m holds mask values \[4, 9\] outside the 4 classes 0..3"):
        plain(np.array([[0, 4, 9, 255]], dtype=np.uint8), "m")
    with pytest.raises(
        DataError, match=r"values \[151\] \(labels \[150\] after reduce_zero_label\)"
    ):
        ade(np.array([[151, 3]], dtype=np.uint8), "m")
    with pytest.raises(DataError, match=r"ignore_index=3 is one of the classes"):
        SegmentationDataModule(dataset="digits_scenes", ignore_index=3, **SMALL)


# ------------------------------------------------------------------ transforms
def test_rescale_follows_mmcvs_keep_ratio_rule():
    assert rescaled_size(375, 500, (2048, 512)) == (512, 683)  # short side bound
    assert rescaled_size(512, 4000, (2048, 512)) == (262, 2048)  # long side bound
    assert rescaled_size(375, 500, (1024, 256)) == (256, 341)  # ratio 0.5
    img = tv_tensors.Image(torch.zeros(3, 375, 500, dtype=torch.uint8))
    sizes = set()
    for _ in range(50):
        out = Rescale((2048, 512), (0.5, 2.0))(img)
        h, w = out.shape[-2:]
        sizes.add(h)
        assert abs(w / h - 500 / 375) < 0.01  # keeps the aspect ratio
    assert min(sizes) >= 256 and max(sizes) <= 1024 and len(sizes) > 20


def test_masks_are_resized_with_nearest_neighbour():
    raw = _blocks(3, values=(3, 7, 255))
    for ratio in ((0.37, 0.37), (1.73, 1.73)):
        img = tv_tensors.Image(torch.from_numpy(_image_for(raw)).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(raw))
        _, out = Rescale((64, 48), ratio)(img, mask)
        assert set(out.unique().tolist()) == {3, 7, 255}  # no new values between labels
        assert out.shape != mask.shape


def test_train_transform_keeps_image_and_mask_aligned():
    transform = build_seg_train_transform(
        crop_size=(40, 40), scale=(64, 48), ratio_range=(0.5, 2.0), cat_max_ratio=0.75,
        hflip=0.5, photometric=False, mean=IMAGENET_MEAN, std=IMAGENET_STD, ignore_index=255,
    )  # fmt: skip
    checked, padded, flipped = 0, 0, 0
    raw = _blocks(11, h=48, w=60, values=(0, 1, 2, 3, 4, 5))
    for _ in range(40):
        img = tv_tensors.Image(torch.from_numpy(_image_for(raw)).permute(2, 0, 1))
        x, y = transform(img, tv_tensors.Mask(torch.from_numpy(raw)))
        assert x.shape == (3, 40, 40) and y.shape == (40, 40) and y.dtype == torch.int64
        checked += _check_aligned(x, y)
        pad = y == 255
        if pad.any():  # padding: ignored in the mask, zero (the mean colour) in the image
            padded += 1
            assert torch.all(x[:, pad] == 0)
        flipped += int(torch.equal(torch.from_numpy(raw[:, ::-1].copy())[:40, :40], y))
    assert checked > 1000 and padded > 0


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    crop = RandomCatCrop((8, 8), cat_max_ratio=0.75, ignore_index=255)
    assert not crop.accepts(torch.zeros(8, 8, dtype=torch.uint8))  # one class
    part = torch.zeros(8, 8, dtype=torch.uint8)
    part[:2] = 1  # 75% / 25%: not below the ratio
    assert not crop.accepts(part)
    part[:3] = 1  # 62.5%
    assert crop.accepts(part)
    ignored = torch.full((8, 8), 255, dtype=torch.uint8)
    ignored[0, :3], ignored[1, :2] = 1, 2  # 3 vs 2 labelled pixels: 60%, ignore not counted
    assert crop.accepts(ignored)

    # One small object in a large background: mmseg's rule finds it far more often than chance.
    mask = torch.zeros(96, 96, dtype=torch.uint8)
    mask[60:84, 8:32] = 1  # fills at most 56% of a crop; 12% of random crops pass
    sample = (tv_tensors.Image(torch.zeros(3, 96, 96, dtype=torch.uint8)), tv_tensors.Mask(mask))
    counts = {}
    for ratio in (0.75, 1.0):
        torch.manual_seed(0)
        picker = RandomCatCrop((32, 32), cat_max_ratio=ratio)
        hits = sum(crop.accepts(picker(*sample)[1]) for _ in range(200))
        counts[ratio] = hits
    assert counts[1.0] < 50 and counts[0.75] > 130  # measured: 24 and 158 of 200

    # No crop can pass: the first draw and 10 redraws (as mmseg), then the last one is kept.
    draws = []
    picker = RandomCatCrop((32, 32), cat_max_ratio=0.75)
    real_box = picker._box
    picker._box = lambda h, w: draws.append(real_box(h, w)) or draws[-1]
    params = picker.make_params([tv_tensors.Mask(torch.zeros(96, 96, dtype=torch.uint8))])
    assert len(draws) == 11 and (params["top"], params["left"]) == draws[-1][:2]


def test_photometric_distortion_is_mmsegs():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (3, 6, 7), dtype=np.uint8))
    pmd = PhotoMetricDistortion()
    off = dict(brightness=None, contrast_first=True, contrast=None, saturation=None, hue=None)
    x = tv_tensors.Image(img)
    out = pmd.transform(x, {**off, "brightness": 20.7})  # additive, clipped, truncated
    assert torch.equal(out, (img.float() + 20.7).clamp(0, 255).to(torch.uint8))
    out = pmd.transform(x, {**off, "contrast": 1.3})  # multiplicative, no mean
    assert torch.equal(out, (img.float() * 1.3).clamp(0, 255).to(torch.uint8))
    for alpha, hue in ((1.4, None), (0.6, None), (None, 7), (None, -18)):
        out = pmd.transform(x, {**off, "saturation": alpha, "hue": hue}).numpy()
        for r, g, b in img.reshape(3, -1).T.tolist()[:20]:
            h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
            s = min(s * alpha, 1.0) if alpha else s
            h = (h + hue * 2 / 360) % 1.0 if hue else h
            want = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
            got = out.reshape(3, -1).T[img.reshape(3, -1).T.tolist().index([r, g, b])]
            assert np.abs(got - want).max() <= 2.5, (alpha, hue, (r, g, b), got, want)
    mask = tv_tensors.Mask(torch.ones(6, 7, dtype=torch.uint8))
    assert pmd(x, mask)[1] is mask  # masks pass through


# ------------------------------------------------------------------ bad inputs
def _one_split_parquet(root, image, mask):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    for split in ("train", "validation"):
        datasets.Dataset.from_dict(
            {"image": [image], "mask": [mask]}, features=features
        ).to_parquet(str(root / f"{split}-00000-of-00001.parquet"))
    return str(root / "*.parquet")


@pytest.mark.parametrize("case", ["missing", "size", "values"])
def test_bad_masks_name_the_item_and_the_fix(case, tmp_path):
    raw = _blocks(5, values=(0, 1, 2))
    image = {"bytes": _encode(_image_for(raw)), "path": "scene.png"}
    mask = {
        "missing": None,
        "size": {"bytes": _encode(raw[:, :-4]), "path": "scene_mask.png"},
        "values": {"bytes": _encode(np.where(raw == 2, 9, raw).astype(np.uint8)), "path": "m.png"},
    }[case]
    dm = SegmentationDataModule(
        dataset=_one_split_parquet(tmp_path, image, mask),
        num_classes=3,
        cache_dir=str(tmp_path / "c"),
        skip_corrupt=True,  # bad masks are not corrupt files: they stop with their own error
        **SMALL,
    )
    dm.setup("fit")
    match = {
        "missing": r"split 'train' index 0 \(image scene.png\) has no mask: column 'mask' is "
        r"empty. Fix",
        "size": r"index 0: the image scene.png is 48x36 but its mask scene_mask.png is 44x36.*Fix",
        "values": r"index 0 \(mask m.png\) holds mask values \[9\] outside the 3 classes 0..2.*Fix",
    }[case]
    with pytest.raises(DataError, match=match):
        dm.train_dataset[0]
    assert dm.train_dataset.num_skipped == 0


def test_eval_batches_of_different_sizes_are_refused(tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    cells = []
    for h, w in ((36, 48), (48, 36)):
        raw = _blocks(1, h=h, w=w, values=(0, 1))
        image = {"bytes": _encode(_image_for(raw)), "path": "i.png"}
        cells.append((image, {"bytes": _encode(raw), "path": "m.png"}))
    for split in ("train", "validation"):
        datasets.Dataset.from_dict(
            {"image": [c[0] for c in cells], "mask": [c[1] for c in cells]}, features=features
        ).to_parquet(str(tmp_path / f"{split}-00000-of-00001.parquet"))
    kw = dict(dataset=str(tmp_path / "*.parquet"), num_classes=2, cache_dir=str(tmp_path / "c"))
    dm = SegmentationDataModule(**kw, **{**SMALL, "loader": {**LOADER, "val_batch_size": 2}})
    dm.setup("validate")
    with pytest.raises(DataError, match=r"different sizes.*Fix: set data.loader.val_batch_size: 1"):
        next(iter(dm.val_dataloader()))
    one = SegmentationDataModule(**kw, **SMALL)
    one.setup("validate")
    shapes = [(tuple(x.shape), tuple(y.shape)) for x, y in one.val_dataloader()]
    assert shapes == [((1, 3, 48, 64), (1, 36, 48)), ((1, 3, 64, 48), (1, 48, 36))]
    resized = SegmentationDataModule(**kw, eval_mask="resized", **SMALL)
    resized.setup("validate")
    x, y = resized.val_dataset[0]
    assert x.shape[-2:] == y.shape == (48, 64)


# ------------------------------------------------------------------ DDP shards
@pytest.mark.parametrize("streaming", [False, True])
def test_ranks_read_disjoint_shards_that_cover_the_split(streaming, tmp_path, monkeypatch):
    """Two fake ranks: each sample's mask holds its row id, so the ids show each rank's shard."""
    import datasets
    from torch.utils.data import DistributedSampler

    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    n = 16
    image = {"bytes": _encode(np.zeros((8, 8, 3), np.uint8)), "path": "i.png"}
    masks = [{"bytes": _encode(np.full((8, 8), i, np.uint8)), "path": f"{i}.png"} for i in range(n)]
    for s in range(2):  # one shard per rank (several per reader make `datasets` sleep 5 s)
        datasets.Dataset.from_dict(
            {"image": [image] * 8, "mask": masks[8 * s : 8 * s + 8]}, features=features
        ).to_parquet(str(tmp_path / f"train-{s:05d}-of-00002.parquet"))
    datasets.Dataset.from_dict({"image": [image], "mask": masks[:1]}, features=features).to_parquet(
        str(tmp_path / "validation-00000-of-00001.parquet")
    )
    seen = {}
    for rank in (0, 1):
        dm = SegmentationDataModule(
            dataset=str(tmp_path / "*.parquet"), num_classes=n, streaming=streaming,
            scale=(8, 8), augment=dict(crop_size=(8, 8), ratio_range=None, cat_max_ratio=1.0),
            loader=dict(batch_size=2, num_workers=0), cache_dir=str(tmp_path / "c"),
        )  # fmt: skip
        monkeypatch.setattr(dm, "_rank_world", lambda rank=rank: (rank, 2))
        dm.setup("fit")
        loader = dm.train_dataloader()
        if not streaming:  # what Lightning does to a map-style loader under DDP
            from lightning.pytorch.utilities.data import _update_dataloader

            sampler = DistributedSampler(dm.train_dataset, num_replicas=2, rank=rank, seed=0)
            loader = _update_dataloader(loader, sampler)
        seen[rank] = [int(y[0, 0]) for _, ys in loader for y in ys]
    assert len(seen[0]) == len(seen[1]) == n // 2  # the same number of steps on both ranks
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(n))


# ------------------------------------------------------------------ digits_scenes
def test_digit_scenes_are_seeded_balanced_and_split_like_the_digits():
    start = time.process_time()  # CPU time: a loaded CI machine does not make it flaky
    images, masks, drawn = render_split("train")
    val_images, val_masks, val_drawn = render_split("validation")
    assert time.process_time() - start < 2.0  # built on the fly: it must stay fast
    assert images.shape == (SCENES_PER_SPLIT["train"], 64, 64, 3) and masks.dtype == np.uint8

    again = render_split("validation")
    assert np.array_equal(again[0], val_images) and np.array_equal(again[1], val_masks)

    _, labels, splits = digits_split()
    train_ids = {i for scene in drawn for i in scene}
    val_ids = {i for scene in val_drawn for i in scene}
    assert train_ids <= set(splits["train"].tolist()) and val_ids <= set(
        splits["validation"].tolist()
    )
    assert not train_ids & val_ids and len(val_ids) > 300  # most validation digits appear

    share = np.bincount(masks.ravel(), minlength=11) / masks.size
    assert 0.7 < share[0] < 0.92  # background
    digits = share[1:]
    assert digits.min() > 0.7 * digits.mean() and digits.max() < 1.3 * digits.mean()
    per_scene = np.array([len(s) for s in drawn])
    assert per_scene.min() >= 1 and per_scene.max() <= 3 and per_scene.mean() > 1.5
    for scene, mask in zip(drawn[:50], masks[:50]):  # each drawn digit's class is in its mask
        assert {labels[i] + 1 for i in scene} <= set(np.unique(mask).tolist())

    # strokes are bright on a dark background: the mask marks what the image shows
    lum = images.mean(-1)
    assert lum[masks > 0].mean() > lum[masks == 0].mean() + 80


def test_digit_scenes_datamodule_batches():
    dm = SegmentationDataModule(
        dataset="digits_scenes",
        scale=(64, 64),
        augment=dict(crop_size=(64, 64), ratio_range=(0.75, 1.5), cat_max_ratio=1.0, hflip=0.0),
        loader=dict(batch_size=8, val_batch_size=16, num_workers=0),
        max_train_samples=32,
        max_val_samples=16,
    )
    assert dm.num_classes == 11 and dm.class_names[:2] == ["background", "0"]
    assert not dm.reduce_zero_label and dm.crop_size == (64, 64) and dm.batch_size == 8
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (8, 64, 64) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= set(range(11)) | {255}
    vx, vy = next(iter(dm.val_dataloader()))
    assert vx.shape == (16, 3, 64, 64) and vy.shape == (16, 64, 64)
    assert set(vy.unique().tolist()) <= set(range(11))
    scenes = load_digit_scenes()
    assert scenes["train"].num_rows == SCENES_PER_SPLIT["train"]


def test_a_loading_script_revision_points_at_the_parquet_conversion(monkeypatch, tmp_path):
    """ADE20K's main branch is a script: what `datasets` >= 4 raises becomes the revision fix."""
    import datasets

    def script_repo(path, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found scene_parse_150.py")

    monkeypatch.setattr(datasets, "load_dataset_builder", script_repo)
    dm = SegmentationDataModule(revision="main", cache_dir=str(tmp_path), **SMALL)
    with pytest.raises(
        DataError,
        match=r"'zhoubolei/scene_parse_150' \(revision 'main'\) is a loading script.*Fix: .*"
        r"data.revision: refs/convert/parquet",
    ):
        dm.setup("fit")

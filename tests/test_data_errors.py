"""Every bad input to ImageDataModule gets one DataError naming the dataset, the item and the fix."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from inceptionnext_pl.data import DataError, ImageDataModule
from inceptionnext_pl.data import sources as sources_mod

LIGHT = dict(
    image_size=16,
    loader=dict(batch_size=2, num_workers=0),
    mixup=None,
    augment=dict(auto_augment=None, reprob=0.0),
)
WNIDS = ["n01440764", "n01443537"]


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture()
def tree_with_corrupt(tmp_path):
    """An ImageNet tree whose train split holds one truncated JPEG and one non-image '.JPEG'."""
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for c, wnid in enumerate(WNIDS):
            os.makedirs(root / split / wnid)
            for k in range(3):
                (root / split / wnid / f"{wnid}_{k}.JPEG").write_bytes(_jpeg(10 * c + k))
    good = _jpeg(99)
    (root / "train" / WNIDS[0] / "truncated.JPEG").write_bytes(good[: len(good) // 2])
    (root / "train" / WNIDS[1] / "garbage.JPEG").write_bytes(b"this is not an image" * 20)
    return root


def _offline(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _fail_builder(monkeypatch, exc: Exception):
    import datasets

    def raise_(*args, **kwargs):
        raise exc

    monkeypatch.setattr(datasets, "load_dataset_builder", raise_)


@pytest.mark.parametrize(
    "dataset, match",
    [
        ("/no/such/imagenet", r"'/no/such/imagenet' does not exist.*Fix:"),
        ("./missing_dir/train", r"does not exist.*Fix:"),
        ("/no/such/dir/*.parquet", r"glob matches no parquet file.*Fix:"),
        ("", r"data.dataset is empty.*Fix:"),
    ],
)
def test_missing_local_dataset(dataset, match):
    dm = ImageDataModule(dataset=dataset, **LIGHT)
    with pytest.raises(DataError, match=match):
        dm.setup("fit")


def test_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "labels.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="not a parquet file"):
        ImageDataModule(dataset=str(tmp_path / "labels.csv"), **LIGHT).setup("fit")


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match=r"no image or parquet files found.*Fix"):
        ImageDataModule(dataset=str(tmp_path), cache_dir=str(tmp_path / "c"), **LIGHT).setup("fit")


def test_offline_hub_dataset(monkeypatch, tmp_path):
    """Real `datasets` code path with HF_HUB_OFFLINE: no network and nothing cached."""
    _offline(monkeypatch)
    dm = ImageDataModule(dataset="ILSVRC/imagenet-1k", cache_dir=str(tmp_path), **LIGHT)
    with pytest.raises(
        DataError, match=r"Cannot reach the Hugging Face Hub.*'ILSVRC/imagenet-1k'.*Fix:"
    ):
        dm.prepare_data()
    with pytest.raises(DataError, match="digits"):
        ImageDataModule(
            dataset="ILSVRC/imagenet-1k", streaming=True, cache_dir=str(tmp_path), **LIGHT
        ).setup("fit")


def _gated_error(status: int):
    from huggingface_hub.errors import GatedRepoError
    from huggingface_hub.utils import httpx  # hub 2.x ships its own httpx (httpx2)

    request = httpx.Request(
        "GET", "https://huggingface.co/datasets/ILSVRC/imagenet-1k/resolve/main/README.md"
    )
    return GatedRepoError(
        "Access to dataset ILSVRC/imagenet-1k is restricted.",
        response=httpx.Response(status, request=request),
    )


@pytest.mark.parametrize("token", [None, "hf_fake"])
def test_gated_hub_dataset_without_access(monkeypatch, tmp_path, token):
    from datasets.exceptions import DatasetNotFoundError

    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    # what `datasets` raises: DatasetNotFoundError("... is a gated dataset ...") from GatedRepoError
    wrapped = DatasetNotFoundError("Dataset 'ILSVRC/imagenet-1k' is a gated dataset on the Hub.")
    wrapped.__cause__ = _gated_error(401)
    for exc in (wrapped, _gated_error(403)):
        _fail_builder(monkeypatch, exc)
        dm = ImageDataModule(dataset="ILSVRC/imagenet-1k", cache_dir=str(tmp_path), **LIGHT)
        state = "has no access" if token else "no Hugging Face token was found"
        with pytest.raises(DataError, match=rf"'ILSVRC/imagenet-1k' is gated.*{state}.*HF_TOKEN"):
            dm.setup("fit")


def test_unknown_hub_dataset(monkeypatch, tmp_path):
    from datasets.exceptions import DatasetNotFoundError

    _fail_builder(
        monkeypatch, DatasetNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")
    )
    dm = ImageDataModule(dataset="nobody/nothing", revision="v9", cache_dir=str(tmp_path), **LIGHT)
    with pytest.raises(DataError, match=r"'nobody/nothing' \(revision 'v9'\) was not found.*Fix"):
        dm.setup("fit")


def test_other_hub_errors_are_not_swallowed(monkeypatch, tmp_path):
    _fail_builder(monkeypatch, RuntimeError("disk full"))
    with pytest.raises(RuntimeError, match="disk full"):
        ImageDataModule(dataset="owner/name", cache_dir=str(tmp_path), **LIGHT).setup("fit")


@pytest.mark.parametrize("dataset", ["digits", "tree"])
def test_unknown_split_lists_the_splits(dataset, tree_with_corrupt, tmp_path):
    dataset = str(tree_with_corrupt) if dataset == "tree" else dataset
    dm = ImageDataModule(dataset=dataset, val_split="valid", cache_dir=str(tmp_path / "c"), **LIGHT)
    with pytest.raises(
        DataError, match=r"no split 'valid'.*\['train', 'validation'\].*data.val_split"
    ):
        dm.setup("fit")
    dm = ImageDataModule(
        dataset=dataset,
        train_split="training",
        streaming=True,
        cache_dir=str(tmp_path / "c"),
        **LIGHT,
    )
    with pytest.raises(DataError, match=r"no split 'training'.*data.train_split"):
        dm.setup("fit")


@pytest.mark.parametrize("arg, value", [("image_column", "img"), ("label_column", "labels")])
def test_unknown_column_lists_the_columns(arg, value):
    dm = ImageDataModule(dataset="digits", **{**LIGHT, arg: value})
    with pytest.raises(DataError, match=rf"no column '{value}'.*\['image', 'label'\].*data.{arg}"):
        dm.setup("fit")


def test_corrupt_image_names_index_and_path(tree_with_corrupt, tmp_path):
    dm = ImageDataModule(dataset=str(tree_with_corrupt), cache_dir=str(tmp_path / "c"), **LIGHT)
    dm.setup("fit")
    paths = [row["path"] for row in dm.train_dataset.hf["image"]]
    bad = [i for i, p in enumerate(paths) if "truncated" in p][0]
    with pytest.raises(
        DataError, match=rf"truncated image.*index {bad} \(path .*truncated.JPEG\).*skip_corrupt"
    ):
        dm.train_dataset[bad]
    with pytest.raises(DataError, match=r"corrupt or truncated image.*(garbage|truncated).JPEG"):
        for _ in dm.train_dataloader():
            pass


@pytest.mark.parametrize("streaming, workers", [(False, 0), (False, 2), (True, 0)])
def test_skip_corrupt_counts_and_logs(tree_with_corrupt, tmp_path, caplog, streaming, workers):
    dm = ImageDataModule(
        dataset=str(tree_with_corrupt),
        cache_dir=str(tmp_path / "c"),
        skip_corrupt=True,
        streaming=streaming,
        **{**LIGHT, "loader": dict(batch_size=2, num_workers=workers, persistent_workers=False)},
    )
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="inceptionnext_pl.data.image_datasets"):
        labels = [y for _, ys in dm.train_dataloader() for y in ys.tolist()]
    assert dm.train_dataset.num_skipped == 2  # counted across loader workers
    if workers == 0:  # worker processes log to their own stderr
        text = caplog.text
        assert (
            "truncated.JPEG" in text and "garbage.JPEG" in text and "skipping corrupt image" in text
        )
    if streaming:
        # 6 good images: the stream's quota (8 listed files -> 4 batches) is filled by re-reading
        assert len(labels) == 8
    else:
        assert len(labels) == 8  # corrupt items replaced: batches keep their size


def test_skip_corrupt_counts_only_decode_errors_and_bugs_surface(tree_with_corrupt, tmp_path):
    """A TypeError from our own code (a transform bug, a cell of the wrong type) is no corrupt
    image: it surfaces as itself even with skip_corrupt, and nothing is counted as skipped."""
    import datasets

    from inceptionnext_pl.data import ClassificationRows, MapImageDataset

    dm = ImageDataModule(
        dataset=str(tree_with_corrupt), cache_dir=str(tmp_path / "c"), skip_corrupt=True, **LIGHT
    )
    dm.setup("fit")
    good = next(i for i, row in enumerate(dm.train_dataset.hf["image"]) if "n014" in row["path"])

    def buggy(img):
        raise TypeError("a bug in a transform")

    ds = dm.train_dataset
    ds.rows = ClassificationRows(ds.rows.image_column, ds.rows.label_column, buggy)
    with pytest.raises(TypeError, match="a bug in a transform"):
        ds[good]
    assert ds.num_skipped == 0

    cells = datasets.Dataset.from_dict({"image": [3, 4], "label": [0, 1]})  # ints, not images
    rows = ClassificationRows("image", "label", lambda img: img)
    wrong = MapImageDataset(cells, rows, dataset="ints", split="train", skip_corrupt=True)
    with pytest.raises(TypeError, match="cannot decode an image from a int"):
        wrong[0]
    assert wrong.num_skipped == 0


def test_model_and_batch_settings():
    with pytest.raises(DataError, match=r"batch_size=3 is odd.*Mixup.*Fix"):
        ImageDataModule(dataset="digits", loader=dict(batch_size=3))
    ImageDataModule(dataset="digits", loader=dict(batch_size=3), mixup=None)  # fine without mixing
    no_alphas = dict(mixup_alpha=0.0, cutmix_alpha=0.0)
    ImageDataModule(dataset="digits", loader=dict(batch_size=3), mixup=no_alphas)
    with pytest.raises(DataError, match="max_train_samples"):
        ImageDataModule(dataset="digits", max_train_samples=0)
    dm = ImageDataModule(
        dataset="digits", model_name="no_such_model", **{**LIGHT, "image_size": None}
    )
    with pytest.raises(DataError, match=r"'no_such_model' has no pretrained config.*Fix"):
        dm.setup("fit")


def test_splits_with_different_label_sets(tmp_path):
    import datasets

    def part(names):
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        )
        return datasets.Dataset.from_dict(
            {"image": [{"bytes": _jpeg(0), "path": "a.JPEG"}] * 2, "label": [0, 1]},
            features=features,
        )

    # (a parquet builder casts every split to one schema; saved splits keep their own)
    datasets.DatasetDict({"train": part(WNIDS), "validation": part(["cat", "dog"])}).save_to_disk(
        str(tmp_path / "saved")
    )
    dm = ImageDataModule(dataset=str(tmp_path / "saved"), **LIGHT)
    with pytest.raises(DataError, match="must share one label set"):
        dm.setup("fit")


def test_source_resolution_rules(tmp_path):
    assert sources_mod.resolve_source("digits").kind == "digits"
    assert sources_mod.resolve_source("ILSVRC/imagenet-1k").kind == "hub"
    assert sources_mod.resolve_source("imagenet-1k").kind == "hub"
    assert sources_mod.resolve_source(str(tmp_path)).kind == "dir"
    (tmp_path / "dataset_dict.json").write_text("{}")
    assert sources_mod.resolve_source(str(tmp_path)).kind == "disk"

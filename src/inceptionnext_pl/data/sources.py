"""Where the images come from: one `dataset` string, resolved to a `datasets` split.

Accepted values of ``dataset`` (see :func:`resolve_source`):

* ``"digits"`` / ``"digits_scenes"`` - the built-in offline demo sets (:mod:`.digits`, classification;
  :mod:`.digit_scenes`, segmentation).
* a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.
* any other directory: handed to `datasets`' folder resolution, which picks the builder from the
  files inside. An ImageNet tree ``train/<wnid>/*.JPEG`` + ``val/<wnid>/*.JPEG`` goes through the
  ``imagefolder`` builder (labels are the wnid directory names, ``val/`` becomes the
  ``validation`` split); a directory of parquet files in the hub schema (``image`` + ClassLabel
  ``label``, split names in the file names such as ``data/train-00000-of-00004.parquet``) goes
  through the ``parquet`` builder.
* a glob (or a single file) of parquet files; files are assigned to splits by the split name in
  their file name, and to ``train`` when no file names a split.
* otherwise a Hugging Face hub dataset id, e.g. ``ILSVRC/imagenet-1k`` (the default).

Images are never decoded here: image (and mask) columns are cast to ``Image(decode=False)`` so
that the loader workers decode them lazily (see :mod:`.image_datasets`).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import DataError, hub_error

__all__ = [
    "BUILTIN_SETS",
    "Source",
    "label_info",
    "open_split",
    "prepare_columns",
    "prepare_image_column",
    "resolve_source",
]

Kind = Literal["digits", "disk", "dir", "files", "hub"]
_GLOB_CHARS = re.compile(r"[*?\[]")
_SPLIT_ALIASES = {"validation": ("validation", "valid", "val", "dev"), "test": ("test", "eval")}
BUILTIN_SETS = ("digits", "digits_scenes")  # kind "digits": built in, offline, in memory


@dataclass
class Source:
    kind: Kind
    location: str  # repo id, or absolute local path / glob
    files: dict[str, list[str]] = field(default_factory=dict)  # for kind == "files"

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


def _looks_like_path(value: str) -> bool:
    if value.startswith(("/", "./", "../", "~", ".\\")) or os.sep == "\\" and ":" in value:
        return True
    # 'owner/name' is a hub id; deeper paths or file names are local.
    return value.count("/") > 1 or value.endswith((".parquet", ".arrow", ".tar", ".json"))


def _split_of_file(path: str, names: list[str]) -> str | None:
    stem = os.path.basename(path).lower()
    parent = os.path.basename(os.path.dirname(path)).lower()
    for name in names:
        for alias in (name, *_SPLIT_ALIASES.get(name, ())):
            pattern = rf"(^|[-_.]){re.escape(alias)}($|[-_.0-9])"
            if re.search(pattern, stem) or parent == alias:
                return name
    return None


def _group_files(files: list[str]) -> dict[str, list[str]]:
    names = ["train", "validation", "test"]
    grouped: dict[str, list[str]] = {}
    for f in files:
        grouped.setdefault(_split_of_file(f, names) or "", []).append(f)
    if set(grouped) == {""}:
        return {"train": grouped[""]}
    grouped.pop("", None)  # files that name no split while others do: ignored, like `datasets`
    return grouped


def resolve_source(dataset: str) -> Source:
    """Classify ``dataset`` as the demo set, a local path or glob, or a hub id."""
    if not dataset or not str(dataset).strip():
        raise DataError(
            "data.dataset is empty. Fix: set it to a hub id (default 'ILSVRC/imagenet-1k'), a local "
            "directory, a parquet glob, or 'digits' for the offline demo set."
        )
    dataset = str(dataset)
    if dataset in BUILTIN_SETS:
        return Source("digits", dataset)
    path = os.path.abspath(os.path.expanduser(dataset)) if _looks_like_path(dataset) else dataset
    if _GLOB_CHARS.search(dataset):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        files = [f for f in files if f.endswith(".parquet")]
        if not files:
            raise DataError(
                f"data.dataset '{dataset}': the glob matches no parquet file. Fix: check the "
                f"pattern (e.g. '/data/imagenet/data/*.parquet') or give the directory instead."
            )
        return Source("files", path, _group_files(files))
    local = os.path.abspath(os.path.expanduser(dataset))
    if os.path.isdir(local):
        markers = ("dataset_dict.json", "state.json")
        kind: Kind = (
            "disk" if any(os.path.isfile(os.path.join(local, m)) for m in markers) else "dir"
        )
        return Source(kind, local)
    if os.path.isfile(local):
        if not local.endswith(".parquet"):
            raise DataError(
                f"data.dataset '{dataset}' is a file but not a parquet file. Fix: give a directory "
                f"(ImageNet layout, parquet files or save_to_disk output) or a parquet glob."
            )
        return Source("files", local, _group_files([local]))
    if _looks_like_path(dataset):
        raise DataError(
            f"data.dataset '{dataset}' does not exist (looked for {local}). Fix: give an existing "
            f"directory (train/<wnid>/*.JPEG + val/<wnid>/*.JPEG, parquet files, or a save_to_disk "
            f"directory), a parquet glob, a hub id such as 'ILSVRC/imagenet-1k', or 'digits'."
        )
    return Source("hub", dataset)


def _unknown_split(dataset: str, split: str, available: list[str], arg: str) -> DataError:
    return DataError(
        f"dataset '{dataset}' has no split '{split}'. Splits that exist: {sorted(available)}. "
        f"Fix: set data.{arg} to one of them."
    )


def _builder(source: Source, revision: str | None, cache_dir: str | None, data_dir: str | None):
    import datasets

    if source.kind == "files":
        return datasets.load_dataset_builder(
            "parquet", data_files=source.files, cache_dir=cache_dir
        )
    kwargs: dict[str, Any] = {"cache_dir": cache_dir}
    if source.kind == "hub" and revision:
        kwargs["revision"] = revision
    if data_dir:
        kwargs["data_dir"] = data_dir
    return datasets.load_dataset_builder(source.location, **kwargs)


def _in_memory_splits(source: Source) -> dict[str, Any]:
    import datasets

    if source.kind == "digits":
        if source.location == "digits_scenes":
            from .digit_scenes import load_digit_scenes

            return dict(load_digit_scenes())
        from .digits import load_digits_dataset

        return dict(load_digits_dataset())
    try:
        loaded = datasets.load_from_disk(source.location)
    except (OSError, ValueError, KeyError) as exc:
        # a half-written or foreign directory: missing files (FileNotFoundError), broken JSON
        # (JSONDecodeError) or truncated Arrow files (ArrowInvalid, a ValueError)
        raise DataError(
            f"dataset '{source.location}' looks like a save_to_disk directory but cannot be read "
            f"({type(exc).__name__}: {exc}). Fix: write it again with save_to_disk, or point "
            f"data.dataset at the original files."
        ) from exc
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def open_split(
    source: Source,
    split: str,
    *,
    arg: str,
    streaming: bool,
    revision: str | None = None,
    cache_dir: str | None = None,
    data_dir: str | None = None,
    num_shards: int = 1,
) -> tuple[Any, int | None]:
    """Load one split: a map-style `datasets.Dataset`, or an `IterableDataset` if streaming.

    Returns the dataset and its number of examples (None when a stream's size is unknown).
    ``arg`` is the data-module argument that named the split, for the error message.
    ``data_dir`` is a sub-directory of a hub repo or local directory holding the split files
    (the hub's parquet conversion keeps each config in its own, e.g. ``scene_parsing/``).
    ``num_shards`` is used when an in-memory / on-disk dataset is turned into a stream.
    """
    name = source.location
    if source.kind in ("digits", "disk"):
        splits = _in_memory_splits(source)
        if split not in splits:
            raise _unknown_split(name, split, list(splits), arg)
        ds = splits[split]
        if streaming:
            return ds.to_iterable_dataset(num_shards=max(1, min(num_shards, len(ds)))), len(ds)
        return ds, len(ds)
    try:
        builder = _builder(source, revision, cache_dir, data_dir)
        available = [str(s) for s in (builder.config.data_files or builder.info.splits or [])]
        if available and split not in available:
            raise _unknown_split(name, split, available, arg)
        if streaming:
            stream = builder.as_streaming_dataset(split=split)
            return stream, _stream_size(builder, split)
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split)
        return ds, len(ds)
    except DataError:
        raise
    except Exception as exc:
        translated = hub_error(exc, name, revision) if source.kind == "hub" else None
        if translated is not None:
            raise translated from exc
        if "scripts are no longer supported" in str(exc):
            raise DataError(
                f"dataset '{name}'" + (f" (revision '{revision}')" if revision else "") + " is a "
                f"loading script, which `datasets` >= 4 cannot run ({exc}). Fix: use a revision "
                f"that holds data files, e.g. data.revision: refs/convert/parquet (the hub's "
                f"automatic parquet conversion), or a local copy."
            ) from exc
        match = re.search(r"(Unknown|Bad) split.*?(\[.*\])", str(exc))
        if isinstance(exc, ValueError) and match:
            raise _unknown_split(
                name, split, re.findall(r"'([^']+)'", match.group(2)), arg
            ) from exc
        if source.is_local and type(exc).__name__ in (
            "DataFilesNotFoundError",
            "EmptyDatasetError",
        ):
            raise DataError(
                f"dataset '{name}': no image or parquet files found ({exc}). Fix: use the ImageNet "
                f"layout train/<wnid>/*.JPEG + val/<wnid>/*.JPEG, or parquet files named by split."
            ) from exc
        raise


def _stream_size(builder, split: str) -> int | None:
    """Rows in a streamed split, from the dataset card, parquet footers, or the image file count."""
    splits = builder.info.splits
    if splits and split in splits and splits[split].num_examples:
        return int(splits[split].num_examples)
    files = list((builder.config.data_files or {}).get(split, []))
    if not files or any("://" in str(f) for f in files):
        return None
    if all(str(f).endswith(".parquet") for f in files):
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    image_ext = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
    return sum(os.path.splitext(str(f))[1].lower() in image_ext for f in files)


def prepare_columns(ds, columns: dict[str, str], dataset: str, split: str):
    """Check the columns exist, drop the others, and switch image decoding off (lazy decode).

    ``columns`` maps each data-module argument (``image_column``, ...) to the column it names.
    """
    import datasets

    features = ds.features
    present = list(features) if features is not None else list(ds.column_names or [])
    for arg, col in columns.items():
        if present and col not in present:
            raise DataError(
                f"dataset '{dataset}' split '{split}' has no column '{col}'. Columns that exist: "
                f"{present}. Fix: set data.{arg} to one of them."
            )
    keep = set(columns.values())
    extra = [c for c in present if c not in keep]
    if extra:
        ds = ds.remove_columns(extra)
    for col in columns.values():
        if features is not None and isinstance(features.get(col), datasets.Image):
            ds = ds.cast_column(col, datasets.Image(decode=False))
    return ds


def prepare_image_column(ds, image_column: str, label_column: str, dataset: str, split: str):
    """:func:`prepare_columns` for an image and a label column."""
    columns = {"image_column": image_column, "label_column": label_column}
    return prepare_columns(ds, columns, dataset, split)


def label_info(
    ds, label_column: str, num_classes: int | None, dataset: str, split: str
) -> tuple[int, list[str]]:
    """Number of classes and their names: from a ClassLabel, else ``num_classes`` or the data."""
    import datasets

    feature = ds.features.get(label_column) if ds.features is not None else None
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        if num_classes is not None and num_classes != len(names):
            raise DataError(
                f"data.num_classes={num_classes} but dataset '{dataset}' declares {len(names)} "
                f"classes in its ClassLabel column '{label_column}'. Fix: remove data.num_classes."
            )
        return len(names), names
    if num_classes is None:
        if isinstance(ds, datasets.Dataset) and len(ds):
            num_classes = int(max(ds[label_column])) + 1
        else:
            raise DataError(
                f"dataset '{dataset}' split '{split}': column '{label_column}' is not a ClassLabel "
                f"(it is {feature}), so the number of classes is unknown while streaming. Fix: set "
                f"data.num_classes."
            )
    return num_classes, [str(i) for i in range(num_classes)]

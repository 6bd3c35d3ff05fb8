"""An ImageNet-style folder of real JPEGs for the end-to-end fit benchmark (check.sh, step fit_b).

    python benchmarks/gpu/make_images.py ROOT [--total 26000] [--distinct 512] [--classes 1000]

Writes ``ROOT/train/<wnid>/*.JPEG`` (``--total`` files over ``--classes`` class folders) and
``ROOT/val/<wnid>/*.JPEG`` (one per class). The photos are the data pipeline benchmark's
(``benchmarks/data_pipeline.py``: scikit-image's sample photos cut to about 500x375 and saved as
JPEG, quality 90); ``--distinct`` of them are encoded and the rest are hard links to those, so a
run of 200 steps of 128 images reads one epoch without repeating a file name, in seconds. Every
file is still decoded and augmented in full by the loader workers.

``ROOT/index`` is the tree as a ``save_to_disk`` dataset (file paths and a ClassLabel per wnid
folder: what the ``imagefolder`` builder makes of it). ``ImageDataModule(dataset=ROOT/index)``
opens it at once, where ``dataset=ROOT`` has `datasets` resolve and hash every file first (about
2 ms a file, 27,000 files: a minute on a 2-core VM), longer than the run it would feed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_pipeline import make_images  # noqa: E402  (benchmarks/ is not a package)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links: a copy reads the same
        shutil.copyfile(src, dst)


def build(root: Path, total: int, distinct: int, classes: int) -> int:
    """Write the tree; returns the number of training files."""
    if total < classes or distinct < 1:
        raise SystemExit(f"--total ({total}) must be >= --classes ({classes}), --distinct >= 1")
    photos_dir = root.with_name(root.name + "-photos")
    photos = sorted(make_images(photos_dir, distinct))
    photos = [p for p in photos if "train" in p.parts]
    for c in range(classes):
        for split in ("train", "val"):
            (root / split / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
    for i in range(total):
        wnid = f"n{i % classes:08d}"
        _link(photos[i % len(photos)], root / "train" / wnid / f"{wnid}_{i}.JPEG")
    for c in range(classes):
        wnid = f"n{c:08d}"
        _link(photos[c % len(photos)], root / "val" / wnid / f"{wnid}_val.JPEG")
    write_index(root)
    return total


def write_index(root: Path) -> None:
    """``root/index``: the tree's train and val folders as a save_to_disk DatasetDict."""
    import datasets

    names = sorted(d.name for d in (root / "train").iterdir())
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    splits = {}
    for split, folder in (("train", "train"), ("validation", "val")):
        files = [
            (str(f), i) for i, c in enumerate(names) for f in sorted((root / folder / c).iterdir())
        ]
        columns = {"image": [f for f, _ in files], "label": [i for _, i in files]}
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(root / "index"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--total", type=int, default=26000)
    p.add_argument("--distinct", type=int, default=512)
    p.add_argument("--classes", type=int, default=1000)
    args = p.parse_args(argv)
    if args.root.exists():
        raise SystemExit(f"{args.root} exists; give a new folder")
    start = time.perf_counter()
    n = build(args.root, args.total, args.distinct, args.classes)
    took = time.perf_counter() - start
    print(
        f"wrote {n} training JPEGs ({args.distinct} distinct) in {args.classes} classes to "
        f"{args.root}, indexed in {args.root / 'index'}, in {took:.1f} s"
    )


if __name__ == "__main__":
    main()

"""Training-pipeline speed of ImageDataModule, in images per second per loader worker.

Inputs are real photos at ImageNet-like sizes: scikit-image's bundled sample photos, cropped and
resized to about 500x375 (or 375x500) and re-encoded as JPEG (quality 90), laid out as an ImageNet
folder tree ``train/<wnid>/*.JPEG`` (and, with ``--parquet``, also as hub-schema parquet).

Two pipelines run over the same files with the same full training recipe (RandomResizedCrop 224
bicubic, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 pixel, ImageNet mean/std):

* ``timm_loop``: timm's plain ``create_transform`` loop in this process,
  ``transform(Image.open(path).convert("RGB"))`` per file: one core's worth of work. (Its
  RandAugment posterize op gets the same Pillow-13 fix as ours, or it would crash.)
* ``datamodule``: ``ImageDataModule(...).train_dataloader()`` with ``num_workers`` worker
  processes, batches collated as training sees them; throughput divided by the worker count.
  ``num_workers=0`` runs the same loader in this process: the like-for-like per-core figure.

Throughput per worker is reported two ways: wall-clock images/s, and images per CPU-second of the
worker processes (what one worker does with a core to itself). On a shared machine the wall-clock
figure swings with the other load, so each round measures the timm loop and every data-module
setting back to back, and the summary gives the median over rounds of the CPU-normalised ratio
to the timm loop of the same round. Mixup/CutMix are not included: they run on the training
device, not in the workers; nor is the per-batch normalise + random erasing that a Trainer runs on
the device (here the loader does it in the main process: reported as main-process ms/img).

Usage::

    python benchmarks/data_pipeline.py                       # prints and writes the JSON / CSV
    python benchmarks/data_pipeline.py --images 512 --workers 0 1 2 --rounds 5 --parquet
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "data_pipeline.json"
RESULTS_CSV = HERE / "data_pipeline.csv"
PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
]
RECIPE = dict(
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    hflip=0.5,
    vflip=0.0,
    auto_augment="rand-m9-mstd0.5-inc1",
    color_jitter=0.4,
    interpolation="bicubic",
    reprob=0.25,
    remode="pixel",
    recount=1,
)


def make_images(root: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of about 500x375 cut from scikit-image's sample photos, in 8 wnid folders."""
    from skimage import data

    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    files = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = (500, 375) if rng.random() < 0.75 else (375, 500)
        # a random crop of the photo with the target aspect, then resized to ~500x375
        scale = rng.uniform(0.6, 1.0) * min(src.width / w, src.height / h)
        cw, ch = int(w * scale), int(h * scale)
        x0, y0 = int(rng.integers(0, src.width - cw + 1)), int(rng.integers(0, src.height - ch + 1))
        img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
        wnid = f"n{1440764 + i % 8:08d}"
        out = root / "train" / wnid / f"{wnid}_{i}.JPEG"
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, "JPEG", quality=90)
        files.append(out)
    for wnid_dir in (root / "train").iterdir():  # a one-image val split for the data module
        (root / "val" / wnid_dir.name).mkdir(parents=True, exist_ok=True)
        first = sorted(wnid_dir.iterdir())[0]
        (root / "val" / wnid_dir.name / first.name).write_bytes(first.read_bytes())
    return files


def timm_loop(files: list[Path], size: int, seconds: float) -> tuple[float, float, float]:
    """timm's plain create_transform loop in this process: (img/s, img per CPU-second)."""
    from timm.data import create_transform

    from inceptionnext_pl.data.transforms import _patch_posterize

    tf = create_transform(
        size,
        is_training=True,
        re_prob=RECIPE["reprob"],
        re_mode=RECIPE["remode"],
        re_count=RECIPE["recount"],
        **{k: v for k, v in RECIPE.items() if k not in ("reprob", "remode", "recount")},
    )
    _patch_posterize(tf)  # timm's RandAugment posterize crashes on Pillow >= 13 at magnitude 10
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        for path in files:
            tf(Image.open(path).convert("RGB"))
        done += len(files)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            used = time.process_time() - cpu
            return done / elapsed, done / used, used / done * 1e3


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def datamodule_loop(
    dataset: str, size: int, workers: int, batch: int, seconds: float, cache: str
) -> tuple[float, float, float]:
    """ImageDataModule's train loader: (img/s per worker, img per worker CPU-second, main ms/img).

    With workers, the CPU seconds are those of the worker processes (decoding and augmenting);
    with ``workers=0`` those of this process, which then does everything. The third value is the
    main process's CPU milliseconds per image: iterated without a Trainer, as here, the loader
    normalises and randomly erases each uint8 batch there (a Trainer does it on the device).
    """
    from inceptionnext_pl.data import ImageDataModule

    dm = ImageDataModule(
        dataset=dataset,
        image_size=size,
        loader=dict(batch_size=batch, num_workers=workers, persistent_workers=True),
        mixup=None,
        cache_dir=cache,
        interpolation=RECIPE["interpolation"],
        augment={k: v for k, v in RECIPE.items() if k != "interpolation"},
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    for _ in it:  # one warm-up epoch: worker start-up is not part of the steady state
        pass
    pids = [w.pid for w in getattr(loader._iterator, "_workers", [])] if workers else []
    done, start, main_cpu = 0, time.perf_counter(), time.process_time()
    cpu = _cpu_seconds(pids) if pids else main_cpu
    while True:
        for x, _ in iter(loader):
            done += len(x)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    main_used = time.process_time() - main_cpu
    used = _cpu_seconds(pids) - cpu if pids else main_used
    return done / elapsed / max(1, workers), done / used, main_used / done * 1e3


def write_parquet(tree: Path, out: Path, cache: str) -> None:
    import datasets

    ds = datasets.load_dataset(str(tree), cache_dir=cache)
    (out / "data").mkdir(parents=True, exist_ok=True)
    ds["train"].to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    ds["validation"].to_parquet(str(out / "data" / "validation-00000-of-00001.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per measurement")
    ap.add_argument("--parquet", action="store_true", help="also measure hub-schema parquet input")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if args.images < args.batch_size:
        ap.error("--images must be at least --batch-size (the train loader drops partial batches)")
    torch.set_num_threads(1)  # the workers and timm's loop are single-threaded per process

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_images(tmp / "imagenet", args.images)
        sources = {"imagefolder": str(tmp / "imagenet")}
        if args.parquet:
            write_parquet(tmp / "imagenet", tmp / "parquet", str(tmp / "cache"))
            sources["parquet"] = str(tmp / "parquet")
        walls: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        main_ms: dict[str, list[float]] = {}
        for r in range(args.rounds):
            runs = [("timm_loop", None, None)] + [
                (f"datamodule_{s}", s, w) for s in sources for w in args.workers
            ]
            for name, source, workers in runs:
                if source is None:
                    wall, per_cpu, ms = timm_loop(files, args.size, args.seconds)
                    key = name
                else:
                    wall, per_cpu, ms = datamodule_loop(
                        sources[source],
                        args.size,
                        workers,
                        args.batch_size,
                        args.seconds,
                        str(tmp / "cache"),
                    )
                    key = f"{name}_w{workers}"
                walls.setdefault(key, []).append(wall)
                cpus.setdefault(key, []).append(per_cpu)
                main_ms.setdefault(key, []).append(ms)
                # paired with the timm loop of the same round, so load drifts cancel
                ratios.setdefault(key, []).append(per_cpu / cpus["timm_loop"][-1])
                print(
                    f"round {r + 1}: {key:28s} {wall:7.1f} img/s per worker (wall), "
                    f"{per_cpu:7.1f} img per worker CPU-second (x{ratios[key][-1]:.2f}), "
                    f"main process {ms:.2f} ms/img",
                    flush=True,
                )

    med = statistics.median
    rows = [
        {
            "pipeline": k,
            "img_per_s_per_worker_best": round(max(walls[k]), 1),
            "img_per_cpu_s_per_worker_median": round(med(cpus[k]), 1),
            "ratio_to_timm_loop_median": round(med(ratios[k]), 3),
            "ratio_to_timm_loop_min": round(min(ratios[k]), 3),
            "ratio_to_timm_loop_max": round(max(ratios[k]), 3),
            "main_process_cpu_ms_per_img_median": round(med(main_ms[k]), 3),
        }
        for k in walls
    ]
    print(
        f"\nover {args.rounds} rounds (img per CPU-second: throughput of a worker on its own core):"
    )
    for row in rows:
        print(
            f"  {row['pipeline']:28s} {row['img_per_cpu_s_per_worker_median']:7.1f} img/CPU-s/worker "
            f"x{row['ratio_to_timm_loop_median']:.2f} (x{row['ratio_to_timm_loop_min']:.2f}.."
            f"x{row['ratio_to_timm_loop_max']:.2f})   best wall {row['img_per_s_per_worker_best']:7.1f} img/s/worker"
        )
    result = {
        "command": "python benchmarks/data_pipeline.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k not in ("parquet", "no_write")
        )
        + (" --parquet" if args.parquet else ""),
        "images": args.images,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "recipe": RECIPE,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "note": "wall-clock figures depend on other load; img per CPU-second is per busy worker core",
        "versions": _versions(),
        "results": rows,
    }
    if not args.no_write:
        _atomic_write(RESULTS_JSON, json.dumps(result, indent=2) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write(RESULTS_CSV, buf.getvalue())
        print(
            f"wrote {RESULTS_JSON.relative_to(HERE.parent)} and {RESULTS_CSV.relative_to(HERE.parent)}"
        )


def _atomic_write(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile creates files readable by the owner only
    os.replace(f.name, path)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions() -> dict[str, str]:
    import datasets
    import PIL
    import timm
    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "datasets": datasets.__version__,
        "pillow": PIL.__version__,
    }


if __name__ == "__main__":
    main()

"""``inceptionnext-cam``: Grad-CAM overlays for image files, for one or several models.

    inceptionnext-cam --ckpt run/last.ckpt --images a.png b.jpg --out cam/
    inceptionnext-cam --model inceptionnext_tiny --weights inceptionnext_tiny \\
                      --model resnet50 --weights resnet50 --images *.jpg --out cam/
    inceptionnext-cam --meaning --ckpt run/last.ckpt       # stroke-energy check on digits

Writes ``OUT/<model>/<image>_<method>.png`` for every image, model and method, and with several
models (or methods) ``OUT/comparison.png``: one row per image, one column per model, like Figure 4
of the paper.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cam import METHODS, CamError, compute_cam, degenerate_message, resolve_method
from .cam.figures import comparison_figure, save_figure, save_image
from .commands import run_command
from .files import atomic_write_bytes

EXAMPLES = """examples:
  inceptionnext-cam --ckpt runs/demo/lightning_logs/version_0/checkpoints/last.ckpt \\
      --images a.png b.png --method gradcam++ eigencam --target-layer stages.1 --out cam/
  inceptionnext-cam --model resnet50 --weights resnet50.a1_in1k \\
      --model inceptionnext_tiny --weights inceptionnext_tiny --images *.jpg --out cam/
  inceptionnext-cam --meaning --ckpt last.ckpt --target-layer stages.1 --method gradcam gradcam++

--target-layer applies to every model given; without it each family uses its last stage.
"""


@dataclass
class LoadedModel:
    """A network ready for CAM, with how to preprocess its inputs."""

    label: str
    model: nn.Module
    data: dict[str, Any] = field(default_factory=dict)  # datamodule hparams of a Lightning run


def _read(path: Path) -> Any:
    from .zoo import read_checkpoint

    if not path.is_file():
        raise CamError(f"checkpoint {path} does not exist")
    # weights_only, with the numpy RNG states that training checkpoints hold
    return read_checkpoint(path)


def _load_weights(model: nn.Module, source: str) -> None:
    from .zoo import load_pretrained

    print(f"{source}: {load_pretrained(model, source)}", file=sys.stderr)


def _classes_in(path: Path, name: str) -> int:
    """The classifier width stored in a state dict for model ``name`` (0: it has none)."""
    from .zoo import canonical, check_fits

    return check_fits(canonical(_read(path)), name, what=str(path))


def load_models(args: argparse.Namespace) -> list[LoadedModel]:
    """Models from --ckpt (Lightning, or a state dict for the one --model) and --model/--weights."""
    from .models import check_model_name, create_model

    names, weights, ckpts = list(args.model or []), list(args.weights or []), list(args.ckpt or [])
    if weights and len(weights) != len(names):
        raise CamError(
            f"{len(weights)} --weights for {len(names)} --model: give one --weights per --model "
            "(use 'none' for random initialisation)"
        )
    for n in names:
        check_model_name(n)
    out: list[LoadedModel] = []
    plain: list[Path] = []
    for c in map(Path, ckpts):
        ckpt = _read(c)
        if ckpt.lightning is not None:  # a run declares its network
            from .zoo import model_from

            model, report = model_from(ckpt)
            print(f"{c}: {report}", file=sys.stderr)
            out.append(LoadedModel(ckpt.arch["model_name"], model, ckpt.data_hparams))
        else:
            plain.append(c)
    if plain:
        if len(plain) > 1 or len(names) != 1 or weights:
            raise CamError(
                f"{', '.join(map(str, plain))}: a plain state dict needs its architecture: give "
                "exactly one --model NAME with it, or use --model NAME --weights FILE per model"
            )
        n = args.num_classes or _classes_in(plain[0], names[0]) or 1000
        model = create_model(names[0], num_classes=n)
        _load_weights(model, str(plain[0]))
        return out + [LoadedModel(names[0], model)]
    for i, n in enumerate(names):
        src = weights[i] if weights else None
        num = args.num_classes
        if src and src.lower() != "none" and Path(src).is_file() and num is None:
            num = _classes_in(Path(src), n)
        model = create_model(n, num_classes=num or 1000)
        if src and src.lower() != "none":
            _load_weights(model, src)
        else:
            warnings.warn(
                f"{n} has no weights (random initialisation): its maps mean nothing. Fetch zoo "
                f"weights with `inceptionnext-zoo download {n}` and pass `--weights {n}`, or pass "
                "a checkpoint with --ckpt.",
                stacklevel=2,
            )
        out.append(LoadedModel(n, model))
    if not out:
        raise CamError("no model: pass --ckpt PATH or --model NAME")
    return out


def eval_transform(lm: LoadedModel, img_size: int | None):
    """The datamodule's eval transform: the run's data settings, else the model's pretrained cfg."""
    from timm.data import resolve_data_config

    from .data.transforms import build_eval_transform

    cfg = resolve_data_config({}, model=lm.model)
    d = lm.data
    size = img_size or d.get("image_size") or cfg["input_size"][-1]
    for key in ("crop_pct", "mean", "std", "interpolation"):
        if d.get(key) is not None:
            cfg[key] = tuple(d[key]) if key in ("mean", "std") else d[key]
    cfg["input_size"] = (3, int(size), int(size))
    transform = build_eval_transform(
        int(size),
        crop_pct=cfg["crop_pct"],
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
    )
    return transform, cfg


def open_images(paths: Sequence[str]) -> list:
    from PIL import Image, UnidentifiedImageError

    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except FileNotFoundError:
            raise CamError(f"image {p} does not exist") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise CamError(f"cannot open image {p}: {e}") from None
    return images


def _unique_labels(models: list[LoadedModel]) -> list[str]:
    seen: dict[str, int] = {}
    labels = []
    for m in models:
        seen[m.label] = seen.get(m.label, 0) + 1
        labels.append(m.label if seen[m.label] == 1 else f"{m.label}_{seen[m.label]}")
    return labels


def run_overlays(args: argparse.Namespace) -> dict[str, Any]:
    methods = [resolve_method(m) for m in args.method]
    pil = open_images(args.images)
    stems = [Path(p).stem for p in args.images]
    models = load_models(args)
    labels = _unique_labels(models)
    out = Path(args.out)
    columns: dict[str, np.ndarray] = {}
    first_images = None
    summary: dict[str, Any] = {"images": list(args.images), "models": {}}
    for lm, label in zip(models, labels):
        tf, cfg = eval_transform(lm, args.img_size)
        x = torch.stack([tf(im) for im in pil])
        entry: dict[str, Any] = {"input_size": list(cfg["input_size"])}
        for method in methods:
            res = compute_cam(
                lm.model,
                x,
                targets=args.target_class,
                method=method,
                target_layer=args.target_layer,
                mean=cfg["mean"],
                std=cfg["std"],
            )
            if res.degenerate:
                warnings.warn(
                    f"{label}: {degenerate_message(res.layer, x.shape[-1])}", stacklevel=2
                )
            for stem, ovl in zip(stems, res.overlays):
                save_image(ovl, out / label / f"{stem}_{method}.png")
            col = label if len(methods) == 1 else f"{label}\n{method}"
            columns[col] = res.overlays
            if first_images is None:
                first_images = res.images
            entry[method] = {
                "layer": res.layer,
                "predictions": res.predictions.tolist(),
                "confidences": [round(float(c), 4) for c in res.confidences],
                "targets": res.targets.tolist(),
            }
            for stem, p, c in zip(stems, res.predictions, res.confidences):
                print(f"{label:>28s}  {method:<9s}  {stem:<24s}  predicted {p} ({c:.1%})")
        summary["models"][label] = entry
    if len(columns) > 1:
        fig = comparison_figure(first_images, columns, row_labels=stems)
        summary["comparison"] = str(save_figure(fig, out / "comparison.png"))
        print(f"side-by-side figure: {summary['comparison']}")
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    print(f"overlays in {out}/<model>/<image>_<method>.png")
    return summary


def run_meaning(args: argparse.Namespace) -> list[dict[str, Any]]:
    from .cam.meaning import stroke_energy
    from .data import ImageDataModule

    models = load_models(args)
    reports = []
    for lm in models:
        d = lm.data
        keys = ("dataset", "image_size", "crop_pct", "interpolation", "mean", "std")
        kw = {k: d[k] for k in keys if d.get(k) is not None}
        kw.setdefault("dataset", "digits")
        if args.img_size:
            kw["image_size"] = args.img_size
        kw.setdefault("model_name", lm.label)
        loader = dict(batch_size=64, num_workers=0, persistent_workers=False, pin_memory=False)
        dm = ImageDataModule(**kw, loader=loader)
        dm.setup("validate")
        for method in args.method:
            rep = stroke_energy(
                lm.model,
                dm.val_dataset,
                dm.mean,
                dm.std,
                method=method,
                target_layer=args.target_layer,
                limit=args.limit,
            )
            print(f"{lm.label} ({kw['dataset']}, {dm.image_size}px): {rep}")
            reports.append({"model": lm.label, "image_size": dm.image_size, **rep.as_dict()})
    if args.out:
        atomic_write_bytes(Path(args.out) / "meaning.json", json.dumps(reports, indent=2).encode())
    return reports


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inceptionnext-cam",
        description="Grad-CAM overlays of image files for one or several models "
        "(several models also give a side-by-side figure, like the paper's Figure 4).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--ckpt",
        action="append",
        metavar="PATH",
        help="Lightning checkpoint of ImageClassifier (repeatable), or a plain state "
        "dict together with one --model",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="model name (repeatable), e.g. inceptionnext_tiny, resnet50",
    )
    p.add_argument(
        "--weights",
        action="append",
        metavar="SOURCE",
        help="weights for the --model at the same position: a zoo name, a file, "
        "an https URL, hf-hub:ID, or 'none' (random)",
    )
    p.add_argument(
        "--num-classes", type=int, help="head size of --model (default: from weights, else 1000)"
    )
    p.add_argument("--images", nargs="+", metavar="FILE", help="image files")
    p.add_argument(
        "--method",
        nargs="+",
        default=["gradcam"],
        metavar="METHOD",
        help=f"one or more of: {', '.join(METHODS)} (default gradcam)",
    )
    p.add_argument("--out", metavar="DIR", help="output folder")
    p.add_argument(
        "--target-class",
        type=int,
        metavar="N",
        help="class to explain (default: each image's predicted class)",
    )
    p.add_argument(
        "--img-size",
        type=int,
        metavar="PX",
        help="input resolution (default: the run's, else the model's pretrained config)",
    )
    p.add_argument(
        "--target-layer",
        metavar="NAME",
        help="dotted module name to hook, e.g. stages.2 (default: the family's last stage)",
    )
    p.add_argument(
        "--meaning",
        action="store_true",
        help="instead of overlays: share of CAM mass on digit strokes over the "
        "validation set of the run's data (digits by default)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="--meaning: measure only N images")
    return p


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    for m in args.method:
        resolve_method(m)
    if args.meaning:
        if not (args.ckpt or args.model):
            raise CamError("--meaning needs --ckpt PATH (or --model NAME --weights SOURCE)")
        run_meaning(args)
        return 0
    if not args.images or not args.out:
        raise CamError("give --images FILE... and --out DIR (or --meaning)")
    run_overlays(args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; ``--debug`` shows the traceback of a known error."""
    return run_command("inceptionnext-cam", _run, argv, extra=(FileNotFoundError,))


if __name__ == "__main__":
    raise SystemExit(main())

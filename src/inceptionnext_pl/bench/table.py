"""Params and MACs of any model names at a given resolution (torch's flop counter).

inceptionnext-table inceptionnext_tiny convnext_tiny --img-size 224
inceptionnext-table        # every model with paper figures, beside them (``inceptionnext_pl.paper``)
inceptionnext-table --seg  # the segmentation networks of Tables 6 and 7, beside the paper's
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from ..commands import run_command
from ..models import OUR_MODELS, create_model, list_models
from ..paper import PAPER as PAPER_FIGURES
from .measure import count, takes_img_size

# (params M, MACs G, resolution) as the paper reports them, for the models defined here.
PAPER: dict[str, tuple[float | None, float | None, int]] = {
    name: (r.params_m, r.macs_g, r.img_size)
    for name, r in PAPER_FIGURES.items()
    if name in OUR_MODELS
}


def table(names: Sequence[str], img_size: int | None = None) -> list[dict]:
    rows = []
    for name in names:
        size = img_size or PAPER.get(name, (0, 0, 224))[2]
        with torch.device("meta"):  # shapes only: no memory, no init time
            model = create_model(name, **({"img_size": size} if takes_img_size(name) else {}))
        params, macs = count(model, size)
        row = dict(model=name, img_size=size, params_m=round(params, 2), macs_g=round(macs, 2))
        if name in PAPER and size == PAPER[name][2]:
            row["paper_params_m"], row["paper_macs_g"] = PAPER[name][:2]
        rows.append(row)
    return rows


def seg_table(keys: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Params and MACs of SemanticSegmenter networks at the paper's input sizes (meta device)."""
    from ..paper import PAPER_SEG
    from ..seg.networks import build_segmentation_net

    rows = []
    for decoder, backbone in keys or list(PAPER_SEG):
        ref = PAPER_SEG[(decoder, backbone)]
        kwargs = {"img_size": ref.input_size} if takes_img_size(backbone) else {}
        with torch.device("meta"):
            net = build_segmentation_net(backbone, decoder, 150, **kwargs)
        params, macs = count(net, ref.input_size)
        rows.append(
            dict(
                decoder=decoder,
                backbone=backbone,
                input=ref.input_size,
                params_m=round(params, 1),
                macs_g=round(macs, 1),
                paper_params_m=ref.params_m,
                paper_macs_g=ref.macs_g,
                paper_miou=ref.miou,
            )
        )
    return rows


def format_seg_table(rows: list[dict]) -> str:
    head = (
        f"| {'head':7} | {'backbone':28} | input    | params (M) | MACs (G) | paper params "
        "| paper MACs | paper mIoU |"
    )
    lines = [head, "|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        size = "x".join(map(str, r["input"]))
        lines.append(
            f"| {r['decoder']:7} | {r['backbone']:28} | {size:8} | {r['params_m']:10.1f} | "
            f"{r['macs_g']:8.1f} | {r['paper_params_m']:>12} | {r['paper_macs_g']:>10} | "
            f"{r['paper_miou']:>10} |"
        )
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    head = f"| {'model':26} | img | params (M) | MACs (G) | paper params | paper MACs |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(
            f"| {r['model']:26} | {r['img_size']:3} | {r['params_m']:10.2f} | {r['macs_g']:8.2f} | "
            f"{r.get('paper_params_m', ''):>12} | {r.get('paper_macs_g', ''):>10} |"
        )
    return "\n".join(lines)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="inceptionnext-table", description=__doc__.splitlines()[0]
    )
    parser.add_argument("models", nargs="*", help="model names (default: the paper's table)")
    parser.add_argument(
        "--img-size", type=int, default=None, help="default: the paper's resolution per model"
    )
    parser.add_argument(
        "--list", action="store_true", help="print every model name create_model knows"
    )
    parser.add_argument(
        "--seg", action="store_true", help="the segmentation networks of Tables 6 and 7"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(list_models()))
        return 0
    if args.seg:
        print(format_seg_table(seg_table()))
        return 0
    print(format_table(table(args.models or list(PAPER), args.img_size)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; an unknown model name prints one line, not a traceback."""
    return run_command("inceptionnext-table", _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Figure 1 of the paper redrawn from measurements: the paper's top-1 against training throughput."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from .report import read_csv

# ImageNet-1k top-1 (%) at 224^2 as the paper reports it, with a display name.
# Table 4 unless noted; the ConvNeXt-T kernel/ratio rows are Table 1, the isotropic ones Table 5.
# The numbers describe the published checkpoints: the benchmark itself times random weights.
PAPER_TOP1: dict[str, tuple[str, float]] = {
    "inceptionnext_atto": ("InceptionNeXt-A", 75.3),
    "inceptionnext_tiny": ("InceptionNeXt-T", 82.3),
    "inceptionnext_small": ("InceptionNeXt-S", 83.5),
    "inceptionnext_base": ("InceptionNeXt-B", 84.0),
    # timm's implementation of the same networks and weights
    "inception_next_atto": ("InceptionNeXt-A (timm)", 75.3),
    "inception_next_tiny": ("InceptionNeXt-T (timm)", 82.3),
    "inception_next_small": ("InceptionNeXt-S (timm)", 83.5),
    "inception_next_base": ("InceptionNeXt-B (timm)", 84.0),
    "convnext_atto": ("ConvNeXt-A", 75.7),
    "convnext_tiny": ("ConvNeXt-T", 82.1),
    "convnext_small": ("ConvNeXt-S", 83.1),
    "convnext_base": ("ConvNeXt-B", 83.8),
    "convnext_tiny_k5": ("ConvNeXt-T/k5", 82.0),
    "convnext_tiny_k3": ("ConvNeXt-T/k3", 81.5),
    "convnext_tiny_k3_par1_2": ("ConvNeXt-T/k3 r1/2", 81.4),
    "convnext_tiny_k3_par3_8": ("ConvNeXt-T/k3 r3/8", 81.4),
    "convnext_tiny_k3_par1_4": ("ConvNeXt-T/k3 r1/4", 81.3),
    "convnext_tiny_k3_par1_8": ("ConvNeXt-T/k3 r1/8", 80.8),
    "convnext_tiny_k3_par1_16": ("ConvNeXt-T/k3 r1/16", 80.1),
    # "RSB-ResNet" rows (ResNet strikes back recipe) at 224^2; timm lists 80.4 for
    # resnet50.a1_in1k, measured at 288^2.
    "resnet50": ("ResNet-50 (RSB)", 79.8),
    "resnet101": ("ResNet-101 (RSB)", 81.3),
    "resnet152": ("ResNet-152 (RSB)", 81.8),
    "swin_tiny_patch4_window7_224": ("Swin-T", 81.3),
    "swin_small_patch4_window7_224": ("Swin-S", 83.0),
    "swin_base_patch4_window7_224": ("Swin-B", 83.5),
    "deit_small_patch16_224": ("DeiT-S", 79.8),
    "deit_base_patch16_224": ("DeiT-B", 81.8),
    "inceptionnext_small_iso": ("InceptionNeXt-S (iso.)", 79.7),
    "convnext_small_iso": ("ConvNeXt-S (iso.)", 79.7),
    # metanext_attn_small (3.9%, it does not converge) is left out: it would flatten the plot.
}


def top1(name: str) -> float | None:
    """The paper's top-1 for a model name (a timm tag such as ``.in1k`` is ignored)."""
    entry = PAPER_TOP1.get(name.split(".")[0])
    return entry[1] if entry else None


def _series_label(rows: Sequence[dict[str, Any]]) -> str:
    r = rows[0]
    compiled = ", compiled" if str(r.get("compile")) in ("True", "1", "1.0") else ""
    batch = r.get("batch_size")
    batch = int(batch) if isinstance(batch, float) else batch
    img = r.get("img_size")
    img = int(img) if isinstance(img, float) else img
    clock = " · CPU-time clock" if r.get("clock") == "cpu" else ""
    return (
        f"{r.get('device_name')} · {r.get('precision')}{compiled} · batch {batch} · {img}²{clock}"
    )


def _place_labels(ax: Any, labels: Sequence[tuple], fontsize: float = 7.5) -> None:
    """Annotate points; each label goes to the first spot, right then left of its point, that
    overlaps no label already placed."""
    px_per_pt = ax.figure.dpi / 72
    line = 1.25 * fontsize  # points
    placed: list[tuple[float, float, float]] = []  # left, baseline (display px), width (px)
    spots = [(side, k) for side in (1, -1) for k in (0, -1, 1, -2, 2)]
    for xy, text, color, ours in sorted(labels, key=lambda t: (-t[0][1], t[0][0])):
        px, py = ax.transData.transform(xy)
        width = 0.62 * fontsize * px_per_pt * len(text)

        candidates = [
            (
                side,
                k,
                px + side * 6 * px_per_pt - (width if side < 0 else 0),
                py + (3 + k * line) * px_per_pt,
            )
            for side, k in spots
        ]
        side, k, left, base = next(
            (
                c
                for c in candidates
                if not any(
                    abs(c[3] - qy) < line * px_per_pt and c[2] < qx + qw and qx < c[2] + width
                    for qx, qy, qw in placed
                )
            ),
            candidates[0],
        )
        placed.append((left, base, width))
        ax.annotate(
            text,
            xy,
            textcoords="offset points",
            xytext=(6 * side, 3 + k * line),
            ha="left" if side > 0 else "right",
            fontsize=fontsize,
            color=color,
            fontweight="bold" if ours else "normal",
        )


def plot_figure1(csv_paths: Sequence[Path], png_path: Path) -> list[str]:
    """Draw each CSV as one series; returns the models plotted. Raises ValueError if none can be."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    series = []
    for path in csv_paths:
        rows = read_csv(Path(path))
        missing = {"model", "train_img_s"} - set(rows[0] if rows else {})
        if missing:
            raise ValueError(
                f"{path} has no {', '.join(sorted(missing))} column: plot a models CSV "
                "written by `inceptionnext-bench --mode models`"
            )
        points = [r for r in rows if top1(r["model"]) is not None and r["train_img_s"]]
        if points:
            series.append((_series_label(rows), points))
    if not series:
        raise ValueError(
            "no model in the CSV has a paper top-1 to plot; known names: " + ", ".join(PAPER_TOP1)
        )

    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    plotted, labels = [], []
    for i, (label, points) in enumerate(series):
        for j, r in enumerate(points):
            name = r["model"].split(".")[0]
            ours = name.startswith(("inceptionnext", "inception_next"))
            xy = (r["train_img_s"], top1(name))
            ax.scatter(
                *xy,
                s=170 if ours else 60,
                marker="*" if ours else "o",
                color=f"C{i}",
                edgecolor="black" if ours else "none",
                zorder=3,
                label=label if j == 0 else None,
            )
            labels.append((xy, PAPER_TOP1[name][0], f"C{i}", ours))
            plotted.append(r["model"])
    xs = [xy[0] for xy, *_ in labels]
    if (
        max(xs) / min(xs) > 4
    ):  # atto and base models together: a linear axis squashes the large ones
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.25, y=0.12)  # room for the labels right of the points
    ax.autoscale_view()
    _place_labels(ax, labels)
    ax.set_xlabel("measured training throughput (img/s)")
    ax.set_ylabel("ImageNet-1k top-1 (%) as reported in the paper")
    ax.set_title("Accuracy vs training throughput (after Figure 1 of InceptionNeXt)")
    ax.grid(True, alpha=0.3, which="both")
    # below the axes, where it hides no point
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(png_path), buf.getvalue())
    return plotted

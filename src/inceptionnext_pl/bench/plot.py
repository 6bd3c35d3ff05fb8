"""Figure 1 of the paper redrawn from measurements: the paper's top-1 against training throughput."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes
from ..paper import PAPER
from .report import read_csv
from .spec import format_kwargs, split_spec

# Left out of the figure: MetaNeXt-Attn does not converge (3.9%), it would flatten the plot.
_NOT_PLOTTED = ("metanext_attn_small",)


def _top1_table() -> dict[str, tuple[str, float]]:
    """(label, top-1) of every model the paper reports at 224², plus timm's InceptionNeXt names.

    The numbers describe the published checkpoints; the benchmark itself times random weights.
    """
    import timm

    table = {
        name: (r.label, r.top1)
        for name, r in PAPER.items()
        if r.top1 is not None and r.img_size == 224 and name not in _NOT_PLOTTED
    }
    # timm's implementation of the same networks and weights
    for timm_name in timm.list_models("inception_next_*"):
        ours = table.get(timm_name.replace("inception_next_", "inceptionnext_", 1))
        if ours is not None:
            table[timm_name] = (f"{ours[0]} (timm)", ours[1])
    return table


PAPER_TOP1: dict[str, tuple[str, float]] = _top1_table()


def _entry(name: str) -> tuple[str, float] | None:
    return PAPER_TOP1.get(name) or PAPER_TOP1.get(name.split(".")[0])


def top1(name: str) -> float | None:
    """The paper's top-1 for a model name (a timm tag such as ``.in1k`` is ignored)."""
    entry = _entry(name)
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


def _overlap(a: Any, b: Any) -> float:
    """Area shared by two display-space boxes (matplotlib Bbox)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _place_labels(ax: Any, points: Sequence[tuple], fontsize: float = 7.5) -> None:
    """Label each point where its text covers no other label, no marker and stays in the axes.

    ``points`` are ``(xy, text, color, ours, marker_area_pt2)``. Candidate spots ring each point
    (right, left, above and below, then one line further out each round); each text is measured
    as drawn, and the first spot without overlap wins (else the least overlapping one). Labels
    moved off their point's line get a thin leader line.
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72
    line = 1.3 * fontsize  # points
    frame = ax.get_window_extent(renderer)
    markers = []
    for xy, *_, area in points:
        px, py = ax.transData.transform(xy)
        r = area**0.5 / 2 * px_per_pt
        markers.append(Bbox.from_extents(px - r, py - r, px + r, py + r))
    placed: list[Any] = []
    order = sorted(range(len(points)), key=lambda i: (-points[i][0][1], points[i][0][0]))
    for i in order:
        xy, text, color, ours, area = points[i]
        gap = area**0.5 / 2 + 3  # points from the centre: clear of the marker
        spots = []
        for ring in range(6):
            for side in (1, -1):
                for dy in (0,) if ring == 0 else (ring, -ring):
                    spots.append((side * gap, dy * line, "left" if side > 0 else "right"))
            spots += [(0.0, gap + ring * line, "center"), (0.0, -gap - ring * line, "center")]
        best: tuple[float, tuple] | None = None
        for dx, dy, ha in spots:
            ann = ax.annotate(
                text,
                xy,
                textcoords="offset points",
                xytext=(dx, dy),
                ha=ha,
                va="center",
                fontsize=fontsize,
                color=color,
                fontweight="bold" if ours else "normal",
            )
            box = ann.get_window_extent(renderer).padded(1.5)
            ann.remove()
            outside = box.width * box.height - _overlap(box, frame)
            cost = 4 * outside + sum(_overlap(box, b) for b in (*placed, *markers))
            if best is None or cost < best[0]:
                best = (cost, (dx, dy, ha, box))
            if cost == 0:
                break
        assert best is not None
        dx, dy, ha, box = best[1]
        leader = abs(dy) > line / 2 and ha != "center" or abs(dy) > gap + line / 2
        ax.annotate(
            text,
            xy,
            textcoords="offset points",
            xytext=(dx, dy),
            ha=ha,
            va="center",
            fontsize=fontsize,
            color=color,
            fontweight="bold" if ours else "normal",
            arrowprops=dict(arrowstyle="-", lw=0.5, color=color, shrinkA=0, shrinkB=gap - 3)
            if leader
            else None,
        )
        placed.append(box)


def plot_figure1(csv_paths: Sequence[Path], png_path: Path) -> list[str]:
    """Draw each CSV as one series into ``png_path``; returns the models plotted."""
    import matplotlib.pyplot as plt

    fig, plotted = figure1(csv_paths)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(png_path), buf.getvalue())
    return plotted


def figure1(csv_paths: Sequence[Path]) -> tuple[Any, list[str]]:
    """The figure (one series per CSV) and the models on it. Raises ValueError if none can be."""
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
        points = [
            r for r in rows if top1(split_spec(r["model"])[0]) is not None and r["train_img_s"]
        ]
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
            name, kwargs = split_spec(r["model"])
            ours = name.startswith(("inceptionnext", "inception_next"))
            xy = (r["train_img_s"], top1(name))
            area = 170 if ours else 60
            ax.scatter(
                *xy,
                s=area,
                marker="*" if ours else "o",
                color=f"C{i}",
                edgecolor="black" if ours else "none",
                zorder=3,
                label=label if j == 0 else None,
            )
            text = _entry(name)[0] + (f" [{format_kwargs(kwargs)}]" if kwargs else "")
            labels.append((xy, text, f"C{i}", ours, area))
            plotted.append(r["model"])
    xs = [xy[0] for xy, *_ in labels]
    if (
        max(xs) / min(xs) > 4
    ):  # atto and base models together: a linear axis squashes the large ones
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.25, y=0.12)  # room for the labels around the points
    ax.autoscale_view()
    ax.set_xlabel("measured training throughput (img/s)")
    ax.set_ylabel("ImageNet-1k top-1 (%) as reported in the paper")
    ax.set_title("Accuracy vs training throughput (after Figure 1 of InceptionNeXt)")
    ax.grid(True, alpha=0.3, which="both")
    # below the axes, where it hides no point
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    _place_labels(ax, labels)  # after the layout, which would move the points under the labels
    return fig, plotted

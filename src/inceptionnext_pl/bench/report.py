"""What a run records: the environment, ratios to a baseline, the printed table, CSV and JSON files."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch

from ..files import atomic_write_bytes

# Columns copied onto every CSV row so that one CSV line carries its own context.
CONTEXT_KEYS = (
    "device_name",
    "device",
    "precision",
    "memory_format",
    "compile",
    "img_size",
    "batch_size",
    "warmup",
    "iters",
    "rounds",
    "clock",
    "memory_kind",
    "torch",
    "cuda",
    "triton",
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return f"CPU {model} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware, for the JSON and the CSV rows."""
    env: dict[str, Any] = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "timm": timm.__version__,
        "triton": _version("triton"),
        "lightning": _version("lightning"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        env["compute_capability"] = f"{props.major}.{props.minor}"
    return env


def add_ratios(
    rows: list[dict[str, Any]],
    id_key: str,
    baseline: str,
    metrics: Sequence[str],
    group_key: str | None = None,
) -> None:
    """Add ``<metric>_ratio`` = value / baseline's value (within each ``group_key`` group)."""
    base = {r.get(group_key): r for r in rows if r[id_key] == baseline}
    for r in rows:
        ref = base.get(r.get(group_key))
        for m in metrics:
            ok = ref and ref[m] and r[m] is not None
            r[f"{m}_ratio"] = round(r[m] / ref[m], 4) if ok else None


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt) if fmt else str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table (pastes into the README); columns are (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    cells += [[_cell(r.get(k), f) for k, _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def csv_rows(rows: Sequence[dict[str, Any]], context: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows for the CSV: nested fields dropped, the run's context appended."""
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if not isinstance(v, dict)}
        row.update({k: context.get(k) for k in CONTEXT_KEYS})
        flat.append(row)
    return flat


def write_results(
    out_dir: Path, stem: str, rows: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.json``; ``meta`` holds ``environment`` and ``settings``."""
    context = {**meta["environment"], **meta["settings"]}
    flat = csv_rows(rows, context)
    buf = io.StringIO()
    if flat:
        fields = list(dict.fromkeys(k for r in flat for k in r))
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    payload = {**meta, "results": list(rows)}
    atomic_write_bytes(json_path, (json.dumps(payload, indent=2, default=str) + "\n").encode())
    return csv_path, json_path


def _parse(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV this tool wrote, with numbers parsed back (empty cells become None)."""
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(f)]

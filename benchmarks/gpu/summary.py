"""Issue 11's targets against what benchmarks/gpu/check.sh measured so far (no torch import).

    python benchmarks/gpu/summary.py RESULTS_DIR

Reads the step table (steps.tsv), env.json, cuda-tests.xml, models-eager.csv,
models-compiled.csv, kernels.csv and fit.csv that check.sh writes, and prints each target with
its measured value; a missing file shows as "not measured".
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The rows' models, as check.sh names them (a DRY run uses the atto models).
OURS = os.environ.get("OURS", "inceptionnext_tiny")
OURS_ON, OURS_OFF = f"{OURS}:fast={os.environ.get('FAST', 'on')}", f"{OURS}:fast=off"
TIMM = os.environ.get("TIMM", "inception_next_tiny")
CONVNEXT = os.environ.get("CONVNEXT", "convnext_tiny")


def _paper():
    # the paper's figures, from the one module that holds them (no package import: no torch)
    spec = importlib.util.spec_from_file_location("paper", REPO / "src/inceptionnext_pl/paper.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper"] = mod
    spec.loader.exec_module(mod)
    return mod.PAPER


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _check(label: str, value: float | None, target: float, unit: str = "x") -> str:
    if value is None:
        return f"  {label:66s} not measured (target >= {target:g}{unit})"
    verdict = "MET" if value >= target else "missed"
    return f"  {label:66s} {value:6.2f}{unit}  target >= {target:g}{unit}: {verdict}"


def summary(res: Path) -> str:
    out = []
    env = json.loads((res / "env.json").read_text()) if (res / "env.json").is_file() else {}
    if env:
        v = env.get("versions", {})
        out.append(
            f"{env.get('device', '?')} · torch {v.get('torch')} · CUDA {v.get('cuda')} · "
            f"triton {v.get('triton')} · lightning {v.get('lightning')} · timm {v.get('timm')}"
        )
    steps = [line.split("\t") for line in _lines(res / "steps.tsv")]
    if steps:
        out.append(
            "steps (name, exit status, seconds / cap): "
            + ", ".join(
                f"{s[0]} {'ok' if s[1] == '0' else 'rc=' + s[1]} {s[2]}/{s[3]}s" for s in steps
            )
        )
    xml = res / "cuda-tests.xml"
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        a = suite.attrib
        out.append(
            f"CUDA tests: {a.get('tests')} run, {a.get('failures')} failed, {a.get('errors')} "
            f"errors, {a.get('skipped')} skipped"
        )
    paper = _paper()
    t, c = paper["inceptionnext_tiny"].a100_tf32, paper["convnext_tiny"].a100_tf32
    out.append(
        f"paper anchor (A100 TF32 training): {t[0]} / {c[0]} = {t[0] / c[0]:.2f}x ConvNeXt-T"
    )
    # (bench, phase, ours / whom, target): issue 11's throughput targets
    targets = (
        ("eager", "train", TIMM, 1.3),
        ("eager", "train", CONVNEXT, 1.5),
        ("eager", "infer", TIMM, 1.3),
        ("compiled", "train", TIMM, 1.2),
        ("compiled", "train", CONVNEXT, 1.3),
    )
    for title in ("eager", "compiled"):
        rows = {r["model"]: r for r in _rows(res / f"models-{title}.csv")}
        if not rows:
            out.append(f"{title} bench: not measured")
            continue
        out.append(f"{title} bench (img/s, bf16, channels_last):")
        for name, r in rows.items():
            train, infer = r["train_img_s"] or "-", r["infer_img_s"] or "-"
            out.append(f"  {name:30s} train {train:>10}  infer {infer:>10}")
        value = {(k, p): _num(r[f"{p}_img_s"]) for k, r in rows.items() for p in ("train", "infer")}
        for bench, phase, other, target in targets:
            if bench == title:
                ratio = _ratio(value.get((OURS_ON, phase)), value.get((other, phase)))
                out.append(_check(f"{title} {phase}, {OURS_ON} / {other}", ratio, target))
        on_off = _ratio(value.get((OURS_ON, "train")), value.get((OURS_OFF, "train")))
        out.append(f"  training, fast on / fast off: {_fmt(on_off)}")
    kernels = _rows(res / "kernels.csv")
    if kernels:
        out.append(f"mixer alone (copy bandwidth {kernels[0]['copy_gbps']} GB/s read + written):")
        for r in kernels:
            label = f"{r['variant']} {r['precision']} stage {r['stage']} {r['pass_']} {r['ms']} ms"
            if r["variant"] == "fused" and r["stage"] in ("1", "2"):  # the target's stages
                out.append(_check(label + ", share", _num(r["bw_share"]), 0.6, ""))
            elif r["variant"] in ("fused", "dwconv7x7"):
                out.append(f"  {label + ', share':66s} {r['bw_share']}")
    else:
        out.append("mixer alone: not measured")
    fit = {r["setting"]: _num(r["img_per_s"]) for r in _rows(res / "fit.csv")}
    if fit:
        out.append(
            "lightning fit (img/s after warm-up): "
            + ", ".join(f"{k} {v:.1f}" for k, v in fit.items() if v)
        )
        eager = {r["model"]: _num(r["train_img_s"]) for r in _rows(res / "models-eager.csv")}
        bench = eager.get(OURS_OFF)  # tiny.yaml leaves fast off, as (a) runs
        a = fit.get("a")
        out.append(_check("(a) synthetic / eager bench training (fast off)", _ratio(a, bench), 0.9))
        out.append(_check("(b) real JPEGs / (a)", _ratio(fit.get("b"), a), 0.9))
        out.append(f"  (c) compile + fast path / (b): {_fmt(_ratio(fit.get('c'), fit.get('b')))}")
    else:
        out.append("lightning fit: not measured")
    return "\n".join(out)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.is_file() else []


if __name__ == "__main__":
    print(summary(Path(sys.argv[1])))

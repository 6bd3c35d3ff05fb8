"""The two benchmarks: whole networks (train and inference) and the token mixer alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InceptionNextError
from ..models import InceptionDWConv2d, MixerCfg, create_model
from ..models.kernels.bench import stage_shapes
from ..models.token_mixers import PartialDWConv2d
from .measure import (
    CLOCKS,
    MEMORY_FORMATS,
    PeakMemory,
    autocast,
    count,
    cuda_math,
    free_memory,
    median_step_time,
    with_oom_backoff,
)
from .spec import split_spec

Log = Callable[[str], None]


class BenchError(InceptionNextError, RuntimeError):
    """A model or setting that cannot be benchmarked; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    device: torch.device
    precision: str
    memory_formats: tuple[str, ...]  # one, or both for "best"
    batch_size: int
    img_size: int
    compile: bool
    warmup: int
    iters: int
    num_classes: int = 1000
    clock: str = "wall"
    phases: tuple[str, ...] = ("train", "infer")  # what bench_model times


@dataclass
class Measured:
    img_s: float
    step_ms: float
    batch: int
    memory_format: str
    peak_mem_mb: float | None


def _best(results: dict[str, Measured]) -> Measured:
    # The paper reports the better of the two memory layouts, separately for each column.
    return max(results.values(), key=lambda m: m.img_s)


def _maybe_compile(module: nn.Module, settings: Settings) -> nn.Module:
    if not settings.compile:
        return module
    # A fresh cache per model/layout: otherwise dynamo's recompile limit is reached across models
    # of one class and it silently falls back to eager.
    torch._dynamo.reset()
    return torch.compile(module)


def _measure(
    make_step: Callable[[int], Callable[[], object]], settings: Settings, fmt: str, log: Log
) -> Measured:
    def run(batch: int) -> tuple[float, float | None]:
        step = make_step(batch)
        with PeakMemory(settings.device) as mem:
            seconds = median_step_time(
                step, settings.device, settings.warmup, settings.iters, CLOCKS[settings.clock]
            )
        return seconds, mem.mb

    (seconds, mb), batch = with_oom_backoff(run, settings.batch_size, settings.device, log)
    return Measured(
        round(batch / seconds, 2),
        round(seconds * 1e3, 4),
        batch,
        fmt,
        None if mb is None else round(mb, 1),
    )


def fixed_input_size(name: str) -> bool:
    """Whether a model's pretrained config pins its input size (Swin, ViT), so img_size must be passed."""
    from timm.models import get_pretrained_cfg_value

    try:
        return bool(get_pretrained_cfg_value(name, "fixed_input_size"))
    except (RuntimeError, KeyError, ValueError):
        return False


def build_model(name: str, img_size: int, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """``create_model`` with ``img_size`` passed to the models that pin their input size."""
    kwargs["num_classes"] = num_classes
    if fixed_input_size(name):
        kwargs["img_size"] = img_size
    try:
        return create_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise BenchError(
            f"{name} cannot be built at --img-size {img_size}: {exc}. "
            "Try --img-size 224 (or a size the model's patch/window layout divides)."
        ) from exc


def complexity(spec: str, img_size: int, num_classes: int = 1000) -> tuple[float, float]:
    """(params in M, MACs in G) of a model spec, counted on the meta device with the PyTorch
    mixers: the architecture's figures, whichever device or fast path the timing uses."""
    arch, kwargs = split_spec(spec)
    if "fast" in kwargs:
        kwargs["fast"] = "off"  # the fused op has no FLOP formula, and may not run here
    with torch.device("meta"):
        return count(build_model(arch, img_size, num_classes, **kwargs), img_size)


def _train_step_factory(net: nn.Module, settings: Settings, fmt: str) -> Callable:
    device, size = settings.device, settings.img_size

    def make_step(batch: int) -> Callable[[], None]:
        x = torch.randn(batch, 3, size, size, device=device).to(memory_format=MEMORY_FORMATS[fmt])
        y = torch.randint(0, settings.num_classes, (batch,), device=device)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")

        net.zero_grad(set_to_none=True)  # gradients a failed (out-of-memory) attempt left behind

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast(device, settings.precision):
                loss = F.cross_entropy(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        return step

    return make_step


def _infer_step_factory(net: nn.Module, settings: Settings, fmt: str) -> Callable:
    device, size = settings.device, settings.img_size

    def make_step(batch: int) -> Callable[[], None]:
        x = torch.randn(batch, 3, size, size, device=device).to(memory_format=MEMORY_FORMATS[fmt])

        def step() -> None:
            with torch.inference_mode(), autocast(device, settings.precision):
                net(x)

        return step

    return make_step


def bench_model(name: str, settings: Settings, log: Log = print) -> dict[str, Any]:
    """Params, MACs, and training / inference throughput of one network (the better layout of each).

    ``name`` is a model spec: a model name, optionally with ``create_model`` keyword arguments
    (``inceptionnext_tiny:fast=on``, see :mod:`.spec`); the row keeps the whole spec.
    """
    arch, kwargs = split_spec(name)
    model = build_model(arch, settings.img_size, settings.num_classes, **kwargs)
    train: dict[str, Measured] = {}
    infer: dict[str, Measured] = {}
    phase = "counting MACs"
    try:
        params_m, macs_g = complexity(name, settings.img_size, settings.num_classes)
        model.to(settings.device)
        with cuda_math(tf32=settings.precision != "fp32"):
            for fmt in settings.memory_formats:
                model.to(memory_format=MEMORY_FORMATS[fmt])
                net = _maybe_compile(model, settings)
                if "train" in settings.phases:
                    phase = f"timing training ({fmt})"
                    model.train()
                    step = _train_step_factory(net, settings, fmt)
                    train[fmt] = _measure(step, settings, fmt, log)
                    model.zero_grad(set_to_none=True)  # drop gradients before inference's memory
                    free_memory(settings.device)
                if "infer" in settings.phases:
                    phase = f"timing inference ({fmt})"
                    model.eval()
                    step = _infer_step_factory(net, settings, fmt)
                    infer[fmt] = _measure(step, settings, fmt, log)
                del net
                free_memory(settings.device)
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        # one line naming the model and the phase; the rows measured before stay on disk
        raise BenchError(
            f"{name} failed while {phase} at --img-size {settings.img_size} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    del model
    free_memory(settings.device)
    row: dict[str, Any] = {
        "model": name,
        "params_m": round(params_m, 3),
        "macs_g": round(macs_g, 4),
    }
    for phase_name, results in (("train", train), ("infer", infer)):
        best = _best(results) if results else None  # None: a phase left out by settings.phases
        for key, field in _MEASURED_FIELDS.items():
            row[f"{phase_name}_{key}"] = getattr(best, field) if best else None
    # every layout's numbers, for the JSON (the CSV keeps the better one)
    row["by_memory_format"] = {
        fmt: {
            "train_img_s": train[fmt].img_s if fmt in train else None,
            "infer_img_s": infer[fmt].img_s if fmt in infer else None,
        }
        for fmt in settings.memory_formats
    }
    return row


# Row columns per phase, and the Measured field each one holds.
_MEASURED_FIELDS = {
    "img_s": "img_s",
    "step_ms": "step_ms",
    "batch": "batch",
    "memory_format": "memory_format",
    "peak_mem_mb": "peak_mem_mb",
}


# Fields measured together: a merged row takes each group from the round that was fastest for it.
MODEL_GROUPS = {
    "train_img_s": ("train_step_ms", "train_batch", "train_memory_format", "train_peak_mem_mb"),
    "infer_img_s": ("infer_step_ms", "infer_batch", "infer_memory_format", "infer_peak_mem_mb"),
}
MIXER_GROUPS = {
    "fwd_img_s": ("fwd_ms", "fwd_batch", "fwd_memory_format"),
    "fwd_bwd_img_s": (
        "fwd_bwd_ms",
        "fwd_bwd_batch",
        "fwd_bwd_memory_format",
        "fwd_bwd_peak_mem_mb",
    ),
}


def _or_lowest(value: float | None) -> float:
    # None: a phase that settings.phases left out, below every measured value
    return float("-inf") if value is None else value


def best_of_rounds(rounds: Sequence[dict[str, Any]], groups: dict[str, tuple[str, ...]]) -> dict:
    """Merge repeated measurements of one row, keeping each metric's fastest round.

    On a shared machine other work only ever slows a round down, so the fastest round is the
    least disturbed one; every round's value stays in ``by_round`` for the JSON.
    """
    merged = dict(rounds[0])
    for metric, companions in groups.items():
        best = max(rounds, key=lambda r: _or_lowest(r[metric]))
        merged.update({k: best[k] for k in (metric, *companions)})
    if "by_memory_format" in merged:
        merged["by_memory_format"] = {
            fmt: {
                m: max((r["by_memory_format"][fmt][m] for r in rounds), key=_or_lowest)
                for m in vals
            }
            for fmt, vals in rounds[0]["by_memory_format"].items()
        }
    merged["by_round"] = {m: [r[m] for r in rounds] for m in groups}
    return merged


# ---------------------------------------------------------------------------------------------
# Token mixer alone

MIXERS: dict[str, Callable[[int], nn.Module]] = {
    "inception": lambda dim: InceptionDWConv2d(dim, MixerCfg()),
    "dwconv7x7": lambda dim: PartialDWConv2d(dim, MixerCfg(kind="dwconv", kernel_size=7)),
    "dwconv3x3": lambda dim: PartialDWConv2d(dim, MixerCfg(kind="dwconv", kernel_size=3)),
}
MIXER_BASELINE = "dwconv7x7"


def mixer_stages(img_size: int) -> list[tuple[int, int, int]]:
    """(stage, channels, resolution) of InceptionNeXt-T's four stages at ``img_size``."""
    return [
        (i, dim, res) for i, (dim, res) in enumerate(stage_shapes("inceptionnext_tiny", img_size))
    ]


def _mixer_step_factory(
    op: nn.Module, settings: Settings, dim: int, res: int, fmt: str, backward: bool
):
    device = settings.device

    def make_step(batch: int) -> Callable[[], None]:
        x = torch.randn(batch, dim, res, res, device=device).to(memory_format=MEMORY_FORMATS[fmt])
        if not backward:

            def forward() -> None:
                with torch.inference_mode(), autocast(device, settings.precision):
                    op(x)

            return forward

        x.requires_grad_(True)
        with torch.no_grad(), autocast(device, settings.precision):
            grad = torch.randn_like(op(x))

        def forward_backward() -> None:
            op.zero_grad(set_to_none=True)
            x.grad = None
            with autocast(device, settings.precision):
                out = op(x)
            out.backward(grad)

        return forward_backward

    return make_step


def bench_mixers(
    settings: Settings, ops: Sequence[str] = tuple(MIXERS), log: Log = print
) -> list[dict[str, Any]]:
    """Forward and forward+backward throughput of each token mixer at each stage of InceptionNeXt-T."""
    rows = []
    with cuda_math(tf32=settings.precision != "fp32"):
        for stage, dim, res in mixer_stages(settings.img_size):
            for name in ops:
                op = MIXERS[name](dim)
                params_m, macs_g = count(op, res, in_chans=dim)
                op.to(settings.device)
                fwd: dict[str, Measured] = {}
                bwd: dict[str, Measured] = {}
                for fmt in settings.memory_formats:
                    op.to(memory_format=MEMORY_FORMATS[fmt])
                    net = _maybe_compile(op, settings)
                    for backward, store in ((False, fwd), (True, bwd)):
                        factory = _mixer_step_factory(net, settings, dim, res, fmt, backward)
                        store[fmt] = _measure(factory, settings, fmt, log)
                        free_memory(settings.device)
                bf, bb = _best(fwd), _best(bwd)
                rows.append(
                    {
                        "stage": stage + 1,
                        "channels": dim,
                        "resolution": res,
                        "op": name,
                        "params_k": round(params_m * 1e3, 3),
                        "macs_m": round(macs_g * 1e3, 4),
                        "fwd_img_s": bf.img_s,
                        "fwd_bwd_img_s": bb.img_s,
                        "fwd_ms": bf.step_ms,
                        "fwd_bwd_ms": bb.step_ms,
                        "fwd_batch": bf.batch,
                        "fwd_bwd_batch": bb.batch,
                        "fwd_memory_format": bf.memory_format,
                        "fwd_bwd_memory_format": bb.memory_format,
                        "fwd_bwd_peak_mem_mb": bb.peak_mem_mb,
                    }
                )
                log(
                    f"  stage {stage + 1} ({dim}@{res}) {name:10s} fwd {bf.img_s:10.1f} img/s  "
                    f"fwd+bwd {bb.img_s:10.1f} img/s"
                )
                del op
    return rows

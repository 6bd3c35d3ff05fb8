"""Micro-benchmark of the fused Inception depthwise conv at InceptionNeXt-T's stage shapes.

    python -m inceptionnext_pl.models.kernels.bench [--batch 128] [--dtypes bf16 fp32] [--csv out.csv]

Rows per stage, dtype and pass (forward, forward+backward), all channels_last:
``fused`` (the Triton kernel), ``reference`` (the PyTorch split/conv/cat module, same weights),
``dwconv7x7`` (ConvNeXt's 7x7 depthwise conv through cuDNN) and ``fused7x7`` (the same 7x7 conv
through the Triton kernel).

Bandwidth. ``mb`` is the least memory traffic of the pass, the same for every variant: forward
reads x and writes y; forward+backward adds reading dy, writing dx and reading the convolved
channels of x for the weight gradient. ``gbps`` is that traffic over the time, and ``bw_share``
its share of the copy bandwidth measured in the same run (a large device-to-device copy, bytes
read plus written): how close a variant comes to the memory floor. ``fused_rel_err`` is the fused
output's largest deviation from the reference, relative to the reference's largest value.

Stage shapes come from the model definition (``--model``, default InceptionNeXt-T). On a CPU
(``--device cpu``) the kernel runs under ``TRITON_INTERPRET=1`` and the timings only check that
the benchmark works. Whole-network throughput is ``inceptionnext-bench``'s job.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ...files import atomic_write_bytes
from ..factory import create_model
from ..token_mixers import InceptionDWConv2d, MixerCfg

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
VARIANTS = ("fused", "reference", "dwconv7x7", "fused7x7")
COLUMNS = ("precision", "stage", "shape", "pass_", "variant", "ms", "gbps", "bw_share")


def _meta_model(model: str) -> nn.Module:
    with torch.device("meta"):  # the definition only: no memory, no init time
        return create_model(model)


def stage_shapes(model: str = "inceptionnext_tiny", img_size: int = 224) -> list[tuple[int, int]]:
    """(channels, resolution) of each stage of ``model`` at ``img_size``, from its definition."""
    return [(f["num_chs"], img_size // f["reduction"]) for f in _meta_model(model).feature_info]


def stage_mixers(model: str = "inceptionnext_tiny") -> list[MixerCfg]:
    """The Inception mixer options of each stage of ``model`` (its first block's)."""
    net = _meta_model(model)
    cfgs = []
    for info in net.feature_info:
        mixer = net.get_submodule(info["module"]).blocks[0].token_mixer
        if not isinstance(mixer, InceptionDWConv2d):
            raise SystemExit(f"{model}'s {info['module']} has no Inception mixer to benchmark")
        cfgs.append(mixer.cfg)
    return cfgs


def _variants(dim: int, cfg: MixerCfg) -> dict[str, nn.Module]:
    ref = InceptionDWConv2d(dim, replace(cfg, fast="off"))
    fused = InceptionDWConv2d(dim, replace(cfg, fast="on"))
    fused.load_state_dict(ref.state_dict())
    full7 = MixerCfg(branches=("hw",), branch_ratio=1.0, square_kernel_size=7, fast="on")
    return {
        "fused": fused,
        "reference": ref,
        "dwconv7x7": nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
        "fused7x7": InceptionDWConv2d(dim, full7),
    }


def _conv_share(m: nn.Module, dim: int) -> float:
    """Share of the channels a mixer convolves (their x is re-read for the weight gradient)."""
    if isinstance(m, InceptionDWConv2d):
        return 1.0 - m.split_indexes[0] / dim
    return 1.0


def make_timer(device: torch.device, cpu_reps: int = 3) -> Callable[[Callable[[], object]], float]:
    """Milliseconds per call: the median of ``triton.testing.do_bench`` (CUDA events) on a GPU,
    of ``cpu_reps`` synchronous calls after one warm-up call on a CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=10, rep=50, return_mode="median"))

    def cpu(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(cpu_reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    return cpu


def copy_bandwidth(device: torch.device, nbytes: int, timer: Callable) -> float:
    """GB/s of a device-to-device copy of ``nbytes`` random bytes, counting read plus written."""
    src = torch.randn(nbytes // 4, device=device)  # random data: zeros can time faster
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / ms / 1e6


def run(
    batch: int,
    dtypes: Sequence[str],
    stages: Sequence[int],
    device: torch.device | None = None,
    img_size: int = 224,
    model: str = "inceptionnext_tiny",
    variants: Sequence[str] = VARIANTS,
    copy_mb: int | None = None,
    cpu_reps: int = 3,
) -> tuple[list[dict], float]:
    """The rows, and the measured copy bandwidth (GB/s) they are compared with."""
    dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("the kernel benchmark needs a CUDA GPU (and triton); none is visible")
    if dev.type == "cpu":
        from . import interpreter_enabled

        if not interpreter_enabled():
            raise SystemExit(
                "the kernel benchmark needs a CUDA GPU (and triton); on a CPU set "
                "TRITON_INTERPRET=1 to check that it runs (its timings mean nothing there)"
            )
    timer = make_timer(dev, cpu_reps)
    import triton

    triton_version = triton.__version__
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    copy_gbps = copy_bandwidth(dev, (copy_mb or (1024 if dev.type == "cuda" else 16)) << 20, timer)
    shapes, mixers = stage_shapes(model, img_size), stage_mixers(model)
    rows = []
    for si in stages:
        dim, size = shapes[si]
        for dname in dtypes:
            dtype = DTYPES[dname]
            x = torch.randn(batch, dim, size, size, device=dev, dtype=dtype)
            x = x.to(memory_format=torch.channels_last).requires_grad_()
            g = torch.randn_like(x)
            mods = {
                k: m.to(dev, dtype, memory_format=torch.channels_last)
                for k, m in _variants(dim, mixers[si]).items()
                if k in (*variants, "fused", "reference")
            }
            with torch.no_grad():
                want = mods["reference"](x).float()
                got = mods["fused"](x).float()
            err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
            nbytes = x.numel() * x.element_size()
            for var in variants:
                m = mods[var]
                fwd_ms = timer(lambda m=m, x=x: m(x))
                bwd_ms = timer(
                    lambda m=m, x=x, g=g: torch.autograd.grad(m(x), [x, *m.parameters()], g)
                )
                # least traffic, the same for every variant (see the module docstring)
                bwd_traffic = 4 + _conv_share(mods["fused"], dim)
                for pass_, ms, traffic in (("fwd", fwd_ms, 2.0), ("fwd+bwd", bwd_ms, bwd_traffic)):
                    gbps = traffic * nbytes / ms / 1e6
                    rows.append(
                        dict(
                            device=name,
                            precision=dname,
                            stage=si + 1,
                            shape=f"{batch}x{dim}x{size}x{size}",
                            variant=var,
                            pass_=pass_,
                            ms=round(ms, 4),
                            mb=_sig(traffic * nbytes / 1e6),
                            gbps=_sig(gbps),
                            copy_gbps=_sig(copy_gbps),
                            bw_share=_sig(gbps / copy_gbps),
                            fused_rel_err=f"{err:.2e}",
                            torch=torch.__version__,
                            cuda=torch.version.cuda if dev.type == "cuda" else None,
                            triton=triton_version,
                        )
                    )
    return rows, copy_gbps


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    p.add_argument("--stages", nargs="+", type=int, choices=range(4), default=[0, 1, 2, 3])
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--img-size", type=int, default=224, help="network input side (default 224)")
    p.add_argument("--model", default="inceptionnext_tiny", help="whose stage shapes to use")
    p.add_argument("--device", default=None, help="cuda (default when visible) or cpu")
    p.add_argument("--copy-mb", type=int, default=None, help="copy-bandwidth buffer (MB)")
    p.add_argument("--reps", type=int, default=3, help="timed calls per row on a CPU")
    p.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    device = torch.device(args.device) if args.device else None
    rows, copy_gbps = run(
        args.batch,
        args.dtypes,
        args.stages,
        device,
        args.img_size,
        args.model,
        args.variants,
        args.copy_mb,
        args.reps,
    )
    print(f"copy bandwidth {copy_gbps:.1f} GB/s (bytes read + written)")
    print(" ".join(f"{c:>12}" for c in (*COLUMNS, "fused_rel_err")))
    for r in rows:
        print(" ".join(f"{r[c]!s:>12}" for c in (*COLUMNS, "fused_rel_err")))
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()

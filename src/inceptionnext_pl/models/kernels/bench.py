"""Micro-benchmark of the fused Inception depthwise conv at InceptionNeXt-T's stage shapes.

    python -m inceptionnext_pl.models.kernels.bench [--batch 128] [--dtypes bf16 fp32] [--csv out.csv]

Rows per stage, dtype and pass (forward, forward+backward), all channels_last on one CUDA GPU:
``fused`` (the Triton kernel), ``reference`` (the PyTorch split/conv/cat module, same weights),
``dwconv7x7`` (ConvNeXt's 7x7 depthwise conv through cuDNN) and ``fused7x7`` (the same 7x7 conv
through the Triton kernel). ``gbps`` is the least memory traffic of the pass over its time; the
error column is the fused output's largest deviation from the reference, relative to its scale.
Whole-network throughput is ``inceptionnext-bench``'s job; this isolates the token mixer.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ...files import atomic_write_bytes
from ..token_mixers import InceptionDWConv2d, MixerCfg

TINY_STAGES = ((96, 56), (192, 28), (384, 14), (768, 7))
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _variants(dim: int) -> dict[str, nn.Module]:
    ref = InceptionDWConv2d(dim, MixerCfg(fast="off"))
    fused = InceptionDWConv2d(dim, MixerCfg(fast="on"))
    fused.load_state_dict(ref.state_dict())
    full7 = MixerCfg(branches=("hw",), branch_ratio=1.0, square_kernel_size=7, fast="on")
    return {
        "fused": fused,
        "reference": ref,
        "dwconv7x7": nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
        "fused7x7": InceptionDWConv2d(dim, full7),
    }


def _timer(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def run(batch: int, dtypes: Sequence[str], stages: Sequence[int]) -> list[dict]:
    if not torch.cuda.is_available():
        raise SystemExit("the kernel benchmark needs a CUDA GPU (and triton); none is visible")
    dev = torch.device("cuda")
    rows = []
    for si in stages:
        dim, size = TINY_STAGES[si]
        for dname in dtypes:
            dtype = DTYPES[dname]
            x = torch.randn(batch, dim, size, size, device=dev, dtype=dtype)
            x = x.to(memory_format=torch.channels_last).requires_grad_()
            g = torch.randn_like(x)
            mods = {
                k: m.to(dev, dtype, memory_format=torch.channels_last)
                for k, m in _variants(dim).items()
            }
            with torch.no_grad():
                want = mods["reference"](x).float()
                got = mods["fused"](x).float()
            err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
            nbytes = x.numel() * x.element_size()
            for name, m in mods.items():
                fwd_ms = _timer(lambda m=m, x=x: m(x))
                bwd_ms = _timer(
                    lambda m=m, x=x, g=g: torch.autograd.grad(m(x), [x, *m.parameters()], g)
                )
                # least traffic: fwd reads x, writes y; fwd+bwd also reads x and dy, writes dx
                for pass_, ms, traffic in (("fwd", fwd_ms, 2), ("fwd+bwd", bwd_ms, 5)):
                    rows.append(
                        dict(
                            device=torch.cuda.get_device_name(dev),
                            precision=dname,
                            stage=si,
                            shape=f"{batch}x{dim}x{size}x{size}",
                            variant=name,
                            pass_=pass_,
                            ms=round(ms, 4),
                            gbps=round(traffic * nbytes / ms / 1e6, 1),
                            fused_rel_err=f"{err:.2e}",
                        )
                    )
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    p.add_argument("--stages", nargs="+", type=int, choices=range(4), default=[0, 1, 2, 3])
    p.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    rows = run(args.batch, args.dtypes, args.stages)
    cols = ("precision", "stage", "shape", "pass_", "variant", "ms", "gbps", "fused_rel_err")
    print(" ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]!s:>16}" for c in cols))
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()

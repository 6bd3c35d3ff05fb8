"""Compile the fused kernels for a CUDA architecture on a machine without a GPU.

``triton.compile`` needs no device to go from the kernel source to PTX and a cubin, so this
checks that the kernels build in compiled mode (the interpreter is more lenient) and lets one read
the PTX (vector widths of the loads) before a GPU is at hand. Arguments are specialised as the JIT
specialises them at launch: integers equal to 1 become constants, integers and pointers divisible
by 16 are marked so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .inception_op import Launch, _kernels, backward_launch, forward_launch

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def compile_launch(launch: Launch, arch: int = 90) -> Any:
    """Compile ``launch``'s kernel for compute capability ``arch`` (90: Hopper)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(_kernels(interpret=False), launch.kernel)
    consts = {k: v for k, v in launch.consts.items() if k != "num_warps"}
    runtime = [a for a in fn.arg_names if a not in consts]
    if len(runtime) != len(launch.args):
        raise ValueError(
            f"{launch.kernel} takes {len(runtime)} run-time arguments, got {len(launch.args)}"
        )
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for name, value in zip(runtime, launch.args, strict=True):
        index = fn.arg_names.index(name)
        if isinstance(value, Tensor):
            signature[name] = "*" + _DTYPES[value.dtype]
            attrs[(index,)] = [["tt.divisibility", 16]]  # fresh torch allocations are aligned
        elif value == 1:
            signature[name] = "constexpr"
            consts[name] = 1
        else:
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    for name in consts:
        signature[name] = "constexpr"
    src = ASTSource(fn, signature, consts, attrs)
    options = {"num_warps": launch.consts["num_warps"]}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def compile_for_arch(x: Tensor, weights: Sequence[Tensor | None], arch: int = 90) -> dict[str, Any]:
    """Forward and backward kernels for input ``x`` (meta tensors will do) and the op's weights."""
    out = torch.empty_like(x)
    fwd = forward_launch(x, out, weights)
    bwd, _ = backward_launch(out, x, torch.empty_like(x), weights[0::2])
    return {"forward": compile_launch(fwd, arch), "backward": compile_launch(bwd, arch)}

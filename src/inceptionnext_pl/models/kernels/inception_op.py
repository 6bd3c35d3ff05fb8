"""The fused Inception depthwise convolution as a ``torch.library`` custom op.

``inception_dwconv(x, w_hw, b_hw, w_w, b_w, w_h, b_h)`` computes what ``InceptionDWConv2d``
computes without ``band_sequential``: channels split as (identity, k_s x k_s, 1 x k_w, k_h x 1),
a removed branch passed as ``None``. One Triton launch reads the input and writes the output once
(no split/cat copies); the backward is one more launch plus a sum over tiles. The op has a fake
(meta) implementation and an autograd formula, so ``torch.compile`` traces through it, and an
autocast rule, so under ``torch.autocast`` it casts its inputs as ``nn.Conv2d`` does.

Triton is imported only when the kernel first runs; ``TRITON_INTERPRET=1`` runs it on CPU tensors
(that is how the tests exercise it).
"""

import contextlib
import importlib.util
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Launch shape (unmeasured on GPU: first things to tune). A program covers BLOCK_H x BLOCK_W pixels
# and up to MAX_BLOCK_C channels of one segment.
FWD_BLOCK_HW = (4, 8)
BWD_BLOCK_HW = (8, 8)
MAX_BLOCK_C = 64
NUM_WARPS = 4

_KERNEL_FILE = Path(__file__).with_name("_triton_dwconv.py")
_KERNEL_MODULES: dict[bool, ModuleType] = {}


@torch.compiler.assume_constant_result  # dynamo cannot trace Triton's C++ getenv
def interpreter_enabled() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    if not TRITON_AVAILABLE:
        return False
    import triton

    return bool(triton.knobs.runtime.interpret)


def _kernels(interpret: bool | None = None) -> ModuleType:
    """The kernel module for the current Triton mode (or the one ``interpret`` names).

    ``triton.jit`` picks compiled or interpreted when it decorates, and the interpreter writes
    into the decorated functions' globals, so each mode executes its own copy of the file. This
    keeps tests that set ``TRITON_INTERPRET`` late (after another test imported Triton) correct.
    """
    import triton

    interp = interpreter_enabled() if interpret is None else interpret
    mod = _KERNEL_MODULES.get(interp)
    if mod is None:
        name = f"{__package__}._triton_dwconv_{'interpreted' if interp else 'compiled'}"
        spec = importlib.util.spec_from_file_location(name, _KERNEL_FILE)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        with triton.knobs.runtime.scope():  # the mode triton.jit sees while decorating
            triton.knobs.runtime.interpret = interp
            spec.loader.exec_module(mod)
        sys.modules[name] = mod
        _KERNEL_MODULES[interp] = mod
    return mod


@dataclass(frozen=True)
class Geometry:
    """Channel split and kernel sizes read off the weights; segments in the order hw, w, h."""

    c_id: int
    gc: int
    seg_hw: int
    seg_w: int
    seg_h: int
    sk: int
    kw_w: int
    kh_h: int

    @property
    def n_seg(self) -> int:
        return sum(s >= 0 for s in (self.seg_hw, self.seg_w, self.seg_h))

    @property
    def c_conv(self) -> int:
        return self.n_seg * self.gc

    @property
    def taps(self) -> int:
        """Slots per channel in the weight-gradient buffer: the largest kernel, plus the bias."""
        sizes = [
            k
            for k, s in (
                (self.sk**2, self.seg_hw),
                (self.kw_w, self.seg_w),
                (self.kh_h, self.seg_h),
            )
            if s >= 0
        ]
        return max(sizes, default=0) + 1


def geometry(
    channels: int, w_hw: Tensor | None, w_w: Tensor | None, w_h: Tensor | None
) -> Geometry:
    """Check the depthwise weights against ``channels`` and describe the split."""
    expected = {"w_hw": "(g, 1, k, k)", "w_w": "(g, 1, 1, k)", "w_h": "(g, 1, k, 1)"}
    sizes: dict[str, int] = {}
    groups: list[int] = []  # a list, not a set: SymInts (torch.compile) are unhashable
    for name, w in (("w_hw", w_hw), ("w_w", w_w), ("w_h", w_h)):
        if w is None:
            continue
        shape = tuple(w.shape)
        if len(shape) != 4 or shape[1] != 1:
            ok, k = False, 0
        elif name == "w_hw":
            ok, k = shape[2] == shape[3], shape[2]
        elif name == "w_w":
            ok, k = shape[2] == 1, shape[3]
        else:
            ok, k = shape[3] == 1, shape[2]
        if not ok or k % 2 == 0:
            raise ValueError(
                f"{name} has shape {shape}; expected depthwise weights {expected[name]} with odd k"
            )
        sizes[name] = k
        groups.append(shape[0])
    if any(g != groups[0] for g in groups):
        raise ValueError(
            f"conv branches have different channel counts {groups}; they must be equal"
        )
    gc = groups[0] if groups else 0
    present = [n for n in ("w_hw", "w_w", "w_h") if n in sizes]
    seg = {n: present.index(n) if n in present else -1 for n in ("w_hw", "w_w", "w_h")}
    c_id = channels - gc * len(present)
    if c_id < 0:
        raise ValueError(
            f"{len(present)} branches of {gc} channels do not fit in {channels} input channels"
        )
    return Geometry(
        c_id,
        gc,
        seg["w_hw"],
        seg["w_w"],
        seg["w_h"],
        sizes.get("w_hw", 1),
        sizes.get("w_w", 1),
        sizes.get("w_h", 1),
    )


def unsupported_reason(x: Tensor, cuda_only: bool = True) -> str | None:
    """Why the fused kernel cannot take ``x`` (None when it can).

    ``cuda_only=False`` also accepts CPU tensors under ``TRITON_INTERPRET=1`` and inputs in any
    memory layout; ``cuda_only=True`` (the automatic choice) wants CUDA and channels_last, the
    layout the kernel is built for.
    """
    if not TRITON_AVAILABLE:
        return "triton is not installed"
    if x.dim() != 4:
        return f"the input has {x.dim()} dimensions, not 4 (N, C, H, W)"
    if x.dtype not in SUPPORTED_DTYPES:
        return f"dtype {x.dtype} is not float32, float16 or bfloat16"
    if x.device.type != "cuda" and (cuda_only or not interpreter_enabled()):
        return f"the input is on {x.device.type}; the kernel needs a CUDA tensor (or TRITON_INTERPRET=1 to test it on CPU)"
    if x.numel() >= 2**31:
        return "the input has 2**31 elements or more (32-bit indexing)"
    if cuda_only and not x.is_contiguous(memory_format=torch.channels_last):
        return "the input is not channels_last (call model.to(memory_format=torch.channels_last))"
    return None


def _block_c(geo: Geometry) -> int:
    widest = geo.gc if geo.n_seg else geo.c_id
    return min(MAX_BLOCK_C, max(16, _next_pow2(widest)))


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _is_nhwc(*tensors: Tensor) -> bool:
    return all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors)


@dataclass
class Launch:
    """One kernel launch: grid, run-time arguments and compile-time constants."""

    kernel: str
    grid: tuple[int, int]
    args: list[Any]
    consts: dict[str, int]

    def run(self, device_of: Tensor) -> None:
        with _device_guard(device_of):
            getattr(_kernels(), self.kernel)[self.grid](*self.args, **self.consts)


def _common(x: Tensor, geo: Geometry, block_hw: tuple[int, int], nhwc: bool) -> Launch:
    """Grid and the arguments both kernels share (their order in the kernels' signatures)."""
    n, c, h, w = x.shape
    bh, bw = block_hw
    bc = _block_c(geo)
    tiles_w = math.ceil(w / bw)
    tiles = math.ceil(h / bh) * tiles_w
    nb_id = math.ceil(geo.c_id / bc)
    nb_br = math.ceil(geo.gc / bc) if geo.n_seg else 0
    if n * tiles >= 2**31 or nb_id + geo.n_seg * nb_br > 65535:
        raise ValueError(f"input {tuple(x.shape)} is too large for one launch of the fused kernel")
    consts = dict(
        C=c, C_ID=geo.c_id, GC=geo.gc, NB_ID=nb_id, NB_BR=max(nb_br, 1),
        SEG_HW=geo.seg_hw, SEG_W=geo.seg_w, SEG_H=geo.seg_h, SK=geo.sk, KW_W=geo.kw_w, KH_H=geo.kh_h,
        CHANNELS_LAST=nhwc, BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc, num_warps=NUM_WARPS,
    )  # fmt: skip
    return Launch("", (n * tiles, nb_id + geo.n_seg * nb_br), [h, w, tiles_w, tiles], consts)


def forward_launch(x: Tensor, out: Tensor, weights: Sequence[Tensor | None]) -> Launch:
    """The forward launch for ``out = inception_dwconv(x, *weights)`` (weights as in the op)."""
    w_hw, b_hw, w_w, b_w, w_h, b_h = weights
    geo = geometry(x.shape[1], w_hw, w_w, w_h)
    launch = _common(x, geo, FWD_BLOCK_HW, _is_nhwc(x, out))
    ptrs = []
    for w, b in ((w_hw, b_hw), (w_w, b_w), (w_h, b_h)):
        if w is None:
            ptrs += [x, x]  # never read: the branch is compiled out
        else:
            bias = w.new_zeros(geo.gc) if b is None else b.contiguous()
            ptrs += [w.contiguous(), bias]
    launch.kernel = "inception_dw_fwd_kernel"
    launch.args = [x, out, *ptrs, *launch.args, *x.stride(), *out.stride()]
    return launch


def backward_launch(
    grad: Tensor, x: Tensor, grad_x: Tensor, weights: Sequence[Tensor | None]
) -> tuple[Launch, Tensor]:
    """The backward launch, and its (tiles, C_conv, taps) buffer of partial weight-grad sums."""
    w_hw, w_w, w_h = weights
    geo = geometry(x.shape[1], w_hw, w_w, w_h)
    launch = _common(x, geo, BWD_BLOCK_HW, _is_nhwc(grad, x, grad_x))
    launch.consts.update(C_CONV=geo.c_conv, TP=geo.taps)
    # Slots a branch does not use are never written (the caller zeroes them after the sum).
    part = x.new_empty((launch.grid[0], geo.c_conv, geo.taps), dtype=torch.float32)
    ptrs = [x if w is None else w.contiguous() for w in weights]
    launch.kernel = "inception_dw_bwd_kernel"
    launch.args = [grad, x, grad_x, part, *ptrs, *launch.args]
    launch.args += [*grad.stride(), *x.stride(), *grad_x.stride()]
    return launch, part


def _device_guard(x: Tensor) -> Any:
    # Triton launches on the current CUDA device; make it the input's.
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _forward(x: Tensor, weights: Sequence[Tensor | None]) -> Tensor:
    out = torch.empty_like(x)
    launch = forward_launch(x, out, weights)
    if out.numel():
        launch.run(x)
    return out


def _backward(grad: Tensor, x: Tensor, weights: Sequence[Tensor | None]) -> tuple[Tensor, Tensor]:
    geo = geometry(x.shape[1], *weights)
    grad_x = torch.empty_like(x)
    if x.numel() == 0:
        return grad_x, x.new_zeros((geo.c_conv, geo.taps), dtype=torch.float32)
    # per-tile partial sums, reduced here: deterministic, no atomics
    launch, part = backward_launch(grad, x, grad_x, weights)
    launch.run(x)
    table = part.sum(0)
    # Zero the slots a branch does not use, so the op's output is fully defined.
    for seg, taps in ((geo.seg_hw, geo.sk**2), (geo.seg_w, geo.kw_w), (geo.seg_h, geo.kh_h)):
        if seg >= 0:
            table[seg * geo.gc : (seg + 1) * geo.gc, taps:-1] = 0.0
    return grad_x, table


@torch.library.custom_op("inceptionnext_pl::inception_dwconv", mutates_args=())
def inception_dwconv(
    x: Tensor,
    w_hw: Tensor | None,
    b_hw: Tensor | None,
    w_w: Tensor | None,
    b_w: Tensor | None,
    w_h: Tensor | None,
    b_h: Tensor | None,
) -> Tensor:
    """Fused Inception depthwise conv: identity channels, then the hw, w and h branches present."""
    return _forward(x, (w_hw, b_hw, w_w, b_w, w_h, b_h))


@inception_dwconv.register_fake
def _(x, w_hw, b_hw, w_w, b_w, w_h, b_h):
    geometry(x.shape[1], w_hw, w_w, w_h)
    return torch.empty_like(x)


@torch.library.custom_op("inceptionnext_pl::inception_dwconv_backward", mutates_args=())
def inception_dwconv_backward(
    grad: Tensor, x: Tensor, w_hw: Tensor | None, w_w: Tensor | None, w_h: Tensor | None
) -> tuple[Tensor, Tensor]:
    """grad_x, and the weight/bias gradients of all branches as one (C_conv, taps) float32 table."""
    return _backward(grad, x, (w_hw, w_w, w_h))


@inception_dwconv_backward.register_fake
def _(grad, x, w_hw, w_w, w_h):
    geo = geometry(x.shape[1], w_hw, w_w, w_h)
    return torch.empty_like(x), x.new_empty((geo.c_conv, geo.taps), dtype=torch.float32)


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    x, w_hw, b_hw, w_w, b_w, w_h, b_h = inputs
    ctx.save_for_backward(x, w_hw, w_w, w_h)
    ctx.bias_dtypes = tuple(None if b is None else b.dtype for b in (b_hw, b_w, b_h))


def _autograd_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, w_hw, w_w, w_h = ctx.saved_tensors
    grad_x, table = inception_dwconv_backward(grad, x, w_hw, w_w, w_h)
    grads: list[Tensor | None] = [grad_x]
    row = 0
    for w, bias_dtype in zip((w_hw, w_w, w_h), ctx.bias_dtypes):
        if w is None:
            grads += [None, None]
            continue
        rows = table[row : row + w.shape[0]]
        row += w.shape[0]
        grads.append(rows[:, : w.shape[2] * w.shape[3]].reshape(w.shape).to(w.dtype))
        grads.append(None if bias_dtype is None else rows[:, -1].to(bias_dtype))
    return tuple(grads)


inception_dwconv.register_autograd(_autograd_backward, setup_context=_setup_context)


def _autocast_rule(device_type: str) -> Any:
    """The op under ``torch.autocast``, as autocast runs ``nn.Conv2d``: its floating-point inputs
    on ``device_type`` (float64 aside) are cast to the region's autocast dtype, then it runs with
    autocast off, so a bf16 region gets a bf16 output even from fp32 activations.

    ``torch.library.register_autocast`` fixes one cast dtype when it is registered; conv follows
    the dtype of the enclosing region (bf16 or fp16), so this rule reads it at each call.
    """

    def kernel(_keyset: Any, *args: Any) -> Tensor:
        dtype = torch.get_autocast_dtype(device_type)
        cast = [
            a.to(dtype)
            if isinstance(a, Tensor)
            and a.is_floating_point()
            and a.device.type == device_type
            and a.dtype != torch.float64
            else a
            for a in args
        ]
        with torch.autocast(device_type, enabled=False):
            return inception_dwconv(*cast)

    return kernel


_AUTOCAST_LIB = torch.library.Library("inceptionnext_pl", "FRAGMENT")
for _device_type, _key in (("cuda", "AutocastCUDA"), ("cpu", "AutocastCPU")):
    _AUTOCAST_LIB.impl("inception_dwconv", _autocast_rule(_device_type), _key, with_keyset=True)

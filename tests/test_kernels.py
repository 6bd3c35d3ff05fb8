"""The fused Inception depthwise conv (models/kernels) against the PyTorch reference module.

The Triton kernel runs on CPU under the interpreter: the ``interpret`` fixture sets
``TRITON_INTERPRET=1`` for one test. The kernel module is loaded per Triton mode at call time
(``inception_op._kernels``), so this works whatever imported Triton earlier in the process.
"""

from __future__ import annotations

import copy
import csv
import re

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import inceptionnext_pl
from inceptionnext_pl.models import kernels
from inceptionnext_pl.models.kernels import bench
from inceptionnext_pl.models.kernels import inception_op as op_module
from inceptionnext_pl.models.kernels.aot import compile_for_arch
from inceptionnext_pl.models.metanext import MetaNeXt
from inceptionnext_pl.models.token_mixers import InceptionDWConv2d, MixerCfg


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.interpreter_enabled()


@pytest.fixture
def no_interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not kernels.interpreter_enabled()


def _input(shape: tuple[int, ...], channels_last: bool = True, dtype=torch.float32) -> torch.Tensor:
    x = torch.randn(shape, dtype=dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


def _grads(out: torch.Tensor, x: torch.Tensor, m: torch.nn.Module, g: torch.Tensor) -> list:
    return list(torch.autograd.grad(out, [x, *m.parameters()], g))


def _compare(m: InceptionDWConv2d, x: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5):
    """Fused forward and backward against ``forward_reference`` on the same module."""
    assert m.use_fast_path(x)
    x = x.requires_grad_()
    out, ref = m(x), m.forward_reference(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    g = torch.randn_like(ref)
    got, want = _grads(out, x, m, g), _grads(ref, x, m, g)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    return out


# (dim, MixerCfg options, input shape). H, W are not multiples of the tiles (4x8 forward,
# 8x8 backward), channel counts are odd, and every branch option appears.
CASES = {
    "default": (19, {}, (2, 19, 5, 9)),
    "atto_band9": (21, dict(band_kernel_size=9, branch_ratio=0.25), (3, 21, 6, 7)),
    "hw_only_k5": (
        11,
        dict(branches=("hw",), square_kernel_size=5, branch_ratio=0.5),
        (1, 11, 9, 4),
    ),
    "w_only_k7": (10, dict(branches=("w",), band_kernel_size=7, branch_ratio=0.5), (2, 10, 3, 10)),
    "h_only_k3": (10, dict(branches=("h",), band_kernel_size=3, branch_ratio=0.5), (2, 10, 10, 3)),
    "w_h": (13, dict(branches=("w", "h"), band_kernel_size=5, branch_ratio=0.25), (2, 13, 5, 5)),
    "hw_h": (13, dict(branches=("hw", "h"), branch_ratio=0.25), (2, 13, 4, 6)),
    "hw_w": (13, dict(branches=("hw", "w"), branch_ratio=0.25), (2, 13, 6, 4)),
    "no_identity": (9, dict(branch_ratio=1 / 3, band_kernel_size=5), (2, 9, 4, 5)),
    "no_branches": (5, dict(branches=(), branch_ratio=0.5), (2, 5, 3, 3)),
    "kernels_1x1": (
        12,
        dict(square_kernel_size=1, band_kernel_size=1, branch_ratio=0.25),
        (2, 12, 3, 4),
    ),
    "band_wider_than_map": (12, dict(band_kernel_size=13, branch_ratio=0.25), (1, 12, 3, 5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_matches_reference_fp32(case: str, interpret: None) -> None:
    dim, opts, shape = CASES[case]
    m = InceptionDWConv2d(dim, MixerCfg(fast="on", **opts))
    if case == "no_identity":
        assert m.split_indexes[0] == 0
    out = _compare(m, _input(shape))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_several_channel_blocks_per_segment(interpret: None, monkeypatch) -> None:
    # 16-channel blocks: the identity (19) and each branch (17) span two blocks, the last partial.
    monkeypatch.setattr(op_module, "MAX_BLOCK_C", 16)
    m = InceptionDWConv2d(70, MixerCfg(fast="on", branch_ratio=0.25))
    assert m.split_indexes == (19, 17, 17, 17)
    _compare(m, _input((1, 70, 3, 5)))


def test_nchw_input_and_any_grad_layout(interpret: None) -> None:
    # fast="on" also takes contiguous NCHW; the output keeps the input's layout.
    m = InceptionDWConv2d(19, MixerCfg(fast="on"))
    out = _compare(m, _input((1, 19, 5, 6), channels_last=False))
    assert out.is_contiguous()
    # an expanded (stride-0) gradient, as from .sum().backward()
    x = _input((1, 19, 3, 4)).requires_grad_()
    m(x).sum().backward()
    gx = x.grad
    x.grad = None
    m.forward_reference(x).sum().backward()
    torch.testing.assert_close(gx, x.grad, atol=1e-5, rtol=1e-5)


def test_every_output_element_is_written(interpret: None, monkeypatch) -> None:
    # Poison fresh buffers with NaN: any element the kernels leave unwritten shows up.
    empty_like, new_empty = torch.empty_like, torch.Tensor.new_empty
    monkeypatch.setattr(
        torch, "empty_like", lambda t, **kw: empty_like(t, **kw).fill_(float("nan"))
    )
    monkeypatch.setattr(
        torch.Tensor, "new_empty", lambda t, *a, **kw: new_empty(t, *a, **kw).fill_(float("nan"))
    )
    m = InceptionDWConv2d(19, MixerCfg(fast="on", branch_ratio=0.25))
    _compare(m, _input((1, 19, 5, 9)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_half_precision(dtype: torch.dtype, interpret: None) -> None:
    # Low-precision input, fp32 parameters (as under autocast); the reference sees the same
    # rounded input in fp32. fp32 accumulation: only the output rounding differs.
    m = InceptionDWConv2d(19, MixerCfg(fast="on", branch_ratio=0.25))
    x = _input((1, 19, 5, 9), dtype=dtype).requires_grad_()
    x32 = x.detach().float().requires_grad_()
    out, ref = m(x), m.forward_reference(x32)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=1e-2)
    g = torch.randn_like(out)
    got, want = _grads(out, x, m, g), _grads(ref, x32, m, g.float())
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    torch.testing.assert_close(got[0].float(), want[0], atol=2e-2, rtol=1e-2)
    for a, b in zip(got[1:], want[1:], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_small_network_end_to_end(interpret: None) -> None:
    # A 2-stage MetaNeXt with real layer scales: fused and reference agree on logits and grads.
    def build(fast: str) -> MetaNeXt:
        return MetaNeXt(
            depths=(1, 1), dims=(16, 24), mixer=MixerCfg(fast=fast), mlp_ratios=4, num_classes=5
        )

    ref = build("off")
    with torch.no_grad():
        for blk in ref.modules():
            if getattr(blk, "gamma", None) is not None:
                blk.gamma.uniform_(0.5, 1.5)
    fast = build("on")
    fast.load_state_dict(ref.state_dict(), strict=True)
    x = _input((2, 3, 20, 20))
    a, b = fast(x), ref(x)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=name)


# ---- dispatch -----------------------------------------------------------------------------


def test_cpu_without_interpreter_uses_reference(no_interpret: None) -> None:
    m = InceptionDWConv2d(19, MixerCfg())
    x = _input((1, 19, 4, 4))
    assert not m.use_fast_path(x)
    assert torch.equal(m(x), m.forward_reference(x))
    on = InceptionDWConv2d(19, MixerCfg(fast="on"))
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        on(x)


def test_auto_and_off_stay_on_reference_on_cpu(interpret: None) -> None:
    x = _input((1, 19, 4, 4))
    assert not InceptionDWConv2d(19, MixerCfg(fast="auto")).use_fast_path(x)
    assert not InceptionDWConv2d(19, MixerCfg(fast="off")).use_fast_path(x)


def test_auto_selects_kernel_for_channels_last_cuda() -> None:
    # Fake CUDA tensors (no GPU needed) go through the op's fake implementation.
    assert MixerCfg().fast == "off"  # the default until the kernel is measured on a GPU
    m = InceptionDWConv2d(19, MixerCfg(fast="auto"))
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(2, 19, 5, 7, device="cuda").to(memory_format=torch.channels_last)
        assert m.use_fast_path(x)
        assert not InceptionDWConv2d(19, MixerCfg()).use_fast_path(x)
        out = m(x)
        assert out.shape == x.shape and out.stride() == x.stride()
        assert not m.use_fast_path(x.contiguous())  # NCHW: auto falls back
        assert not m.use_fast_path(x.double())
        with pytest.raises(RuntimeError, match="float64"):
            InceptionDWConv2d(19, MixerCfg(fast="on"))(x.double())


def test_band_sequential_falls_back(interpret: None) -> None:
    m = InceptionDWConv2d(16, MixerCfg(band_sequential=True, branch_ratio=0.25))
    x = _input((1, 16, 4, 4))
    assert not m.use_fast_path(x)
    assert torch.equal(m(x), m.forward_reference(x))
    with pytest.raises(ValueError, match="band_sequential"):
        MixerCfg(band_sequential=True, fast="on")


def test_fast_option_is_validated() -> None:
    with pytest.raises(ValueError, match="fast='always' is unknown"):
        MixerCfg(fast="always")
    with pytest.raises(ValueError, match="kind='inception'"):
        MixerCfg(kind="dwconv", fast="on")
    assert MixerCfg(kind="dwconv", fast="off").fast == "off"


def test_create_model_forwards_fast_and_keeps_state_dict() -> None:
    with torch.device("meta"):
        off = inceptionnext_pl.create_model("inceptionnext_tiny", fast="off")
        on = inceptionnext_pl.create_model("inceptionnext_tiny", fast="on")
        with pytest.raises(ValueError, match="fast="):
            inceptionnext_pl.create_model("inceptionnext_atto", fast="fastest")
    mixers = [m for m in off.modules() if isinstance(m, InceptionDWConv2d)]
    assert len(mixers) == 18 and all(m.cfg.fast == "off" for m in mixers)
    assert {k: v.shape for k, v in off.state_dict().items()} == {
        k: v.shape for k, v in on.state_dict().items()
    }


def test_op_without_biases(interpret: None) -> None:
    # The op also takes bias-free branches (None): zero bias, and no bias gradient.
    x = _input((2, 10, 5, 6)).requires_grad_()
    w_hw, w_h = (
        torch.randn(3, 1, 3, 3, requires_grad=True),
        torch.randn(3, 1, 5, 1, requires_grad=True),
    )
    out = kernels.inception_dwconv(x, w_hw, None, None, None, w_h, None)
    ref = torch.cat(
        [
            x[:, :4],
            F.conv2d(x[:, 4:7], w_hw, padding=1, groups=3),
            F.conv2d(x[:, 7:], w_h, padding=(2, 0), groups=3),
        ],
        dim=1,
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad(out, [x, w_hw, w_h], g),
        torch.autograd.grad(ref, [x, w_hw, w_h], g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bad_weights_get_one_clear_error() -> None:
    x = torch.randn(1, 8, 4, 4)
    w3, b = torch.randn(2, 1, 3, 3), torch.randn(2)
    with pytest.raises(ValueError, match="different channel counts"):
        kernels.inception_dwconv(x, w3, b, torch.randn(3, 1, 1, 5), None, None, None)
    with pytest.raises(ValueError, match="odd k"):
        kernels.inception_dwconv(x, None, None, torch.randn(2, 1, 1, 4), None, None, None)
    with pytest.raises(ValueError, match="do not fit"):
        kernels.inception_dwconv(x, torch.randn(9, 1, 3, 3), None, None, None, None, None)


# ---- torch.compile sees the op --------------------------------------------------------------


def test_opcheck(interpret: None) -> None:
    x = _input((1, 7, 3, 4))
    w_hw, b_hw = torch.randn(2, 1, 3, 3), torch.randn(2)
    w_h, b_h = torch.randn(2, 1, 5, 1), torch.randn(2)
    args = [t.clone().requires_grad_() for t in (x, w_hw, b_hw)]
    torch.library.opcheck(kernels.inception_dwconv, (*args, None, None, w_h, b_h))
    torch.library.opcheck(
        kernels.inception_dwconv_backward, (torch.randn_like(x), x, w_hw, None, w_h)
    )


def test_compile_keeps_the_op_in_one_graph(interpret: None) -> None:
    seen: list = []

    def backend(gm: torch.fx.GraphModule, _inputs):
        seen.extend(n.target for n in gm.graph.nodes)
        return gm

    m = InceptionDWConv2d(13, MixerCfg(fast="on", branch_ratio=0.25))
    x = _input((1, 13, 3, 5)).requires_grad_()
    out = torch.compile(m, backend=backend, fullgraph=True)(x)
    assert torch.ops.inceptionnext_pl.inception_dwconv.default in seen
    ref = m.forward_reference(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    for a, b in zip(_grads(out, x, m, g), _grads(ref, x, m, g), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_kernels_compile_for_hopper_without_a_gpu() -> None:
    # The interpreter is more lenient than the compiler: build both kernels down to PTX and a
    # cubin for sm_90 at InceptionNeXt-T's first stage (bf16, NHWC), and check that the
    # channel loads are vectorised (the NHWC specialisation gives the compiler the alignments).
    with torch.device("meta"):
        x = torch.empty(128, 96, 56, 56, dtype=torch.bfloat16)
        x = x.to(memory_format=torch.channels_last)
        shapes = [(12, 1, 3, 3), (12,), (12, 1, 1, 11), (12,), (12, 1, 11, 1), (12,)]
        weights = [torch.empty(s) for s in shapes]
    for name, kernel in compile_for_arch(x, weights, arch=90).items():
        ptx = kernel.asm["ptx"]
        assert ".target sm_90" in ptx and kernel.asm["cubin"], name
        assert re.search(r"ld\.global\S*\.v[24]\.", ptx), f"{name}: no vector loads"


def test_bench_entry_point(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(SystemExit, match="needs a CUDA GPU"):
            bench.main(["--batch", "2", "--stages", "3", "--device", "cpu"])
    # On a CPU under the interpreter: every variant and pass, bytes and bandwidth share filled in.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    out = tmp_path / "k.csv"
    argv = ["--model", "inceptionnext_atto", "--batch", "2", "--stages", "2", "3", "--reps", "1"]
    argv += ["--dtypes", "fp32", "--img-size", "32", "--device", "cpu", "--copy-mb", "4"]
    argv += ["--variants", "fused", "reference", "dwconv7x7"]  # fused7x7: slow when interpreted
    bench.main([*argv, "--csv", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * 3 * 2  # stages x variants x (fwd, fwd+bwd)
    assert {r["shape"] for r in rows} == {"2x160x2x2", "2x320x1x1"}
    for r in rows:
        assert float(r["ms"]) > 0 and float(r["copy_gbps"]) > 0
        assert float(r["gbps"]) == pytest.approx(float(r["mb"]) / float(r["ms"]), rel=2e-3)
        share = float(r["gbps"]) / float(r["copy_gbps"])
        assert float(r["bw_share"]) == pytest.approx(share, rel=2e-3)
        assert float(r["fused_rel_err"]) < 1e-5
    # bytes: fwd reads x and writes y; fwd+bwd adds dy, dx and the convolved 3/4 of x (atto)
    x_mb = 2 * 160 * 2 * 2 * 4 / 1e6
    by = {(r["stage"], r["variant"], r["pass_"]): float(r["mb"]) for r in rows}
    assert by["3", "fused", "fwd"] == pytest.approx(2 * x_mb, rel=1e-3)
    assert by["3", "dwconv7x7", "fwd+bwd"] == pytest.approx((4 + 3 / 4) * x_mb, rel=1e-3)


def test_stage_shapes_and_mixers_come_from_the_model() -> None:
    assert bench.stage_shapes("inceptionnext_tiny") == [(96, 56), (192, 28), (384, 14), (768, 7)]
    assert bench.stage_shapes("inceptionnext_atto", 64) == [(40, 16), (80, 8), (160, 4), (320, 2)]
    assert {
        (c.band_kernel_size, c.branch_ratio) for c in bench.stage_mixers("inceptionnext_atto")
    } == {(9, 0.25)}
    assert bench.stage_mixers("inceptionnext_tiny")[0] == MixerCfg()


# ---- autocast ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_casts_like_conv2d(dtype: torch.dtype, interpret: None) -> None:
    # Under bf16-mixed the mixer gets fp32 activations (layer scale and the residual promote).
    # The op then casts like nn.Conv2d: a region's output is in its dtype, computed from the
    # cast input and weights; the fp32 parameters get fp32 gradients.
    m = InceptionDWConv2d(19, MixerCfg(fast="on", branch_ratio=0.25))
    conv = torch.nn.Conv2d(19, 19, 3, padding=1)
    x = _input((2, 19, 5, 9)).requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        out, c = m(x), conv(x)
    assert x.dtype == torch.float32 and out.dtype == c.dtype == dtype
    ref = copy.deepcopy(m).to(dtype).double()  # weights rounded as autocast rounds them
    x64 = x.detach().to(dtype).double().requires_grad_()
    want = ref.forward_reference(x64)
    torch.testing.assert_close(out.double(), want, atol=1e-2, rtol=1e-2)
    g = torch.randn_like(out)
    got = _grads(out, x, m, g)
    assert all(t.dtype == torch.float32 for t in got)
    for a, b in zip(got, _grads(want, x64, ref, g.double()), strict=True):
        torch.testing.assert_close(a.double(), b, atol=2e-2, rtol=2e-2)
    assert m(x).dtype == torch.float32  # outside autocast: untouched


def test_autocast_rule_under_compile(interpret: None) -> None:
    m = InceptionDWConv2d(13, MixerCfg(fast="on", branch_ratio=0.25))
    x = _input((1, 13, 3, 5))
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager, out = m(x), compiled(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, eager)

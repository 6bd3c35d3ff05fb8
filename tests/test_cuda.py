"""The fused kernel, the whole model and torch.compile on a CUDA GPU (marker ``cuda``).

CPU runs deselect these (pyproject: ``-m "not cuda"``); ``benchmarks/gpu/check.sh`` runs them with
``pytest -m cuda`` on the lent GPU. References are computed in float64 on the CPU from the same
(rounded) inputs and weights; every check draws fresh random inputs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from inceptionnext_pl import create_model
from inceptionnext_pl.models.metanext import MetaNeXt
from inceptionnext_pl.models.token_mixers import InceptionDWConv2d, MixerCfg

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DEV = torch.device("cuda")

# (dim, MixerCfg options, input shape): odd sizes, H and W off the tile grid, every branch option.
CASES = {
    "default": (37, {}, (2, 37, 13, 17)),
    "atto_band9": (43, dict(band_kernel_size=9, branch_ratio=0.25), (3, 43, 11, 9)),
    "hw_only_k5": (
        21,
        dict(branches=("hw",), square_kernel_size=5, branch_ratio=0.5),
        (1, 21, 9, 5),
    ),
    "w_only_k7": (22, dict(branches=("w",), band_kernel_size=7, branch_ratio=0.5), (2, 22, 3, 19)),
    "h_only_k3": (22, dict(branches=("h",), band_kernel_size=3, branch_ratio=0.5), (2, 22, 19, 3)),
    "w_h": (27, dict(branches=("w", "h"), band_kernel_size=5, branch_ratio=0.25), (2, 27, 7, 7)),
    "hw_h": (29, dict(branches=("hw", "h"), branch_ratio=0.25), (2, 29, 6, 10)),
    "hw_w": (29, dict(branches=("hw", "w"), branch_ratio=0.25), (2, 29, 10, 6)),
    "no_identity": (15, dict(branch_ratio=1 / 3, band_kernel_size=5), (2, 15, 8, 9)),
    "no_branches": (9, dict(branches=(), branch_ratio=0.5), (2, 9, 5, 5)),
    "kernels_1x1": (
        24,
        dict(square_kernel_size=1, band_kernel_size=1, branch_ratio=0.25),
        (2, 24, 5, 6),
    ),
    "band_wider_than_map": (24, dict(band_kernel_size=13, branch_ratio=0.25), (1, 24, 3, 5)),
    "wide_channels": (200, {}, (2, 200, 9, 11)),  # several channel blocks per segment
    "tiny_stage1": (96, {}, (4, 96, 56, 56)),  # InceptionNeXt-T's first stage, many tiles
}


@pytest.fixture(autouse=True)
def _exact_fp32():
    # cuDNN convolutions default to TF32; the fp32 comparisons need plain fp32.
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh buffers start as NaN, so an element the kernels never write fails the comparison."""
    empty_like, new_empty = torch.empty_like, torch.Tensor.new_empty
    monkeypatch.setattr(
        torch, "empty_like", lambda t, **kw: empty_like(t, **kw).fill_(float("nan"))
    )
    monkeypatch.setattr(
        torch.Tensor, "new_empty", lambda t, *a, **kw: new_empty(t, *a, **kw).fill_(float("nan"))
    )


def _fused_and_reference(dim: int, opts: dict, shape: tuple, dtype: torch.dtype):
    """Fused forward/backward on the GPU in ``dtype``, and the float64 CPU reference of the same
    rounded input and weights."""
    m = InceptionDWConv2d(dim, MixerCfg(fast="on", **opts))
    with torch.no_grad():  # non-trivial biases too
        for p in m.parameters():
            p.uniform_(-1, 1)
    fused = copy.deepcopy(m).to(DEV, dtype)
    ref = copy.deepcopy(fused).cpu().double()
    x = torch.randn(shape, device=DEV, dtype=dtype).to(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    x.requires_grad_()
    assert fused.use_fast_path(x)
    out = fused(x)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    got = torch.autograd.grad(out, [x, *fused.parameters()], g)
    x64 = x.detach().cpu().double().requires_grad_()
    want_out = ref.forward_reference(x64)
    want = torch.autograd.grad(want_out, [x64, *ref.parameters()], g.cpu().double())
    return (out, *got), (want_out, *want)


@pytest.mark.parametrize("case", list(CASES))
def test_fused_matches_float64_reference_fp32(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _poisoned(monkeypatch)
    got, want = _fused_and_reference(*CASES[case], torch.float32)
    for name, a, b in zip(("out", "grad_x", *"wb" * 3), got, want):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a.double().cpu(), b, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["default", "atto_band9", "w_h", "no_identity", "tiny_stage1"])
def test_fused_half_precision(case: str, dtype: torch.dtype) -> None:
    # fp32 accumulation: only the rounding of inputs, weights and outputs differs from float64.
    got, want = _fused_and_reference(*CASES[case], dtype)
    for name, a, b in zip(("out", "grad_x", *"wb" * 3), got, want):
        assert a.dtype == dtype, name
        assert _rel(a, b) < 1e-2, (name, _rel(a, b))


def test_autocast_casts_like_conv2d() -> None:
    m = InceptionDWConv2d(37, MixerCfg(fast="on")).to(DEV)
    conv = nn.Conv2d(37, 37, 3, padding=1).to(DEV)
    x = torch.randn(2, 37, 9, 11, device=DEV).to(memory_format=torch.channels_last)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cuda", dtype=dtype):
            out, c = m(x), conv(x)
        assert out.dtype == c.dtype == dtype
        want = m.forward_reference(x.to(dtype).float())  # the cast input, fp32 weights
        assert _rel(out, want) < 1e-2
    assert m(x).dtype == torch.float32


def test_auto_picks_the_kernel_for_channels_last_cuda() -> None:
    m = InceptionDWConv2d(37, MixerCfg(fast="auto")).to(DEV)
    x = torch.randn(1, 37, 5, 6, device=DEV)
    assert m.use_fast_path(x.to(memory_format=torch.channels_last))
    assert not m.use_fast_path(x)  # NCHW falls back
    on = InceptionDWConv2d(37, MixerCfg(fast="on")).to(DEV)
    torch.testing.assert_close(on(x), on.forward_reference(x), atol=1e-5, rtol=1e-5)


def _set_layer_scales(model: nn.Module, low: float, high: float) -> None:
    with torch.no_grad():
        for blk in model.modules():
            if getattr(blk, "gamma", None) is not None:
                blk.gamma.uniform_(low, high)


def _logits_and_grads(model: nn.Module, x: torch.Tensor, autocast: bool) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
    logits.float().square().mean().backward()
    return [logits.detach().float(), *(p.grad.float() for p in model.parameters())]


def _errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> list[float]:
    """Relative error of the logits and of each gradient against ``want``'s. A gradient that is
    zero in exact arithmetic (a bias right before BatchNorm) holds only rounding noise: it is
    measured against the norm of the whole gradient instead of its own."""
    total = sum(g.double().norm() ** 2 for g in want[1:]).sqrt().item()
    numel = sum(g.numel() for g in want[1:])
    errs = [_rel(got[0], want[0])]
    for g, w in zip(got[1:], want[1:], strict=True):
        share = total * (w.numel() / numel) ** 0.5  # the tensor's part of the gradient's norm
        if w.double().norm() < 1e-3 * share:
            errs.append(((g.double() - w.double()).norm() / total).item())
        else:
            errs.append(_rel(g, w))
    return errs


def test_whole_model_fast_on_matches_off_under_bf16_autocast() -> None:
    # InceptionNeXt-T in training mode, layer scales of 0.3-0.6 so that every block counts. Both
    # paths under bf16 autocast are compared with the same model in fp32: the fused path must be
    # about as close to it as the PyTorch path is (bf16 alone moves some gradients by 10-70%).
    off = create_model("inceptionnext_tiny", num_classes=10, fast="off")
    _set_layer_scales(off, 0.3, 0.6)
    on = create_model("inceptionnext_tiny", num_classes=10, fast="on")
    on.load_state_dict(off.state_dict())
    off, on = (m.to(DEV, memory_format=torch.channels_last).train() for m in (off, on))
    x = torch.randn(8, 3, 128, 128, device=DEV).to(memory_format=torch.channels_last)
    exact = _logits_and_grads(off, x, autocast=False)
    ref = _logits_and_grads(off, x, autocast=True)
    fast = _logits_and_grads(on, x, autocast=True)
    names = ["logits", *(n for n, _ in off.named_parameters())]
    for name, err_ref, err_fast in zip(
        names, _errors(ref, exact), _errors(fast, exact), strict=True
    ):
        assert err_fast <= 2 * err_ref + 1e-3, (name, err_fast, err_ref)


def test_torch_compile_keeps_the_op_and_matches_eager() -> None:
    from torch._inductor.compile_fx import compile_fx

    seen: list = []

    def backend(gm: torch.fx.GraphModule, inputs):
        seen.extend(n.target for n in gm.graph.nodes)
        return compile_fx(gm, inputs)

    torch._dynamo.reset()
    net = MetaNeXt(
        depths=(1, 1), dims=(32, 48), mixer=MixerCfg(fast="on"), mlp_ratios=4, num_classes=5
    )
    _set_layer_scales(net, 0.5, 1.5)
    net = net.to(DEV, memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32, device=DEV).to(memory_format=torch.channels_last)
    compiled = torch.compile(net, backend=backend, fullgraph=True)
    exact = _logits_and_grads(net, x, autocast=False)
    assert max(_errors(_logits_and_grads(compiled, x, autocast=False), exact)) < 1e-4
    # under bf16 autocast the compiled graph rounds elsewhere than eager: as close to fp32 as eager
    eager = _errors(_logits_and_grads(net, x, autocast=True), exact)
    for err_c, err_e in zip(_errors(_logits_and_grads(compiled, x, autocast=True), exact), eager):
        assert err_c <= 2 * err_e + 1e-3, (err_c, err_e)
    assert torch.ops.inceptionnext_pl.inception_dwconv.default in seen

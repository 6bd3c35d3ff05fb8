"""Export paths match eager: torch.export, ONNX (torch's dynamo exporter, run by onnxruntime) and
torch.compile(fullgraph=True).

These are the slow checks, so they run on one shrunk model per kind of module rather than on
every name: InceptionNeXt-A (the Inception mixer with its fused-kernel dispatch, which picks
the PyTorch path on CPU, BatchNorm, MLP head), a partial-conv ConvNeXt
variant of Table 1 (LayerNorm, linear head) and MetaNeXt-Attn (attention, and the position
embedding resized from its 224 px grid). Scripting and FX tracing run on every name in
test_timm_api.py.
"""

import functools

import onnxruntime as ort
import pytest
import torch
from torch import nn

from inceptionnext_pl import create_model

SUBSET = {
    "inceptionnext_atto": dict(depths=(1, 1, 1, 1), fast="auto"),  # the run-time kernel choice
    "convnext_tiny_k3_par1_4": dict(depths=(1, 1, 1, 1), dims=(24, 48, 96, 192)),
    "metanext_attn_small": dict(depth=1, dim=96),
}


@functools.cache
def _model(name: str) -> nn.Module:
    return create_model(name, num_classes=7, **SUBSET[name]).eval()


@functools.cache
def _io(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, _model(name)(x)


@pytest.mark.parametrize("name", SUBSET)
def test_torch_export(name):
    x, ref = _io(name)
    program = torch.export.export(_model(name), (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), ref, atol=1e-6)


@pytest.mark.parametrize("name", SUBSET)
def test_onnx_dynamo_export_runs_in_onnxruntime(tmp_path, name):
    x, ref = _io(name)
    program = torch.onnx.export(_model(name), (x,), dynamo=True, verbose=False)
    path = tmp_path / f"{name}.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert out.shape == tuple(ref.shape)
    assert abs(out - ref.numpy()).max() <= 1e-4


@pytest.mark.parametrize("name", SUBSET)
def test_compile_fullgraph(name):
    """One graph, no breaks (backend aot_eager: dynamo and AOT autograd without C++ codegen)."""
    x, ref = _io(name)
    torch._dynamo.reset()
    compiled = torch.compile(_model(name), fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert torch.allclose(compiled(x), ref, atol=1e-6)

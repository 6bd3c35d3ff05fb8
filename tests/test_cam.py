"""The Grad-CAM API: target layers of every family, methods, isolation from training, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from inceptionnext_pl import create_model
from inceptionnext_pl.cam import METHODS, CamError, compute_cam, find_target_layer
from inceptionnext_pl.cam.figures import comparison_figure, figure_to_array, labelled_grid

SIZE = 64

# (name, kwargs, expected layer, channels of that layer)
FAMILIES = [
    ("inceptionnext_atto", {}, "stages.3", 320),
    ("inceptionnext_small_iso", dict(depth=2, dim=64), "blocks.1", 64),
    ("convnext_small_iso", dict(depth=2, dim=64), "blocks.1", 64),
    ("metanext_attn_small", dict(depth=2, dim=64, num_heads=2), "blocks.1", 64),
    ("convnext_atto", {}, "stages.3", 320),
    ("inception_next_atto", {}, "stages.3", 320),
    ("swin_tiny_patch4_window7_224", dict(img_size=SIZE), "layers.3.blocks.1.norm1", 768),
    ("resnet18", {}, "layer4.1", 512),
    ("resnet50", {}, "layer4.2", 2048),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "layer", "channels"), FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_family_target_layer(name, kwargs, layer, channels):
    model = create_model(name, num_classes=10, **kwargs).eval()
    target = find_target_layer(model)
    assert target.name == layer
    # The hooked output, after the family's reshape, must be NCHW with a real spatial grid.
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        model(x)
    handle.remove()
    out = target.reshape_transform(seen[0]) if target.reshape_transform else seen[0]
    assert out.ndim == 4 and out.shape[:2] == (2, channels) and out.shape[2] > 1
    res = compute_cam(model, x)
    assert res.layer == layer
    assert res.maps.shape == (2, SIZE, SIZE) and res.maps.dtype == np.float32
    assert res.maps.min() >= 0 and res.maps.max() <= 1 and res.maps.std() > 0
    assert res.overlays.shape == (2, SIZE, SIZE, 3) and res.overlays.dtype == np.uint8
    np.testing.assert_array_equal(res.targets, res.predictions)


def test_torchvision_resnet():
    model = torchvision.models.resnet18(num_classes=10)
    assert find_target_layer(model).name == "layer4.1"
    assert compute_cam(model, torch.randn(1, 3, SIZE, SIZE)).maps.shape == (1, SIZE, SIZE)


@pytest.fixture(scope="module")
def tiny():
    """A small MetaNeXt (InceptionNeXt blocks, BatchNorm) that is quick for every method."""
    return create_model("inceptionnext_small_iso", num_classes=10, depth=2, dim=16, patch_size=8)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method(tiny, method):
    x = torch.randn(3, 3, 32, 32)
    res = compute_cam(tiny, x, targets=[1, 2, 3], method=method)
    assert res.method == method
    assert res.maps.shape == (3, 32, 32)
    assert np.isfinite(res.maps).all() and res.maps.min() >= 0 and res.maps.max() <= 1
    np.testing.assert_array_equal(res.targets, [1, 2, 3])


def test_method_aliases(tiny):
    assert compute_cam(tiny, torch.randn(1, 3, 32, 32), method="GradCAM-PP").method == "gradcam++"


def test_targets_int_list_and_predicted():
    model = create_model("inceptionnext_atto", num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    pred = compute_cam(model, x)
    np.testing.assert_array_equal(pred.targets, pred.predictions)
    a = compute_cam(model, x, targets=3)
    np.testing.assert_array_equal(a.targets, [3, 3])
    b = compute_cam(model, x, targets=[3, 7])
    np.testing.assert_array_equal(b.targets, [3, 7])
    np.testing.assert_allclose(a.maps[0], b.maps[0], atol=1e-6)  # same class, same image
    assert not np.allclose(a.maps[1], b.maps[1], atol=1e-3)  # another class, another map
    # batching does not change the result
    c = compute_cam(model, x, targets=[3, 7], batch_size=1)
    np.testing.assert_allclose(b.maps, c.maps, atol=1e-5)


def _snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(m, m.training) for m in model.modules()],
        [
            (p, p.requires_grad, p.grad, None if p.grad is None else p.grad.clone())
            for p in model.parameters()
        ],
    )


def _assert_unchanged(model: nn.Module, snap) -> None:
    state, modes, params = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # weights and BN running stats
    for m, training in modes:
        assert m.training == training
    for p, req, grad, value in params:
        assert p.requires_grad == req
        assert p.grad is grad  # the very same tensor: nothing was zeroed or accumulated
        if value is not None:
            assert torch.equal(p.grad, value)
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks  # hooks released


def test_model_left_exactly_as_it_was():
    model = create_model("inceptionnext_atto", num_classes=10)
    model.train()
    model.stages[0].eval()  # a mixed state must come back as it was
    model.stem[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    model(torch.randn(2, 3, 32, 32)).sum().backward()  # grads as in the middle of training
    snap = _snapshot(model)
    for method in ("gradcam", "eigencam"):
        compute_cam(model, torch.randn(2, 3, 32, 32), method=method)
        _assert_unchanged(model, snap)


def test_errors_leave_model_unchanged():
    model = create_model("inceptionnext_atto", num_classes=10).train()
    snap = _snapshot(model)
    with pytest.raises(CamError, match="10 classes"):
        compute_cam(model, torch.randn(1, 3, SIZE, SIZE), targets=10)
    model.num_classes = None  # unknown up front: the check happens on the logits
    with pytest.raises(CamError, match="10 classes"):
        compute_cam(model, torch.randn(1, 3, SIZE, SIZE), targets=12)
    model.num_classes = 10
    _assert_unchanged(model, snap)


def test_inside_inference_mode_as_in_lightning_validation():
    model = create_model("inceptionnext_atto", num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    ref = compute_cam(model, x, targets=[1, 2])
    with torch.inference_mode():
        xi = x.clone()  # an inference tensor, like a validation batch
        res = compute_cam(model, xi, targets=[1, 2])
    np.testing.assert_allclose(res.maps, ref.maps, atol=1e-6)


def test_fp32_for_bf16_models_and_under_autocast():
    model = create_model("inceptionnext_atto", num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    ref = compute_cam(copy.deepcopy(bf16).float(), xb, targets=[1, 2])
    res = compute_cam(bf16, xb, targets=[1, 2])
    np.testing.assert_allclose(res.maps, ref.maps, atol=1e-5)  # fp32 maths on bf16 weights
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())  # model not converted
    ref32 = compute_cam(model, x, targets=[1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res32 = compute_cam(model, x, targets=[1, 2])
    np.testing.assert_allclose(res32.maps, ref32.maps, atol=1e-6)


def test_bad_input_errors(tiny):
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(CamError, match=r"Unknown CAM method 'gradkam'.*gradcam\+\+.*scorecam"):
        compute_cam(tiny, x, method="gradkam")
    with pytest.raises(CamError, match="out of range: the model has 10 classes"):
        compute_cam(tiny, x, targets=[0, 10])
    with pytest.raises(CamError, match="out of range"):
        compute_cam(tiny, x, targets=-1)
    with pytest.raises(CamError, match="3 target classes given for a batch of 2"):
        compute_cam(tiny, x, targets=[0, 1, 2])
    with pytest.raises(CamError, match=r"must be \(B, C, H, W\)"):
        compute_cam(tiny, torch.randn(32, 32))
    with pytest.raises(
        CamError, match="'blocks.9' is not a submodule.*children are: stem, blocks, head"
    ):
        compute_cam(tiny, x, target_layer="blocks.9")


def test_unknown_family_says_how_to_pass_a_layer():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    with pytest.raises(
        CamError, match=r"No known Grad-CAM target layer for Sequential.*target_layer="
    ):
        compute_cam(net, torch.randn(1, 3, 16, 16))
    res = compute_cam(net, torch.randn(2, 3, 16, 16), target_layer="1")  # the explicit route works
    assert res.layer == "1" and res.maps.shape == (2, 16, 16)
    assert compute_cam(net, torch.randn(1, 3, 16, 16), target_layer=net[0]).layer == "0"


def test_channels_last_layer_given_explicitly():
    model = create_model("swin_tiny_patch4_window7_224", num_classes=10, img_size=SIZE)
    res = compute_cam(
        model, torch.randn(1, 3, SIZE, SIZE), target_layer="norm", reshape_transform="nhwc"
    )
    assert res.maps.shape == (1, SIZE, SIZE) and res.maps.std() > 0


def test_figures():
    imgs = np.random.rand(3, 32, 32, 3).astype(np.float32)
    ovl = (np.random.rand(3, 32, 32, 3) * 255).astype(np.uint8)
    grid = figure_to_array(
        labelled_grid(imgs, ovl, ["1", "2", "3"], ["1", "0", "3"], pairs_per_row=2)
    )
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.dtype == np.uint8 and grid.std() > 0
    fig = comparison_figure(imgs, {"a": ovl, "b": ovl}, row_labels=["x", "y", "z"])
    assert len(fig.axes) == 9

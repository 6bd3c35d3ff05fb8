"""Our 4-stage models as dense-task encoders: ``output_stride`` (dilation) and smp's contract.

segmentation-models-pytorch checks every encoder it ships for the same things
(``tests/encoders/base.py`` in its repository): six feature maps at strides 1..32, forward and
backward, 1/3/4 input channels, depth 3/4/5, dilated strides 8 and 16, and compile, export and
script. The same checks run here over two of ours and, as the reference, timm's ConvNeXt.
"""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

import inceptionnext_pl  # noqa: F401  (registers our models with timm)

ENCODERS = ["tu-inceptionnext_atto", "tu-convnext_tiny_k3_par1_8", "tu-convnext_atto"]
OURS = ["inceptionnext_atto", "convnext_tiny_k3_par1_8"]
SIZE = 64  # smp's sample


def _sample(channels: int = 3) -> torch.Tensor:
    return torch.rand(1, channels, SIZE, SIZE)


def _encoder(name: str, **kwargs) -> torch.nn.Module:
    return smp.encoders.get_encoder(name, encoder_weights=None, **kwargs).eval()


def _strides(features: list[torch.Tensor]) -> list[int]:
    return [SIZE // f.shape[-1] for f in features] + [SIZE // f.shape[-2] for f in features]


@pytest.mark.parametrize("name", ENCODERS)
def test_forward_backward_gives_six_levels(name):
    encoder = _encoder(name).train()
    features = encoder(_sample())
    assert _strides(features) == [1, 2, 4, 8, 16, 32] * 2
    features[-1].mean().backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_any_number_of_input_channels(name, channels):
    encoder = _encoder(name, in_channels=channels)
    assert encoder.out_channels[0] == channels
    with torch.inference_mode():
        features = encoder(_sample(channels))
    assert [f.shape[1] for f in features[2:]] == encoder.out_channels[2:]


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("depth", [3, 4, 5])
def test_depth_sets_the_levels_and_output_stride(name, depth):
    encoder = _encoder(name, depth=depth)
    with torch.inference_mode():
        features = encoder(_sample())
    expected = [2**i for i in range(depth + 1)]
    assert _strides(features) == expected * 2
    assert encoder.output_stride == expected[-1]
    assert len(encoder.out_channels) == depth + 1
    for bad in (0, 6):
        with pytest.raises(ValueError):
            _encoder(name, depth=bad)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("stride", [8, 16])
def test_dilated_encoders_stop_at_their_stride(name, stride):
    encoder = _encoder(name, output_stride=stride)
    with torch.inference_mode():
        features = encoder(_sample())
    assert _strides(features) == [min(s, stride) for s in (1, 2, 4, 8, 16, 32)] * 2
    assert encoder.output_stride == stride


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ENCODERS)
def test_compile_export_and_script_match_eager(name):
    encoder = _encoder(name)
    x = _sample()
    with torch.inference_mode():
        eager = encoder(x)
    torch.compiler.reset()
    compiled = torch.compile(encoder, fullgraph=True, dynamic=True, backend="eager")
    exported = torch.export.export(encoder, args=(x,), strict=True).module()
    scripted = torch.jit.script(encoder)
    with torch.inference_mode():
        for run in (compiled, exported, scripted):
            for a, b in zip(run(x), eager, strict=True):
                torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------- output_stride
@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("stride", [16, 8])
def test_dilated_features_are_the_undilated_ones_at_every_other_position(name, stride):
    """Same weights at any stride; the dilated stages see exactly the pixels they saw before.

    Subsampling a dilated map by what it gave up recovers the stride-32 map, which holds only if
    every kernel (the square one, and each band kernel along its own axis) is dilated right.
    """
    ref = timm.create_model(name, features_only=True).eval()
    dense = timm.create_model(name, features_only=True, output_stride=stride).eval()
    dense.load_state_dict(ref.state_dict())  # strict: the parameters are the same
    assert dense.feature_info.reduction() == [min(r, stride) for r in (4, 8, 16, 32)]
    x = torch.randn(2, 3, 96, 160)
    with torch.inference_mode():
        for a, b in zip(dense(x), ref(x), strict=True):
            step = a.shape[-1] // b.shape[-1]
            torch.testing.assert_close(a[..., ::step, ::step], b)


@pytest.mark.parametrize("name", OURS)
def test_stride_32_has_no_dilated_conv(name):
    model = timm.create_model(name, output_stride=32)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.dilation == (1, 1) and m.padding != "same" for m in convs)


@pytest.mark.parametrize("stride", [32, 16])
def test_inceptionnext_matches_timms_bit_for_bit(stride):
    """At strides 32 and 16 ours and timm's ``inception_next_atto`` compute the same numbers
    (at 8, timm's 'same' padding shifts the grid by a pixel; ours keeps it)."""
    ours = timm.create_model("inceptionnext_atto", output_stride=stride).eval()
    theirs = timm.create_model("inception_next_atto", output_stride=stride).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.equal(ours.forward_features(x), theirs.forward_features(x))


def test_a_stride_other_than_8_16_32_is_refused():
    with pytest.raises(ValueError, match="output_stride=4 is not supported"):
        timm.create_model("inceptionnext_atto", output_stride=4)


def test_dilated_mixers_never_take_the_fused_kernel():
    """The fused kernel is undilated: 'auto' keeps dilated stages on PyTorch, 'on' refuses."""
    model = timm.create_model("inceptionnext_atto", output_stride=8, fast="auto")
    mixers = [b.token_mixer for s in model.stages for b in s.blocks]
    x = torch.randn(1, 40, 8, 8).to(memory_format=torch.channels_last)
    assert [m.dilation for m in mixers] == [1] * 4 + [2] * 6 + [4] * 2
    assert [m.fast for m in mixers] == ["auto"] * 4 + ["off"] * 8
    assert not any(m.use_fast_path(x) for m in mixers[4:])
    with pytest.raises(ValueError, match="fast='on' cannot run a dilated mixer"):
        timm.create_model("inceptionnext_atto", output_stride=16, fast="on")


def test_smp_deeplabv3plus_over_inceptionnext_tiny_trains():
    """The issue's line, as a user writes it: smp's DeepLabV3+ (output stride 16) fits a batch."""
    net = smp.DeepLabV3Plus(encoder_name="tu-inceptionnext_tiny", encoder_weights=None, classes=150)
    assert net.encoder.model.feature_info.reduction() == [4, 8, 16, 16]
    x, mask = torch.randn(2, 3, 96, 128), torch.randint(0, 150, (2, 96, 128))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(net(x), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

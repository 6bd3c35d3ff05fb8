"""timm's model contract on every registered name: heads and pooling, intermediates, features,
gradient checkpointing, TorchScript and FX, and variant arguments.

The heavy checks run on shrunk copies of each variant (its own mixer, norm and head, fewer and
narrower blocks) at 64 px; the real sizes run once, on the meta device, against their configs.
"""

import copy
import functools
import math

import pytest
import timm
import torch
import torch.fx
from timm.layers import get_notrace_functions, get_notrace_modules
from timm.models import group_parameters
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from inceptionnext_pl import create_model
from inceptionnext_pl.models import OUR_MODELS, InceptionDWConv2d, MetaNeXtIsotropic, MixerCfg
from inceptionnext_pl.models.metanext import POOL_TYPES

NAMES = list(OUR_MODELS)
ISOTROPIC = [n for n in NAMES if n.endswith(("_iso", "attn_small"))]
STAGED = [n for n in NAMES if n not in ISOTROPIC]
SIZE = 64
SHRINK_STAGED = dict(depths=(1, 1, 2, 1), dims=(24, 48, 96, 192))
SHRINK_ISO = dict(depth=3, dim=96)  # patch 16: a 4x4 grid at 64 px


def shrink(name: str) -> dict:
    return dict(SHRINK_ISO if name in ISOTROPIC else SHRINK_STAGED)


@functools.cache
def _small(name: str) -> nn.Module:
    return create_model(name, num_classes=7, **shrink(name)).eval()


def small(name: str) -> nn.Module:
    """A fresh copy of the module's one shrunk build (tests may change it)."""
    return copy.deepcopy(_small(name))


@functools.cache
def _input() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_the_name_lists_cover_both_families():
    assert len(STAGED) == 12 and set(ISOTROPIC) == {
        "inceptionnext_small_iso",
        "convnext_small_iso",
        "metanext_attn_small",
    }


# ------------------------------------------------------------------- configs at real size
@pytest.mark.parametrize("name", NAMES)
def test_real_size_config_agrees_with_the_model(name):
    """timm's default-cfg checks, at the real size, on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = create_model(name).eval()
        cfg = model.pretrained_cfg
        feats = model.forward_features(torch.empty(1, *cfg["input_size"]))
        pre = model.forward_head(feats, pre_logits=True)
    assert cfg["architecture"] == name and cfg["num_classes"] == model.num_classes == 1000
    for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std"):
        assert cfg[key], key
    assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
    assert feats.shape[1] == model.num_features
    assert pre.shape == (1, model.head_hidden_size)
    keys = model.state_dict()
    assert cfg["first_conv"] + ".weight" in keys
    assert cfg["classifier"] + ".weight" in keys
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])


def test_head_hidden_size_is_the_pre_logits_width():
    with torch.device("meta"):
        atto = create_model("inceptionnext_atto")
        conv = create_model("convnext_tiny_k3")
    assert (atto.num_features, atto.head_hidden_size) == (320, 960)  # the MLP head: 3 x 320
    assert (conv.num_features, conv.head_hidden_size) == (768, 768)
    theirs = timm.create_model("inception_next_atto", pretrained=False, device="meta")
    assert atto.head_hidden_size == theirs.head_hidden_size


# ------------------------------------------------------------------------ heads and pooling
@pytest.mark.parametrize("name", NAMES)
def test_classifier_reset_and_unpooled_maps(name):
    """timm's test_model_default_cfgs sequence, and the dense head behind global_pool=''."""
    model, x = small(name), _input()
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    assert torch.allclose(model.forward_head(feats), model(x))
    assert pre.shape == (2, model.head_hidden_size)
    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), nn.Identity)
    assert torch.allclose(model(x), pre, atol=1e-6)
    model.reset_classifier(0, "")
    maps = model(x)
    assert maps.shape == (2, model.head_hidden_size, *feats.shape[-2:])
    model.reset_classifier(5, "")
    logits = model(x)
    assert logits.shape == (2, 5, *feats.shape[-2:])
    # '' runs the head at every position: a position's logits are the pooled head's on it alone.
    model.reset_classifier(5, "avg")
    one = model.forward_head(feats[:, :, 1:2, 0:1])
    dense = copy.deepcopy(model)
    dense.reset_classifier(5, "")
    setattr(dense.head, dense.head.classifier_name, model.get_classifier())  # the same classifier
    assert torch.allclose(dense.forward_head(feats)[:, :, 1, 0], one, atol=1e-5)
    built = create_model(name, num_classes=0, global_pool="", **shrink(name)).eval()
    assert built(x).ndim == 4


@pytest.mark.parametrize(
    "name", ["inceptionnext_atto", "convnext_tiny_k3_par1_8", "convnext_small_iso"]
)
@pytest.mark.parametrize("pool", [p for p in POOL_TYPES if p])
def test_every_pool_type(name, pool):
    model, x = small(name), _input()
    feats = model.forward_features(x)
    widen = pool.endswith("catavgmax")
    if widen:
        # The pretrained layers after pooling take C features, catavgmax gives 2C.
        with pytest.raises(ValueError, match="reset_other=True"):
            model.reset_classifier(3, pool)
    model.reset_classifier(3, pool, reset_other=widen)
    assert model.global_pool == pool and model(x).shape == (2, 3)
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size)
    if widen:
        avg, mx = feats.mean((2, 3)), feats.amax((2, 3))
        assert model.head_hidden_size == 2 * model.num_features
        assert torch.allclose(pre, torch.cat([avg, mx], 1), atol=1e-6)  # no layers left before fc
    else:
        ref = copy.deepcopy(_small(name))
        avg, mx = feats.mean((2, 3)), feats.amax((2, 3))
        pooled = {"": avg, "avg": avg, "max": mx, "avgmax": 0.5 * (avg + mx)}[
            pool.removeprefix("fast")
        ]
        ref.head.global_pool = nn.Identity()  # the same head on features pooled by hand
        ref.head.dense = False
        assert torch.allclose(pre, ref.forward_head(pooled, pre_logits=True), atol=1e-5)
    built = create_model(name, global_pool=pool, num_classes=3, **shrink(name)).eval()
    assert built(x).shape == (2, 3)


def test_bad_pooling_is_refused():
    with pytest.raises(ValueError, match="global_pool='mean' is unknown"):
        create_model("inceptionnext_atto", global_pool="mean")
    with pytest.raises(ValueError, match="global_pool='median' is unknown"):
        small("inceptionnext_atto").reset_classifier(3, "median")


@pytest.mark.parametrize("name", ["inceptionnext_atto", "metanext_attn_small"])
def test_group_matcher_and_no_weight_decay(name):
    model = small(name)
    groups = group_parameters(model, model.group_matcher())
    grouped = {n for names in groups.values() for n in names}
    assert grouped == {n for n, _ in model.named_parameters()}
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) <= len(groups)  # one level for the isotropic blocks
    params = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(params)
    assert ("pos_embed" in model.no_weight_decay()) == (name == "metanext_attn_small")


@pytest.mark.parametrize("name", NAMES)
def test_grad_checkpointing_gives_the_same_gradients(name):
    model, x = small(name).train(), _input()

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    torch.manual_seed(0)
    plain = grads()
    model.set_grad_checkpointing(True)
    torch.manual_seed(0)
    ckpt = grads()
    assert plain.keys() == ckpt.keys()
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], rtol=1e-4, atol=1e-6), n
    assert any(g.abs().sum() > 0 for g in ckpt.values())


# ----------------------------------------------------------------- intermediates, features
@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates(name):
    model, x = small(name), _input()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    final, inter = model.forward_intermediates(x)
    assert torch.allclose(final, model.forward_features(x))
    assert [t.shape[1] for t in inter] == info.channels()
    assert [SIZE // t.shape[-1] for t in inter] == info.reduction()
    last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape for t in last2] == [t.shape for t in inter[-2:]]
    picked = model.forward_intermediates(x, indices=[0, -1], stop_early=True)[1]
    assert torch.equal(picked[0], inter[0]) and torch.equal(picked[1], inter[-1])
    with pytest.raises(ValueError, match="output_fmt='NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC")
    model.set_grad_checkpointing(True)
    final_ckpt, _ = model.forward_intermediates(x)
    assert torch.allclose(final_ckpt, final, atol=1e-5)
    if name in ISOTROPIC:
        tokens = model.forward_intermediates(x, indices=1, output_fmt="NLC")[1][0]
        assert torch.equal(tokens, inter[-1].flatten(2).transpose(1, 2))


@pytest.mark.parametrize(
    "name", ["inceptionnext_atto", "convnext_tiny_k5", "inceptionnext_small_iso"]
)
def test_prune_intermediate_layers(name):
    model, x = small(name), _input()
    inter = model.forward_intermediates(x, intermediates_only=True)
    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1]
    pruned = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(pruned, inter[:2]))
    assert model.num_classes == 0 and model(x).ndim == 4  # the head is pass-through
    assert model(x).shape[1] == model.num_features == inter[1].shape[1]


@pytest.mark.parametrize("name", NAMES)
def test_features_only_through_timm(name):
    """timm's feature wrappers: the default one and the forward_intermediates getter agree with
    the classifier's own forward_intermediates, on the same weights."""
    ref, x = _small(name), _input()
    expected = ref.forward_intermediates(x, indices=3 if name in ISOTROPIC else None)[1]
    weights = dict(pretrained=True, pretrained_cfg_overlay=dict(state_dict=ref.state_dict()))
    kinds = ["getter"] if name in ISOTROPIC else ["list", "getter"]
    for kind in kinds:
        feats = timm.create_model(
            name, features_only=True, feature_cls=kind, **weights, **shrink(name)
        ).eval()
        outs = feats(x)
        info = feats.feature_info
        assert len(outs) == len(expected) == (3 if name in ISOTROPIC else 4)
        for out, ref_out, c, r in zip(outs, expected, info.channels(), info.reduction()):
            assert out.shape == (2, c, math.ceil(SIZE / r), math.ceil(SIZE / r))
            assert torch.allclose(out, ref_out, atol=1e-6), kind
    if name in ISOTROPIC:
        picked = timm.create_model(name, features_only=True, out_indices=(0, 2), **shrink(name))
        assert picked.feature_info.module_name() == ["blocks.0", "blocks.2"]
    else:
        assert feats.feature_info.module_name() == [f"stages.{i}" for i in range(4)]


# ------------------------------------------------------------------- TorchScript and FX
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", NAMES)
def test_torchscript_and_fx_match_eager(name):
    model, x = small(name), _input()
    with torch.no_grad():
        ref = model(x)
        scripted = torch.jit.script(model)
        assert torch.equal(scripted(x), ref)
        traced = torch.fx.symbolic_trace(model)
        assert torch.equal(traced(x), ref)
        # timm's FX feature extractor (its leaf modules and functions) and torchvision's.
        tracer_kwargs = dict(
            leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()
        )
        node = "stages.2" if name in STAGED else "blocks.1"
        fx_feats = create_feature_extractor(model, [node], tracer_kwargs=tracer_kwargs)(x)[node]
        inter = model.forward_intermediates(x, indices=[2 if name in STAGED else 1])[1][0]
        assert torch.equal(fx_feats, inter)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "cfg",
    [
        MixerCfg(),
        MixerCfg(branches=("hw", "h")),
        MixerCfg(branches=("w",), branch_ratio=0.25),
        MixerCfg(band_sequential=True),
        MixerCfg(branches=("w", "h"), band_sequential=True),
        MixerCfg(fast="auto"),
    ],
)
def test_inception_mixer_scripts_and_traces(cfg):
    mixer = InceptionDWConv2d(32, cfg).eval()
    x = torch.randn(1, 32, 9, 9)
    ref = mixer.forward_reference(x)
    assert torch.equal(mixer(x), ref)  # on CPU 'auto' falls back to the reference
    assert torch.equal(torch.jit.script(mixer)(x), ref)
    graph = torch.fx.symbolic_trace(nn.Sequential(mixer))  # as inside a model
    assert torch.equal(graph(x), ref)
    called = [str(n.target) for n in graph.graph.nodes if n.op in ("call_module", "call_function")]
    if cfg.fast == "off":
        # Traced through: the branch convolutions are nodes of the graph.
        convs = {f"0.dwconv_{b}" for b in ("hw", "w", "h") if b in cfg.branches}
        assert convs <= set(called)
    else:
        # The run-time choice (device, layout) is one leaf call, not traced control flow.
        assert any("fused_or_reference" in c for c in called)
        assert not any("dwconv" in c for c in called)


def test_isotropic_position_embedding_is_resized_inside_an_fx_leaf():
    model = small("metanext_attn_small")
    assert isinstance(model, MetaNeXtIsotropic) and model.pos_embed.shape[-1] == 14
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 96, 96)  # a 6x6 grid: the 14x14 embedding is interpolated
    assert torch.equal(graph(x), model(x))
    assert any("add_pos_embed" in str(n.target) for n in graph.graph.nodes)


# --------------------------------------------------------------------- variant arguments
def test_variant_arguments_override_the_defaults():
    """As timm's ``**dict(model_args, **kwargs)``; timm's device / dtype arguments are taken too."""
    with torch.device("meta"):
        tiny = create_model("inceptionnext_tiny", depths=(2, 2, 6, 2))
        atto = create_model("inceptionnext_atto", dims=(32, 64, 128, 256), band_kernel_size=7)
        conv = create_model("convnext_tiny_k3_par1_4", norm="batch", head="mlp")
        iso = create_model("metanext_attn_small", depth=2, pos_embed=False)
        mixer = create_model("inceptionnext_tiny", mixer=MixerCfg(branch_ratio=0.25))
    assert [len(s.blocks) for s in tiny.stages] == [2, 2, 6, 2]
    assert atto.num_features == 256
    mix = atto.stages[0].blocks[0].token_mixer
    assert mix.dwconv_w.kernel_size == (1, 7) and mix.split_indexes == (
        8,
        8,
        8,
        8,
    )  # ratio 0.25 kept
    assert isinstance(conv.stages[0].blocks[0].norm, nn.BatchNorm2d) and hasattr(conv.head, "fc2")
    assert conv.stages[0].blocks[0].token_mixer.split_indexes == (72, 24)
    assert len(iso.blocks) == 2 and iso.pos_embed is None
    assert mixer.stages[0].blocks[0].token_mixer.split_indexes == (24, 24, 24, 24)
    # timm's own create_model merges them the same way.
    t = timm.create_model(
        "inceptionnext_tiny", depths=(1, 1, 1, 1), device="meta", dtype=torch.half
    )
    assert [len(s.blocks) for s in t.stages] == [1, 1, 1, 1]
    assert {(p.device.type, p.dtype) for p in t.parameters()} == {("meta", torch.half)}

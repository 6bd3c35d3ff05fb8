"""The model family: every variant, the paper's sizes, timm weight parity and the ablation knobs."""

import functools

import pytest
import timm
import torch
from torch import nn

import inceptionnext_pl
from inceptionnext_pl import create_model, list_models
from inceptionnext_pl.bench.table import PAPER, format_table, main, table
from inceptionnext_pl.models import OUR_MODELS, InceptionDWConv2d, MixerCfg, UnknownModelError


@functools.cache
def built(name: str) -> nn.Module:
    """One instance per variant for the whole module: the base models take seconds to initialise."""
    return create_model(name)


@pytest.mark.parametrize("name", list(OUR_MODELS))
def test_every_variant_trains_a_step(name):
    model = built(name).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 1000)
    out.logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_registered_with_timm_and_listed():
    for name in OUR_MODELS:
        assert timm.is_model(name)
        assert name in list_models()
    assert isinstance(timm.create_model("inceptionnext_atto", num_classes=3), nn.Module)
    # timm's own names stay timm's.
    assert timm.models.model_entrypoint("convnext_tiny").__module__.startswith("timm.")
    assert {"convnext_tiny", "swin_tiny_patch4_window7_224", "resnet50"} <= set(list_models())


@pytest.mark.parametrize("name", ["convnext_atto", "resnet18", "swin_tiny_patch4_window7_224"])
def test_builds_timm_baselines(name):
    kwargs = {"img_size": 64} if name.startswith("swin") else {}
    model = create_model(name, num_classes=5, **kwargs)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownModelError, match="inceptionnext_tiny") as info:
        create_model("inceptionnext_tinny")
    suggested = str(info.value).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert len(suggested) == len(set(suggested)) > 1  # each name once
    with pytest.raises(UnknownModelError, match="Unknown model 'nonsense_net'"):
        create_model("nonsense_net")


def test_paper_table():
    rows = table(list(PAPER))
    for r in rows:
        p_params, p_macs, _ = PAPER[r["model"]]
        tol = (
            0.03 if p_params == round(p_params) else 0.02
        )  # the paper rounds some to whole millions
        assert abs(r["params_m"] - p_params) / p_params <= tol, r
        assert abs(r["macs_g"] - p_macs) / p_macs <= max(tol, 0.02), r
    assert "inceptionnext_base_384" in format_table(rows)


def test_table_command(capsys):
    main(["inceptionnext_atto", "--img-size", "64"])
    out = capsys.readouterr().out
    assert "inceptionnext_atto" in out and "| 64 |" in out.replace("  ", " ")
    main(["--list"])
    assert "convnext_tiny_k3_par1_8" in capsys.readouterr().out


def _randomize(model: nn.Module) -> None:
    """Non-trivial BN statistics and layer scales, so parity is not hidden by near-identity blocks."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("size", ["atto", "tiny", "small", "base"])
def test_timm_weight_parity(size):
    theirs = timm.create_model(f"inception_next_{size}").eval()
    _randomize(theirs)
    ours = built(f"inceptionnext_{size}").eval()
    sd = theirs.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert b.abs().max() > 1e-2
    assert (a - b).abs().max() <= 1e-5


def test_features_only_and_timm_api():
    feats = timm.create_model("inceptionnext_atto", features_only=True)
    outs = feats(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [40, 80, 160, 320]
    assert [64 // o.shape[-1] for o in outs] == [4, 8, 16, 32]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    model = create_model("inceptionnext_atto", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    f = model.forward_features(x)
    assert f.shape == (2, 320, 2, 2)
    assert torch.allclose(model.forward_head(f), model(x))
    assert model.forward_head(f, pre_logits=True).shape == (2, 960)
    assert model.get_classifier() is model.head.fc2
    model.reset_classifier(4)
    assert model(x).shape == (2, 4)
    iso = timm.create_model("inceptionnext_small_iso", features_only=True, depth=4, dim=96)
    assert [o.shape for o in iso(torch.randn(1, 3, 64, 64))] == [(1, 96, 4, 4)] * 3


def test_grad_checkpointing_matches():
    model = create_model("inceptionnext_atto", num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    ref.sum().backward()
    g_ref = model.stem[0].weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(model.stem[0].weight.grad, g_ref, atol=1e-5)


def _mixer(model: nn.Module) -> InceptionDWConv2d:
    return model.stages[0].blocks[0].token_mixer


def test_remove_branch_removes_its_parameters():
    n_base = sum(p.numel() for p in create_model("inceptionnext_atto").parameters())
    for removed in ("hw", "w", "h"):
        kept = tuple(b for b in ("hw", "w", "h") if b != removed)
        m = create_model("inceptionnext_atto", branches=kept)
        mixer = _mixer(m)
        assert getattr(mixer, f"dwconv_{removed}") is None
        assert all(getattr(mixer, f"dwconv_{b}") is not None for b in kept)
        assert not any(f"dwconv_{removed}." in k for k in m.state_dict())
        assert sum(p.numel() for p in m.parameters()) < n_base
        # The removed branch's channels pass through untouched.
        assert mixer.split_indexes[0] == 40 - 2 * 10
        y = m.eval()(torch.randn(1, 3, 32, 32))
        assert torch.isfinite(y).all()


def test_sequential_bands_chain():
    mixer = InceptionDWConv2d(
        16, MixerCfg(band_kernel_size=5, branch_ratio=0.125, band_sequential=True)
    )
    assert mixer.split_indexes == (10, 2, 4)
    x = torch.randn(1, 16, 9, 9)
    out = mixer(x)
    band_in = x[:, 12:]
    assert torch.allclose(out[:, 12:], mixer.dwconv_h(mixer.dwconv_w(band_in)))
    assert torch.equal(out[:, :10], x[:, :10])
    # A single impulse spreads along both axes only when the bands are chained.
    imp = torch.zeros(1, 16, 9, 9)
    imp[:, 12:, 4, 4] = 1.0
    for conv in (mixer.dwconv_w, mixer.dwconv_h):
        nn.init.ones_(conv.weight)
        nn.init.zeros_(conv.bias)
    resp = mixer(imp)[0, 12]
    assert (resp != 0).sum() == 25


def test_parallel_split_order_matches_release():
    mixer = InceptionDWConv2d(16, MixerCfg(branch_ratio=0.25))
    assert mixer.split_indexes == (4, 4, 4, 4)
    x = torch.randn(1, 16, 8, 8)
    out = mixer(x)
    assert torch.equal(out[:, :4], x[:, :4])  # identity first, as in the released weights
    assert torch.allclose(out[:, 4:8], mixer.dwconv_hw(x[:, 4:8]))
    assert torch.allclose(out[:, 8:12], mixer.dwconv_w(x[:, 8:12]))
    assert torch.allclose(out[:, 12:], mixer.dwconv_h(x[:, 12:]))


@pytest.mark.parametrize(
    "kwargs, shape_key, shape",
    [
        (dict(band_kernel_size=7), "stages.0.blocks.0.token_mixer.dwconv_w.weight", (12, 1, 1, 7)),
        (
            dict(square_kernel_size=5),
            "stages.0.blocks.0.token_mixer.dwconv_hw.weight",
            (12, 1, 5, 5),
        ),
        (dict(branch_ratio=0.25), "stages.0.blocks.0.token_mixer.dwconv_h.weight", (24, 1, 11, 1)),
        (dict(branch_ratio=1 / 16), "stages.0.blocks.0.token_mixer.dwconv_h.weight", (6, 1, 11, 1)),
        (dict(mlp_ratios=(2, 2, 2, 2)), "stages.3.blocks.0.mlp.fc1.weight", (1536, 768, 1, 1)),
    ],
)
def test_ablation_knobs_change_the_module(kwargs, shape_key, shape):
    sd = create_model("inceptionnext_tiny", **kwargs).state_dict()
    assert tuple(sd[shape_key].shape) == shape


def test_norm_ls_droppath_and_head_dropout():
    m = create_model(
        "inceptionnext_atto", norm="layer", ls_init_value=0, drop_path_rate=0.2, drop_rate=0.5
    )
    blk = m.stages[3].blocks[-1]
    assert type(blk.norm).__name__ == "LayerNorm2d" and not any(
        isinstance(x, nn.BatchNorm2d) for x in m.modules()
    )
    assert blk.gamma is None
    assert blk.drop_path.drop_prob == pytest.approx(0.2)
    assert m.stages[0].blocks[0].drop_path.__class__ is nn.Identity
    assert m.head.drop.p == 0.5
    m.eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(m(x), m(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(branch_ratio=0.5), "branch_ratio=0.5"),
        (dict(branch_ratio=0.001), "leaves no channel"),
        (dict(branches=("hw", "diag")), "branches"),
        (dict(band_kernel_size=10), "odd"),
        (dict(band_sequential=True, branches=("hw", "w")), "band_sequential"),
        (dict(norm="group"), "norm='group'"),
        (dict(mlp_ratios=(4, 4)), "mlp_ratios"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("inceptionnext_atto", **kwargs)


def test_metanext_attn_gradients_are_finite():
    m = create_model("metanext_attn_small", depth=2, num_classes=3)
    x = torch.randn(2, 3, 48, 48)  # not the 224 grid: the position embedding is resized
    out = m(x)
    out.sum().backward()
    assert out.shape == (2, 3) and torch.isfinite(m.pos_embed.grad).all()


def test_convnext_variant_facebook_round_trip():
    from inceptionnext_pl.models.keymaps import checkpoint_filter_fn, to_facebook

    model = create_model("convnext_tiny_k3_par1_4", num_classes=10).eval()
    fb = to_facebook(model.state_dict(), partial=True)
    assert "stages.0.0.dwconv.conv.weight" in fb and fb["stages.0.0.pwconv1.weight"].ndim == 2
    assert "downsample_layers.0.0.weight" in fb and "norm.weight" in fb and "head.weight" in fb
    back = checkpoint_filter_fn({"model": fb}, model)
    fresh = create_model("convnext_tiny_k3_par1_4", num_classes=10).eval()
    fresh.load_state_dict(back, strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(fresh(x), model(x))


def test_package_exports():
    from importlib.metadata import version

    assert inceptionnext_pl.create_model is create_model
    assert inceptionnext_pl.__version__ == version("inceptionnext-pl")
    for name in inceptionnext_pl.__all__:
        assert getattr(inceptionnext_pl, name) is not None, name

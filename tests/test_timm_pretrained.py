"""``timm.create_model(name, pretrained=True)`` on our names, offline.

The configs read their sources from the zoo registry; the weights layer fetches and reads them
(release URLs, hub copies, or ``pretrained_cfg_overlay=dict(file=...)``) in the official, timm and
facebook key layouts, and timm loads the result. The files are written
by the tests into the caches timm reads, from shrunk models of each family.
The facebook layout is also checked against an independent reference: timm's ConvNeXt with its
own ``checkpoint_filter_fn``.
"""

from pathlib import Path

import huggingface_hub.constants as hfc
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models import get_pretrained_cfg
from timm.models._builder import _resolve_pretrained_source
from timm.models.convnext import ConvNeXt
from timm.models.convnext import checkpoint_filter_fn as timm_convnext_filter
from torch import nn

from inceptionnext_pl import create_model
from inceptionnext_pl.models import OUR_MODELS
from inceptionnext_pl.models.convnext_variants import TABLE1
from inceptionnext_pl.models.keymaps import (
    FACEBOOK_RULES,
    checkpoint_filter_fn,
    from_facebook,
    to_facebook,
)
from inceptionnext_pl.zoo import convert_file, get_entry

SHRINK = dict(depths=(1, 1, 2, 1), dims=(24, 48, 96, 192))
RELEASED = [n for n in OUR_MODELS if n.startswith(("inceptionnext_", "convnext_tiny_k"))]
RELEASED.remove("inceptionnext_small_iso")


def _randomised(name: str, **kw) -> nn.Module:
    """A shrunk model with non-trivial norms and layer scales (so a missed tensor shows)."""
    model = create_model(name, **SHRINK, **kw).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, t in model.state_dict().items():
            if t.is_floating_point() and not n.endswith("running_var"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return model


def _same_weights(a: nn.Module, b: nn.Module, skip: str = "\0") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if not k.startswith(skip):
            assert torch.equal(sa[k], sb[k]), k


def _facebook_file(path: Path, model: nn.Module, partial: bool, wrap: bool = False) -> Path:
    fb = to_facebook(model.state_dict(), partial=partial)
    torch.save({"model": fb} if wrap else fb, path)
    return path


# ------------------------------------------------------------------- configs and sources
@pytest.mark.parametrize("name", RELEASED)
def test_pretrained_cfg_comes_from_the_zoo_registry(name):
    """The release URL, hub id and preprocessing are written once, in registry.yaml."""
    cfg = get_pretrained_cfg(f"{name}.sail_in1k").to_dict()
    entry = get_entry(f"{name}.sail_in1k")
    urls = [s.url for s in entry.sources if s.url]
    hubs = [s.hf for s in entry.sources if s.hf]
    assert cfg["url"] == urls[0] and cfg.get("hf_hub_id") == (hubs[0] if hubs else None)
    assert tuple(cfg["input_size"]) == entry.input_size and cfg["crop_pct"] == entry.crop_pct
    assert cfg["interpolation"] == entry.interpolation and cfg["license"] == entry.license
    source, where = _resolve_pretrained_source(cfg)
    if hubs:  # timm's copies on the hub first, as for timm's own inception_next
        assert (source, where) == ("hf-hub", hubs[0])
    else:  # the Table 1 variants exist only as release files (facebook format)
        assert (source, where) == ("url", urls[0]) and name in TABLE1


def test_isotropic_models_have_no_weights():
    for name in ("inceptionnext_small_iso", "convnext_small_iso", "metanext_attn_small"):
        cfg = get_pretrained_cfg(name).to_dict()
        assert not cfg["url"] and not cfg.get("hf_hub_id")
        assert name not in timm.list_pretrained(name + "*")


# --------------------------------------------------------------- loading through timm
@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Fresh, offline torch.hub and Hugging Face caches."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    return tmp_path


def _release_file(caches: Path, url: str) -> Path:
    """Where torch.hub (and the zoo) keep a downloaded release file."""
    path = caches / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_hub_copy_loads_through_timm(caches):
    src = _randomised("inceptionnext_atto")
    repo = get_pretrained_cfg("inceptionnext_atto.sail_in1k").hf_hub_id
    snapshot = caches / "hf" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    save_file(src.state_dict(), str(snapshot / "model.safetensors"))  # timm's layout
    model = timm.create_model("inceptionnext_atto", pretrained=True, **SHRINK)
    _same_weights(model, src)


@pytest.mark.parametrize("name", ["inceptionnext_atto", "convnext_tiny_k3_par1_4"])
def test_release_url_loads_through_timm(caches, name):
    """The release files as published: flat state dicts, timm keys or facebook's."""
    src = _randomised(name)
    cfg = get_pretrained_cfg(f"{name}.sail_in1k")
    dst = _release_file(caches, cfg.url)
    if name in TABLE1:
        _facebook_file(dst, src, partial=True)
    else:
        torch.save(src.state_dict(), dst)
    # hf_hub_id=None leaves timm the release URL, which torch.hub finds in its cache.
    model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=None), **SHRINK
    )
    _same_weights(model, src)


@pytest.mark.parametrize(
    "name, layout",
    [
        ("inceptionnext_atto", "official"),  # flat .pth with timm's keys
        ("inceptionnext_atto", "timm"),  # safetensors
        ("convnext_tiny_k3", "timm"),
        ("convnext_tiny_k3", "facebook"),
        ("convnext_tiny_k3_par1_8", "facebook"),  # PartialConv2d names
        ("convnext_tiny_k3_par1_8", "facebook-wrapped"),  # {"model": ...}, as trainers save
    ],
)
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_file_overlay_in_every_layout(tmp_path, name, layout, num_classes):
    src = _randomised(name)
    if layout == "official":
        file = tmp_path / "w.pth"
        torch.save(src.state_dict(), file)
    elif layout == "timm":
        file = tmp_path / "w.safetensors"
        save_file(src.state_dict(), str(file))
    else:
        partial = TABLE1[name][1] < 1
        file = _facebook_file(tmp_path / "w.pth", src, partial, wrap=layout.endswith("wrapped"))
    model = timm.create_model(
        name,
        pretrained=True,
        num_classes=num_classes,
        pretrained_cfg_overlay=dict(file=str(file)),
        **SHRINK,
    )
    classifier = model.pretrained_cfg["classifier"]
    sd, ref = model.state_dict(), src.state_dict()
    assert sd.keys() == ref.keys()
    for k in sd:
        if num_classes != 1000 and k.startswith(classifier + "."):
            continue
        assert torch.equal(sd[k], ref[k]), k
    fc = model.get_submodule(classifier)
    assert fc.out_features == num_classes
    if num_classes != 1000:  # a new classifier, initialised as ours are (zero bias)
        assert torch.equal(fc.bias, torch.zeros(num_classes))


def test_filter_unwraps_and_leaves_timm_keys_alone():
    src = _randomised("inceptionnext_atto").state_dict()
    assert checkpoint_filter_fn(src).keys() == src.keys()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.items()}, "epoch": 3}
    assert checkpoint_filter_fn(wrapped).keys() == src.keys()


# ------------------------------------------------- the facebook layout, against timm's ConvNeXt
def _timm_convnext(kernel: int, num_classes: int = 7) -> ConvNeXt:
    return ConvNeXt(
        depths=SHRINK["depths"], dims=SHRINK["dims"], kernel_sizes=kernel, num_classes=num_classes
    ).eval()


@pytest.mark.parametrize("name", ["convnext_tiny_k5", "convnext_tiny_k3"])
def test_facebook_conversion_matches_timms_convnext(tmp_path, name):
    """Our facebook <-> MetaNeXt table against timm's own reading of facebook checkpoints.

    timm's ConvNeXt has only full depthwise convolutions, so the partial variants (``dwconv.conv.``
    in the release) cannot be represented there; they share every other rule, and their extra
    prefix is checked below and in the round trips of the other tests.
    """
    ours = _randomised(name, num_classes=7)
    x = torch.randn(2, 3, 64, 64)
    # Ours -> facebook, through the converter's file path: timm's filter must read it strictly.
    src = tmp_path / "ours.safetensors"
    save_file(ours.state_dict(), str(src))
    fb_file = tmp_path / "fb.pth"
    convert_file(src, fb_file, to="facebook", model_name=name, model_kwargs=SHRINK)
    fb = torch.load(fb_file, weights_only=True)
    assert "downsample_layers.0.0.weight" in fb and fb["stages.2.1.pwconv1.weight"].ndim == 2
    theirs = _timm_convnext(TABLE1[name][0])
    theirs.load_state_dict(timm_convnext_filter(fb, theirs), strict=True)
    with torch.no_grad():
        ref = theirs(x)
        assert ref.abs().max() > 1e-2
        assert torch.allclose(ours(x), ref, atol=1e-5)
    # facebook -> ours, from a file that timm's model reads the same way.
    back = tmp_path / "back.safetensors"
    convert_file(fb_file, back, to="timm", model_name=name, model_kwargs=SHRINK)
    fresh = create_model(name, num_classes=7, **SHRINK).eval()
    fresh.load_state_dict(load_file(str(back)), strict=True)
    with torch.no_grad():
        assert torch.allclose(fresh(x), ref, atol=1e-5)


def test_one_table_serves_both_directions():
    model = _randomised("convnext_tiny_k3_par1_4", num_classes=7)
    sd = model.state_dict()
    fb = to_facebook(sd, partial=True)
    assert "stages.0.0.dwconv.conv.weight" in fb and "norm.weight" in fb and "head.weight" in fb
    assert to_facebook(sd, partial=False).keys() - fb.keys() == {
        k.replace("dwconv.conv.", "dwconv.") for k in fb if "dwconv.conv." in k
    }
    back = from_facebook(fb)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # Every rule is used by a real state dict, in each direction.
    for rule in FACEBOOK_RULES:
        assert any(k.startswith(rule.ours.split("{")[0]) for k in sd), rule
        assert any(k.startswith(rule.facebook.split("{")[0]) for k in fb), rule

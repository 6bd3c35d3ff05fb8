"""The zoo registry file and the read-only commands (list, info)."""

from __future__ import annotations

import json

import pytest
import timm
from timm.models import get_pretrained_cfg

from inceptionnext_pl.models import OUR_MODELS, check_model_name
from inceptionnext_pl.registry import load_registry
from inceptionnext_pl.zoo import RegistryError, UnknownEntryError, get_entry, list_entries
from inceptionnext_pl.zoo.cli import main

SIZES = ("atto", "tiny", "small", "base", "base_384")
TABLE1 = ("k5", "k3", "k3_par1_2", "k3_par3_8", "k3_par1_4", "k3_par1_8", "k3_par1_16")
RELEASE = "https://github.com/sail-sg/inceptionnext/releases/download/model"


def test_registry_lists_the_official_weights_variants_and_baselines():
    names = {e.name for e in list_entries()}
    assert {f"inceptionnext_{s}" for s in SIZES} <= names
    assert {f"convnext_tiny_{v}" for v in TABLE1} <= names
    assert {
        "convnext_tiny.fb_in1k",
        "swin_tiny_patch4_window7_224.ms_in1k",
        "resnet50.a1_in1k",
    } <= names
    for s in SIZES:
        e = get_entry(f"inceptionnext_{s}")
        assert e.sources[0].url == f"{RELEASE}/inceptionnext_{s}.pth"
        hub = e.sources[1].hf
        assert hub.startswith("timm/inception_next_") and hub.endswith(
            ("sail_in1k", "sail_in1k_384")
        )
    for v in TABLE1:
        url = get_entry(f"convnext_tiny_{v}").sources[0].url
        assert url == f"{RELEASE}/convnext_tiny_{v}_1k_224_ema.pth"


@pytest.mark.parametrize("entry", list_entries(), ids=lambda e: e.name)
def test_entry_matches_the_model_config(entry):
    """Preprocessing and sources agree with the pretrained config of the architecture."""
    check_model_name(entry.arch)
    if entry.timm_arch:
        assert timm.is_model(entry.timm_arch)
    arch = entry.arch.split(".")[0]
    cfg = get_pretrained_cfg(entry.arch if arch not in OUR_MODELS else arch).to_dict()
    assert tuple(cfg["input_size"]) == entry.input_size
    assert cfg["crop_pct"] == entry.crop_pct and cfg["interpolation"] == entry.interpolation
    urls = [s.url for s in entry.sources if s.url]
    hubs = [s.hf for s in entry.sources if s.hf]
    if cfg.get("url") and arch in OUR_MODELS:
        assert cfg["url"] == urls[0]
    if cfg.get("hf_hub_id"):
        assert hubs == [cfg["hf_hub_id"]]
    if arch not in OUR_MODELS:  # the baselines: licence as timm's config states it
        assert entry.license == cfg["license"]
    assert entry.license and entry.sources


def test_table1_accuracy_falls_with_the_kernel_and_the_conv_ratio():
    # Paper Table 1: 82.0 (k5) down to 80.1 (k3, 1/16); a typo would likely break the order.
    top1 = [get_entry(f"convnext_tiny_{v}").top1 for v in TABLE1]
    assert top1 == sorted(top1, reverse=True) and top1[0] == 82.0 and top1[-1] == 80.1


def test_aliases_and_unknown_names():
    assert get_entry("inception_next_base.sail_in1k_384").name == "inceptionnext_base_384"
    with pytest.raises(UnknownEntryError, match="Did you mean: inceptionnext_small"):
        get_entry("inceptionnext_smal")


@pytest.mark.parametrize(
    "bad, message",
    [
        ("url: http://example.com/x.pth", "must be https"),
        ("url: https://a/x.pth\n        hf: timm/x", "exactly one of `url` or `hf`"),
        ("url: https://a/x.pth\n        sha256: abc", "64 lowercase hex"),
    ],
)
def test_malformed_registry_is_refused(tmp_path, monkeypatch, bad, message):
    path = tmp_path / "registry.yaml"
    path.write_text(
        "version: 1\nentries:\n  x:\n    arch: resnet18\n    input_size: [3, 224, 224]\n"
        "    crop_pct: 0.9\n    interpolation: bicubic\n    license: mit\n    sources:\n"
        f"      - {bad}\n"
    )
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_REGISTRY", str(path))
    with pytest.raises(RegistryError, match=message):
        load_registry()


def test_cli_list_markdown_and_table(capsys):
    assert main(["list", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| Name | timm name | Res | Crop")
    assert len(lines) == 2 + len(list_entries())
    assert "| inceptionnext_base_384 | inception_next_base | 384 | 1.0 | bicubic | 85.2 |" in (
        "\n".join(lines)
    )
    assert main(["list", "--group", "Table 1"]) == 0
    out = capsys.readouterr().out
    assert "convnext_tiny_k3_par1_16" in out and "inceptionnext_tiny" not in out


def test_cli_info_and_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["info", "inceptionnext_tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["top1"] == 82.3 and info["cached_file"] is None
    assert [s["sha256_status"] for s in info["sources"]] == ["not yet known"] * 2
    assert info["cache_dir"] == str(tmp_path / "hub" / "checkpoints")
    assert main(["info", "inceptionnext_tinny"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inceptionnext-zoo: error:") and "inceptionnext_tiny" in err

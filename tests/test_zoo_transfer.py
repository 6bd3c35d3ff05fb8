"""load_pretrained: every format in, exact backbone weights out, a fresh classifier."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from inceptionnext_pl import create_model
from inceptionnext_pl.models import MetaNeXt, MixerCfg
from inceptionnext_pl.models.keymaps import to_facebook
from inceptionnext_pl.zoo import (
    StateDictMismatchError,
    UnknownEntryError,
    classifier_names,
    freeze_backbone,
    load_pretrained,
    read_checkpoint,
    split_parameters,
)


def fast_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """``create_model(name)`` with random weights, skipping the (slow on CPU) truncated-normal init."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model.to_empty(device="cpu")
    fill_(model, seed)
    return model.eval()


def fill_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():  # shares storage with the parameters
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                t.zero_()


def small_convnext_variant(num_classes: int = 1000) -> MetaNeXt:
    """convnext_tiny_k3_par1_4 with fewer blocks and channels: the same layout, 100x smaller."""
    return MetaNeXt(
        depths=(1, 1, 2, 1),
        dims=(16, 32, 64, 128),
        mixer=MixerCfg(kind="dwconv", kernel_size=3, conv_ratio=0.25),
        norm="layer",
        mlp_ratios=4,
        head="linear",
        num_classes=num_classes,
    ).eval()


@pytest.fixture(scope="module")
def atto_sd() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fast_model("inceptionnext_atto", seed=1).state_dict().items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory, atto_sd):
    root = tmp_path_factory.mktemp("weights")
    official = root / "inceptionnext_atto.pth"
    torch.save(atto_sd, official)
    safetensors = root / "model.safetensors"
    save_file(atto_sd, str(safetensors))
    train = root / "timm_train.pth.tar"
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in atto_sd.items()}
    torch.save(
        {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in atto_sd.items()},
         "state_dict_ema": ema}, train
    )  # fmt: skip
    return {"official": official, "safetensors": safetensors, "train": train, "ema": ema}


def _assert_backbone_equal(model, expected, classifier="head.fc2"):
    sd = model.state_dict()
    backbone = [k for k in sd if not k.startswith(classifier + ".")]
    assert backbone and all(torch.equal(sd[k], expected[k]) for k in backbone)
    assert any(k.startswith("head.fc1") for k in backbone)  # the MLP head's hidden layer is kept


@pytest.mark.parametrize("kind", ["official", "safetensors", "train"])
def test_backbone_exact_and_new_head_kept(files, atto_sd, kind):
    model = fast_model("inceptionnext_atto", seed=2, num_classes=7)
    head_before = {k: v.clone() for k, v in model.head.fc2.state_dict().items()}
    report = load_pretrained(model, files[kind], progress=False)
    _assert_backbone_equal(model, atto_sd)
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.fc2.state_dict().items())
    assert report.classifier == ["head.fc2"] and not report.classifier_loaded
    assert "checkpoint (1000, 960) vs model (7, 960) for head.fc2.weight" in report.classifier_note
    assert report.has_ema == (kind == "train") and "kept as initialised" in str(report)


def test_same_class_count_loads_the_classifier_too(files, atto_sd):
    model = fast_model("inceptionnext_atto", seed=2)
    report = load_pretrained(model, files["official"], progress=False)
    assert report.classifier_loaded
    assert all(torch.equal(v, atto_sd[k]) for k, v in model.state_dict().items())


def test_ema_weights_only_on_request(files):
    model = fast_model("inceptionnext_atto", seed=2, num_classes=7)
    report = load_pretrained(model, files["train"], ema=True, progress=False)
    _assert_backbone_equal(model, files["ema"])
    assert "EMA" in report.checkpoint
    with pytest.raises(Exception, match="has no EMA weights"):
        load_pretrained(model, files["official"], ema=True, progress=False)


def test_facebook_format_convnext_variant(tmp_path):
    src = small_convnext_variant()
    fill_(src, 3)
    fb = to_facebook(src.state_dict(), partial=True)
    assert any(".dwconv.conv.weight" in k for k in fb)  # PartialConv2d naming of the release
    for i, payload in enumerate([fb, {"model": fb}]):  # flat (sail-sg) and wrapped (facebook)
        torch.save(payload, tmp_path / f"fb{i}.pth")
        model = small_convnext_variant(num_classes=5)
        report = load_pretrained(model, tmp_path / f"fb{i}.pth", progress=False)
        _assert_backbone_equal_fc(model, src.state_dict())
        assert report.key_mapping.startswith("facebook") and report.classifier == ["head.fc"]
        assert not report.classifier_loaded


def _assert_backbone_equal_fc(model, expected):
    sd = model.state_dict()
    assert all(torch.equal(sd[k], expected[k]) for k in sd if not k.startswith("head.fc."))


def test_zoo_names_resolve_against_a_mirror(tmp_path, monkeypatch, atto_sd):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("INCEPTIONNEXT_ZOO_MIRROR", (tmp_path / "mirror").as_uri())
    (tmp_path / "mirror").mkdir()
    torch.save(atto_sd, tmp_path / "mirror" / "inceptionnext_atto.pth")
    src = small_convnext_variant()
    fill_(src, 4)
    fb = to_facebook(src.state_dict(), partial=True)
    torch.save(fb, tmp_path / "mirror" / "convnext_tiny_k3_par1_4_1k_224_ema.pth")

    model = fast_model("inceptionnext_atto", seed=2, num_classes=3)
    report = load_pretrained(model, "inceptionnext_atto", progress=False)
    _assert_backbone_equal(model, atto_sd)
    assert report.path == tmp_path / "torch" / "hub" / "checkpoints" / "inceptionnext_atto.pth"

    model = small_convnext_variant(num_classes=3)
    load_pretrained(model, "convnext_tiny_k3_par1_4.sail_in1k", progress=False)
    _assert_backbone_equal_fc(model, src.state_dict())


def test_shape_mismatch_is_one_error_listing_both_shapes(files):
    model = fast_model("inceptionnext_atto", seed=2, num_classes=7, band_kernel_size=7)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StateDictMismatchError) as info:
        load_pretrained(model, files["official"], progress=False)
    msg = str(info.value)
    assert "24 shape mismatch(es)" in msg  # the 1xk and kx1 kernels of all 12 blocks
    assert "stages.0.blocks.0.token_mixer.dwconv_w.weight: (10, 1, 1, 9) vs (10, 1, 1, 7)" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_missing_and_unexpected_backbone_keys_are_errors(tmp_path, atto_sd):
    broken = dict(atto_sd)
    del broken["stages.3.blocks.1.mlp.fc2.weight"]
    broken["stages.9.extra.weight"] = torch.zeros(3)
    del broken["stem.1.num_batches_tracked"]  # not a weight: allowed to be absent
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    model = fast_model("inceptionnext_atto", seed=2, num_classes=7)
    with pytest.raises(StateDictMismatchError) as info:
        load_pretrained(model, path, progress=False)
    msg = str(info.value)
    assert "1 key(s) of the model missing" in msg and "stages.3.blocks.1.mlp.fc2.weight" in msg
    assert "1 key(s) of the checkpoint not in the model" in msg and "stages.9.extra" in msg
    assert "num_batches_tracked" not in msg

    report = load_pretrained(model, path, strict_backbone=False, progress=False)
    assert report.missing == ["stages.3.blocks.1.mlp.fc2.weight"]
    assert report.unexpected == ["stages.9.extra.weight"] and "NOT loaded" in str(report)
    assert torch.equal(model.state_dict()["stem.0.weight"], atto_sd["stem.0.weight"])


def test_bad_sources_give_clear_errors(tmp_path):
    model = fast_model("inceptionnext_atto", seed=2)
    with pytest.raises(UnknownEntryError, match="Did you mean: inceptionnext_tiny"):
        load_pretrained(model, "inceptionnext_tinyy")
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        load_pretrained(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="not a PyTorch checkpoint"):
        load_pretrained(model, tmp_path / "junk.pth")
    torch.save(model.state_dict(), tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:100_000])
    with pytest.raises(Exception, match="truncated"):
        load_pretrained(model, tmp_path / "cut.pth")
    torch.save(model, tmp_path / "pickled_model.pth")
    with pytest.raises(Exception, match="beyond tensors.*trust"):
        read_checkpoint(tmp_path / "pickled_model.pth")


def test_timm_baseline_from_timm_keys(tmp_path):
    src = fast_model("resnet18", seed=5)
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    model = fast_model("resnet18", seed=6, num_classes=4)
    report = load_pretrained(model, tmp_path / "r18.pth", progress=False)
    assert report.classifier == ["fc"] and not report.classifier_loaded
    sd = model.state_dict()
    assert all(
        torch.equal(v, src.state_dict()[k]) for k, v in sd.items() if not k.startswith("fc.")
    )


def test_backbone_classifier_split_for_freezing():
    model = fast_model("inceptionnext_atto", num_classes=7)
    backbone, head = split_parameters(model)
    assert head == ["head.fc2.weight", "head.fc2.bias"]
    assert "head.fc1.weight" in backbone and "head.norm.weight" in backbone
    assert len(backbone) + len(head) == len(list(model.parameters()))
    assert classifier_names(small_convnext_variant()) == ["head.fc"]
    freeze_backbone(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == head
    freeze_backbone(model, frozen=False)
    assert all(p.requires_grad for p in model.parameters())


def test_a_failing_key_filter_is_named_in_the_error(tmp_path, monkeypatch, files):
    """A filter that cannot read the file leaves the other readings, and says why it failed."""
    import inceptionnext_pl.zoo.transfer as transfer

    def broken_filter(state_dict, model):
        raise KeyError("downsample_layers.0.0.weight")

    monkeypatch.setattr(transfer, "_filter_fn", lambda model: broken_filter)
    wrong = create_model("inceptionnext_atto", dims=(48, 96, 192, 384))
    with pytest.raises(StateDictMismatchError, match=r"could not read the file: KeyError"):
        load_pretrained(wrong, files["official"], progress=False)

    def buggy_filter(state_dict, model):
        return None.keys()  # our own bug: an AttributeError is not a layout mismatch

    monkeypatch.setattr(transfer, "_filter_fn", lambda model: buggy_filter)
    with pytest.raises(AttributeError):
        load_pretrained(create_model("inceptionnext_atto"), files["official"], progress=False)

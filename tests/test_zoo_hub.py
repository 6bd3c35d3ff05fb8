"""Export in timm's hub format, loaded back by timm alone where timm has the architecture; the
upload's failures as one clear error each."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from inceptionnext_pl import create_model
from inceptionnext_pl.zoo import ZooError, save_state_dict
from inceptionnext_pl.zoo.convert import lightning_ckpt
from inceptionnext_pl.zoo.hub import PublishError, export_hub, push_to_hub

CLASSES = 7
SIZE = 64
# family -> (our name, the architecture config.json must give, the args it must give)
FAMILIES = {
    "InceptionNeXt": ("inceptionnext_atto", "inception_next_atto", {}),
    "ConvNeXt-k3": ("convnext_tiny_k3", "convnext_tiny", {"kernel_sizes": 3}),
    "partial conv": ("convnext_tiny_k3_par1_8", "convnext_tiny_k3_par1_8", {}),
    "InceptionNeXt isotropic": ("inceptionnext_small_iso", "inceptionnext_small_iso", {}),
    "ConvNeXt isotropic": ("convnext_small_iso", "convnext_small_iso", {}),
}


def trained_like(name: str, seed: int, num_classes: int = CLASSES) -> torch.nn.Module:
    """``name`` with random weights of trained scale (BN variances positive, layer scales 0.1-1)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif key.endswith(("gamma", "weight")) and t.ndim == 1:
                t.copy_(torch.rand(t.shape, generator=g) * 0.9 + 0.1)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            else:
                t.zero_()
    return model.eval()


def lightning_file(tmp: Path, name: str, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A weights-only Lightning checkpoint of ImageClassifier, as `inceptionnext-zoo convert` writes."""
    model = trained_like(name, seed)
    path = tmp / f"{name}.ckpt"
    save_state_dict(lightning_ckpt(model.state_dict(), name, CLASSES), path)
    return path, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, torch.Tensor, torch.Tensor]]:
    """Each family exported; with the input and our model's output on it."""
    root = tmp_path_factory.mktemp("hub")
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out = {}
    for i, (family, (name, arch, args)) in enumerate(FAMILIES.items()):
        src, model = lightning_file(root, name, seed=i)
        export = export_hub(src, root / name, progress=False)
        assert (export.architecture, export.model_args) == (arch, args), family
        with torch.no_grad():
            out[family] = (root / name, x, model(x))
        src.unlink()
    return out


def _load_elsewhere(dirs: list[Path], x: torch.Tensor, tmp: Path, with_package: bool) -> list:
    """Outputs of ``timm.create_model("local-dir:DIR", pretrained=True)`` in a fresh process."""
    torch.save(x, tmp / "x.pt")
    code = (
        "import sys, timm, torch\n"
        + ("import inceptionnext_pl\n" if with_package else "")
        + f"x = torch.load({str(tmp / 'x.pt')!r})\n"
        + "outs = []\n"
        + f"for d in {[str(d) for d in dirs]!r}:\n"
        + "    model = timm.create_model('local-dir:' + d, pretrained=True).eval()\n"
        + "    with torch.no_grad():\n"
        + "        outs.append(model(x))\n"
        + f"torch.save(outs, {str(tmp / 'out.pt')!r})\n"
        + "print(any(m.startswith('inceptionnext_pl') for m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(with_package)  # plain timm never imported us
    return torch.load(tmp / "out.pt")


def test_timm_alone_loads_the_folders_of_its_architectures(exported, tmp_path):
    families = ["InceptionNeXt", "ConvNeXt-k3"]  # their folders name timm's architectures
    dirs = [exported[f][0] for f in families]
    outs = _load_elsewhere(dirs, exported[families[0]][1], tmp_path, with_package=False)
    for family, got in zip(families, outs):
        want = exported[family][2]
        assert got.shape == (2, CLASSES) and want.abs().max() > 0.1
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=family)


def test_our_architectures_load_through_timm_with_the_package(exported, tmp_path):
    families = ["partial conv", "InceptionNeXt isotropic", "ConvNeXt isotropic"]
    dirs = [exported[f][0] for f in families]
    outs = _load_elsewhere(dirs, exported[families[0]][1], tmp_path, with_package=True)
    for family, got in zip(families, outs):
        torch.testing.assert_close(got, exported[family][2], rtol=1e-4, atol=1e-5, msg=family)


def test_the_folder_is_timms_layout(exported):
    folder = exported["ConvNeXt-k3"][0]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "convnext_tiny" and config["num_classes"] == CLASSES
    assert config["model_args"]["kernel_sizes"] == 3
    assert config["pretrained_cfg"]["input_size"] == [3, 224, 224]  # the variant's own config
    assert not list(folder.parent.glob(".*.partial"))


def test_the_card_holds_the_runs_own_metrics_and_labels_the_papers(tmp_path, tiny_trainer):
    """A real run: the card's numbers are the ones the run logged, EMA ones for EMA weights."""
    from inceptionnext_pl.tasks import ImageClassifier
    from test_zoo_lightning import RandomImages

    module = ImageClassifier(
        model_name="inceptionnext_atto", num_classes=10, ema_decay=0.5, warmup_epochs=0
    )
    trainer = tiny_trainer(default_root_dir=tmp_path, max_steps=2, limit_val_batches=2)
    trainer.fit(module, RandomImages())
    run = tmp_path / "run"
    trainer.save_checkpoint(run / "checkpoints" / "last.ckpt")
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}

    for ema, prefix in ((False, "val/"), (True, "val_ema/")):
        out = tmp_path / f"hub_{ema}"
        export = export_hub(run, out, ema=ema, progress=False)
        card = (out / "README.md").read_text()
        assert export.metrics and all(k.startswith(prefix) for k in export.metrics)
        assert export.metrics[f"{prefix}acc1"] == pytest.approx(logged[f"{prefix}acc1"])
        assert f"| {prefix}acc1 | {logged[f'{prefix}acc1']:.4g} |" in card
        assert f"Saved at epoch {trainer.current_epoch}, step 2." in card
        # The paper's figure is there, under its own heading, and is not the run's.
        quoted = card.split("## Quoted from the paper (not measured here)")[1]
        assert "75.3% ImageNet-1k top-1" in quoted and "75.3" not in card.split("## Quoted")[0]
        assert "library_name: timm" in card and "inception_next_atto" in card


def test_a_zoo_entry_exports_with_its_release_facts(tmp_path, monkeypatch):
    """The official file, as the release serves it, from the cache the zoo downloads into."""
    import huggingface_hub.constants as hfc

    from inceptionnext_pl.zoo import cache_dir

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("INCEPTIONNEXT_ZOO_MIRROR", raising=False)
    model = trained_like("inceptionnext_atto", 5, num_classes=1000)
    cache_dir().mkdir(parents=True)
    torch.save(model.state_dict(), cache_dir() / "inceptionnext_atto.pth")
    export = export_hub("inceptionnext_atto", tmp_path / "hub", progress=False)
    assert (export.architecture, export.num_classes, export.metrics) == (
        "inception_next_atto",
        1000,
        {},
    )
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["pretrained_cfg"]["tag"] == "sail_in1k"
    assert config["pretrained_cfg"]["license"] == "apache-2.0"
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "The source file records no measured metrics." in card
    assert "InceptionNeXt-A: 75.3% ImageNet-1k top-1 at 224 px (Table 4" in card


def test_an_occupied_folder_is_refused_and_kept(tmp_path):
    src, _ = lightning_file(tmp_path, "inceptionnext_atto")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(ZooError, match="already exists and is not empty"):
        export_hub(src, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def test_cli_exports_a_run_directory_and_prints_the_timm_line(tmp_path, capsys):
    from inceptionnext_pl.zoo.cli import main

    src, _ = lightning_file(tmp_path, "inceptionnext_atto")
    run = tmp_path / "runs" / "demo" / "version_0" / "checkpoints"
    run.mkdir(parents=True)
    src.rename(run / "last.ckpt")
    assert (
        main(["export", str(tmp_path / "runs" / "demo"), str(tmp_path / "hub"), "--hub-format"])
        == 0
    )
    out = capsys.readouterr().out
    assert "timm's inception_next_atto, 7 classes" in out
    assert f"timm.create_model('local-dir:{tmp_path / 'hub'}', pretrained=True)" in out
    assert "import inceptionnext_pl" not in out  # plain timm is enough


# ----------------------------------------------------------------------------- upload
class Hub(http.server.BaseHTTPRequestHandler):
    """A hub that answers every request with ``status``."""

    status = 403

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.dumps(
            {"error": "You don't have the rights to create a model under this namespace"}
        )
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_PUT = do_POST


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as hfc

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(hfc, "ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    yield Hub
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    "status, message", [(403, "may not write to me/model"), (401, "rejected the token")]
)
def test_a_refused_upload_names_the_reason(hub, tmp_path, status, message):
    hub.status = status
    with pytest.raises(PublishError, match=message) as e:
        push_to_hub(tmp_path, "me/model")
    assert f"folder {tmp_path} is kept" in str(e.value)


def test_an_unreachable_hub_is_one_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with pytest.raises(PublishError, match="the hub cannot be reached"):
        push_to_hub(tmp_path, "me/model")


def test_offline_and_no_token_are_said_before_any_request(monkeypatch, tmp_path):
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set"):
        push_to_hub(tmp_path, "me/model")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hfc, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hfc, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(PublishError, match="No Hugging Face token: set HF_TOKEN"):
        push_to_hub(tmp_path, "me/model")


def test_cli_upload_failure_is_one_line(monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as hfc

    from inceptionnext_pl.zoo.cli import main

    src, _ = lightning_file(tmp_path, "inceptionnext_atto")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    assert main(["export", str(src), str(tmp_path / "hub"), "--push-to-hub", "me/model"]) == 1
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "Traceback" not in err
    assert (tmp_path / "hub" / "model.safetensors").is_file()  # ready for the retry

"""notebooks/activation_maps.ipynb runs end to end: offline in its digits fallback, and on zoo
weights that the test writes into the caches in each source's real format."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient
from safetensors.torch import save_file

from inceptionnext_pl import create_model
from inceptionnext_pl.tasks import ImageClassifier
from inceptionnext_pl.zoo import get_entry

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "activation_maps.ipynb"
KERNEL = "inceptionnext-pl-tests"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec that runs this very interpreter: the installed `python3` spec calls whatever
    `python` is first on PATH, which in a fresh CI venv need not be the venv's."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.fixture
def demo_ckpt(tmp_path) -> Path:
    """A Lightning checkpoint of ImageClassifier in the demo's data settings (weights untrained)."""
    module = ImageClassifier("inceptionnext_atto", num_classes=10)
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
            "datamodule_hyper_parameters": {"dataset": "digits", "image_size": 32, "crop_pct": 1.0},
            "rng_states": {"numpy": np.random.get_state()},
        },
        path,
    )
    return path


def test_notebook_runs_offline(kernel, demo_ckpt, tmp_path, monkeypatch):
    # no zoo weights can be found or fetched: the notebook must take its offline path
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("INCEPTIONNEXT_CAM_DOWNLOAD", raising=False)
    monkeypatch.setenv("INCEPTIONNEXT_DEMO_CKPT", str(demo_ckpt))
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=240, kernel_name=kernel, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert not [o for o in outputs if o.output_type == "error"]
    assert "using the digits demo" in text
    assert f"demo checkpoint: {demo_ckpt}" in text
    accuracies = [
        float(line.split("val acc ")[1].split("%")[0])
        for line in text.splitlines()
        if "val acc" in line
    ]
    assert len(accuracies) == 3 and min(accuracies) > 50  # they did learn something
    assert text.count("of CAM mass on stroke pixels") == 8  # 4 models x 2 methods
    figures = [
        o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert len(figures) == 2  # models side by side, methods side by side


def _write_zoo_caches(torch_home: Path, hub_cache: Path, hub_cache_file) -> None:
    """Random weights for the four models of Figure 4, where the zoo looks for its downloads:
    the official InceptionNeXt release file (a .pth under TORCH_HOME) and timm's hub copies
    (safetensors in the hub cache)."""
    hub_cache.mkdir(parents=True, exist_ok=True)
    for name, arch in [
        ("resnet50.a1_in1k", "resnet50"),
        ("swin_tiny_patch4_window7_224.ms_in1k", "swin_tiny_patch4_window7_224"),
        ("convnext_tiny.fb_in1k", "convnext_tiny"),
    ]:
        (source,) = get_entry(name).sources
        path = hub_cache / "tmp.safetensors"
        save_file(create_model(arch).state_dict(), str(path))
        hub_cache_file(hub_cache, source.hf, source.file, path.read_bytes())
        path.unlink()
    release = next(s for s in get_entry("inceptionnext_tiny").sources if s.url)
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(
        create_model("inceptionnext_tiny").state_dict(),
        torch_home / "hub" / "checkpoints" / release.filename,
    )


@pytest.mark.timeout(600)
def test_notebook_zoo_branch_on_cached_weights(kernel, tmp_path, monkeypatch, hub_cache_file):
    """The Figure 4 path: four ImageNet models from the zoo's caches, offline."""
    torch_home, hf_home = tmp_path / "torch", tmp_path / "hf"
    _write_zoo_caches(torch_home, hf_home / "hub", hub_cache_file)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("INCEPTIONNEXT_CAM_DOWNLOAD", raising=False)
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert not [o for o in outputs if o.output_type == "error"]
    assert "using the digits demo" not in text and "Zoo weights unavailable" not in text, text
    figures = [
        o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert len(figures) == 2  # Grad-CAM and Grad-CAM++, four models side by side

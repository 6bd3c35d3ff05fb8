"""notebooks/activation_maps.ipynb runs end to end, offline, in its digits fallback."""

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

from inceptionnext_pl.module import ImageClassifier

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

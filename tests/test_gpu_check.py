"""benchmarks/gpu/check.sh, the prepared GPU run of issue 11, in its dry mode (CPU, tiny sizes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "check.sh"
STEPS = [
    "setup", "tests", "bench_eager", "bench_compiled", "mixer", "fit_a", "fit_b", "fit_c", "seg"
]  # fmt: skip


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "DRY": "1", "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work")}
    full["PYTHON"] = sys.executable  # this interpreter, whatever python3 is on PATH
    full.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=REPO, env=full, capture_output=True, text=True, timeout=900
    )


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("gpu-check")
    return tmp, _run(tmp)


def test_dry_run_runs_every_step_and_publishes_what_comes_back(dry_run) -> None:
    tmp, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:]
    out, res = tmp / "out", tmp / "work" / "results"
    # the device tool brings back at most 8 files: these three
    assert sorted(p.name for p in out.iterdir()) == ["check.log", "results.tgz", "summary.txt"]
    steps = [line.split("\t") for line in (res / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == STEPS
    assert all(s[1] == "0" for s in steps), steps
    with tarfile.open(out / "results.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    expected = {"env.json", "models-eager.csv", "models-compiled.csv", "kernels.csv", "fit.csv"}
    expected |= {"seg-cpu-fp32.csv"}
    assert expected | {f"{s}.log" for s in STEPS} <= names
    assert "=== [fit_c] exit 0" in (out / "check.log").read_text()


def test_dry_run_results(dry_run) -> None:
    tmp, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:]
    res = tmp / "work" / "results"
    env = json.loads((res / "env.json").read_text())
    assert set(env["imports"].values()) == {"ok"} and env["versions"]["torch"]
    eager = _csv(res / "models-eager.csv")
    assert [r["model"] for r in eager] == [
        "inceptionnext_atto:fast=auto",
        "inceptionnext_atto:fast=off",
        "inception_next_atto",
        "convnext_atto",
        "resnet18",
    ]
    assert all(float(r["train_img_s"]) > 0 and float(r["infer_img_s"]) > 0 for r in eager)
    assert {(r["precision"], r["memory_format"], r["img_size"]) for r in eager} == {
        ("bf16", "channels-last", "32")
    }
    compiled = _csv(res / "models-compiled.csv")
    assert len(compiled) == 4 and all(r["compile"] == "True" for r in compiled)
    assert all(float(r["train_img_s"]) > 0 and r["infer_img_s"] == "" for r in compiled)
    kernels = _csv(res / "kernels.csv")
    assert {r["variant"] for r in kernels} == {"fused", "reference", "dwconv7x7"}
    assert all(float(r["bw_share"]) > 0 for r in kernels)
    # fit.csv: the three settings and columns; the JSON beside it has the details
    fit = _csv(res / "fit.csv")
    assert list(fit[0]) == ["setting", "img_per_s", "device"]
    assert [r["setting"] for r in fit] == ["a", "b", "c"]
    assert all(float(r["img_per_s"]) > 0 for r in fit)
    runs = {r["setting"]: r for r in json.loads((res / "fit.json").read_text())["runs"]}
    assert runs["a"]["data"]["class"] == "SyntheticImageDataModule"
    assert runs["b"]["data"]["class"] == runs["c"]["data"]["class"] == "ImageDataModule"
    assert runs["b"]["data"]["loader"]["num_workers"] == 2
    assert runs["c"]["model"]["compile"] is True
    assert runs["c"]["model"]["model_kwargs"]["fast"] == "auto"
    for r in runs.values():
        assert r["precision"] == "bf16-mixed" and r["model"]["channels_last"] is True
        assert r["timed_steps"] == 2 and r["timed_images"] == 8  # steps 2-3 of 3, batch 4
    summary = (tmp / "out" / "summary.txt").read_text()
    assert "paper anchor (A100 TF32 training): 901 / 575 = 1.57x" in summary
    assert "lightning fit (img/s after warm-up): a " in summary


def test_a_step_past_its_cap_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    proc = _run(tmp_path, STEPS="mixer", CAP_mixer="1")
    assert proc.returncode == 0, proc.stdout[-2000:]
    (step,) = [
        line.split("\t") for line in (tmp_path / "work/results/steps.tsv").read_text().splitlines()
    ]
    assert step[0] == "mixer" and step[1] == "124" and step[3] == "1"  # timeout's status
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "mixer ok" not in summary and "mixer rc=124" in summary


def test_the_gpu_run_needs_out(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        ["bash", str(SCRIPT)], cwd=REPO, env={**env, "DRY": "0"}, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "set OUT to the folder for the results" in proc.stderr

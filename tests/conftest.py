"""Fixtures shared by the test files: a tiny CPU Trainer, the digits datamodule, state-dict
equality, a Hugging Face cache entry written by the test, and the console scripts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch

# One intra-op thread: the tests use tiny tensors, and on a small shared machine (CI has 2 cores)
# more threads than free cores make every op spin; subprocesses (DDP, notebook) inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _cores_per_worker() -> int:
    """The cores each pytest-xdist worker has to itself (all of them without xdist)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    # More threads than the worker's cores make every op spin against the other workers.
    torch.set_num_threads(min(n, _cores_per_worker()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def torch_threads() -> Callable:
    """``with torch_threads(n):`` a block with ``n`` intra-op threads, as many as the worker's
    cores allow (the demo runs: both cores when pytest runs without xdist, as a user runs them)."""
    return _threads


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that share a module-scoped fixture (a demo run, a trained checkpoint) go to one
    xdist worker together, so that the fixture is built once; grouped tests run first."""
    for item in items:
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if any(d and d[-1].scope == "module" for d in defs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    # The groups hold the long runs (demos, full-size rehearsals): started first, they overlap
    # with the many short tests instead of running alone at the end.
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    # Trainer(deterministic=True) turns the process-wide mode on and leaves it so.
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="session")
def tiny_trainer() -> Callable:
    """``tiny_trainer(**kwargs)``: a CPU Trainer without logger, checkpoints or progress bar."""
    import lightning as L

    def make(**kwargs):
        defaults = dict(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        return L.Trainer(**(defaults | kwargs))

    return make


def _digits_dm(**kwargs):
    from inceptionnext_pl.data import ImageDataModule

    defaults = dict(
        dataset="digits",
        image_size=32,
        loader=dict(batch_size=16, num_workers=0),
        augment=dict(auto_augment=None, color_jitter=None, reprob=0.0, hflip=0.0),
        mixup=None,
        max_train_samples=128,
        max_val_samples=64,
    )
    return ImageDataModule(**(defaults | kwargs))


@pytest.fixture(scope="session")
def digits_dm() -> Callable:
    """``digits_dm(**overrides)``: a small, fast ImageDataModule over the built-in digits."""
    return _digits_dm


def _state_dicts_equal(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], skip: str | None = None
) -> bool:
    keys = [k for k in b if skip is None or not k.startswith(skip)]
    return bool(keys) and all(k in a and torch.equal(a[k], b[k]) for k in keys)


@pytest.fixture(scope="session")
def state_dicts_equal() -> Callable:
    """``state_dicts_equal(a, b, skip=None)``: every key of ``b`` (but those under ``skip``)
    is in ``a`` with an equal tensor."""
    return _state_dicts_equal


def _hub_cache_file(root: Path, repo: str, filename: str, data: bytes, blob: str | None = None):
    """A file where huggingface_hub caches it: blobs/<sha256>, linked from snapshots/<commit>/."""
    folder = root / f"models--{repo.replace('/', '--')}"
    blob = blob or hashlib.sha256(data).hexdigest()
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / blob).write_bytes(data)
    commit = "a" * 40
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / filename).symlink_to(Path("../../blobs") / blob)


@pytest.fixture(scope="session")
def hub_cache_file() -> Callable:
    """``hub_cache_file(root, repo, filename, data, blob=None)``: fake a hub download."""
    return _hub_cache_file


def _console(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [str(Path(sys.executable).parent / script), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def console() -> Callable:
    """``console(script, *args)``: run an installed console script from the repository root."""
    return _console


def printed_metric(stdout: str, name: str) -> float:
    """The value of ``name`` in the table that ``lightning validate`` prints."""
    line = next(ln for ln in stdout.splitlines() if name in ln)
    return float(line.replace("│", " ").split()[-1])


@pytest.fixture
def validate_metric(console) -> Callable:
    """``validate_metric(config, ckpt, root, metric)``: `lightning validate` as a user types it;
    asserts exit status 0 and returns the printed metric."""

    def run(config: str, ckpt: Path, root: Path, metric: str, *extra: str) -> float:
        proc = console(
            "lightning", "validate", "--config", config, f"--ckpt_path={ckpt}",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}", *extra,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return printed_metric(proc.stdout, metric)

    return run


@pytest.fixture(scope="session")
def imagenet_folder(tmp_path_factory) -> Path:
    """ImageNet's layout (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) at its size and mode mix."""
    from real_shapes import make_imagenet_folder

    return make_imagenet_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def ade_folder(tmp_path_factory) -> Path:
    """ADE20K's layout (ADEChallengeData2016/images, annotations) at its size mix."""
    from real_shapes import make_ade_folder

    return make_ade_folder(tmp_path_factory.mktemp("ade") / "ADEChallengeData2016")

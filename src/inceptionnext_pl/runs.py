"""Run directories: ``runs/<config name>/`` as the ``lightning`` command writes them."""

from __future__ import annotations

from pathlib import Path

from .zoo.errors import ZooError


class RunDirError(ZooError, FileNotFoundError):
    """A run directory given as weights that holds no checkpoint."""


def find_last_checkpoint(run_dir: str | Path) -> str | None:
    """The newest ``last*.ckpt`` under a run directory, or None."""
    found = sorted(Path(run_dir).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def resolve_run_dir(source: str) -> str:
    """A run directory stands for its newest ``last.ckpt``; anything else is returned as is."""
    if not Path(source).is_dir():
        return source
    found = find_last_checkpoint(source)
    if found is None:
        raise RunDirError(
            f"pretrained={source!r} is a directory without a last.ckpt. Train it first "
            f"(e.g. `lightning fit --config configs/demo.yaml`) or give a checkpoint file or zoo name."
        )
    return found

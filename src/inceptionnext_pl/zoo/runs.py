"""Directories that stand for a weights file: a run directory and a folder in hub format."""

from __future__ import annotations

from pathlib import Path

from .errors import ZooError

# timm's hub layout (``save_for_hf``): the weights beside config.json, safetensors preferred.
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class RunDirError(ZooError, FileNotFoundError):
    """A directory given as weights that holds no checkpoint."""


def find_last_checkpoint(run_dir: str | Path) -> str | None:
    """The newest ``last*.ckpt`` under a run directory (``runs/<config name>/``), or None."""
    found = sorted(Path(run_dir).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def weights_in(directory: str | Path) -> Path:
    """The weights file a directory stands for: a hub-format folder's, or a run's newest ``last.ckpt``."""
    directory = Path(directory)
    for name in HUB_WEIGHTS:
        if (directory / name).is_file():
            return directory / name
    found = find_last_checkpoint(directory)
    if found is None:
        raise RunDirError(
            f"{directory} is a directory without weights: neither a run with a last.ckpt nor a "
            f"hub-format folder ({' or '.join(HUB_WEIGHTS)}). Train it first (e.g. `lightning fit "
            "--config configs/demo.yaml`) or give a checkpoint file or zoo name."
        )
    return Path(found)

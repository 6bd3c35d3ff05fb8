"""Per-rank random streams, and RNG states saved in checkpoints so that a resumed run continues
exactly where an uninterrupted one would (bit-exact on CPU; CUDA RNG states are not saved)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

CHECKPOINT_KEY = "rng_states"


def offset_seeds_by_rank(rank: int) -> None:
    """seed_everything gives every rank the same seed; Mixup, DropPath and random erasing must
    draw differently per rank (timm seeds seed + rank too)."""
    if rank:
        seed = (torch.initial_seed() + rank) % 2**32
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)


def rng_states() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and ints (Lightning loads ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), gauss],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    torch.set_rng_state(states["torch"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, float(gauss)))
    random.setstate(states["python"])


class RankSeeds(L.Callback):
    """Offset the seeds by the global rank at setup; save RNG states with every checkpoint and
    restore them when a fit resumes (then offset again)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        offset_seeds_by_rank(trainer.global_rank)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CHECKPOINT_KEY] = rng_states()

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get(CHECKPOINT_KEY)
        if states and trainer.state.fn == "fit":
            set_rng_states(states)
            offset_seeds_by_rank(trainer.global_rank)

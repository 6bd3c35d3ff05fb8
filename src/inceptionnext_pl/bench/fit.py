"""End-to-end training throughput of ``lightning fit``: img/s after a warm-up, one CSV row per run.

:class:`FitThroughput` is a callback for any ``lightning fit`` run; add it in a config::

    trainer:
      max_steps: 200
      callbacks:
        - class_path: inceptionnext_pl.bench.fit.FitThroughput
          init_args: {setting: b, csv: benchmarks/gpu/fit.csv, warmup_steps: 50}

It times the optimizer steps after ``warmup_steps`` (compilation, cuDNN autotuning and loader
start-up fall in the warm-up) up to the last one, synchronising CUDA at both ends, and writes
``setting,img_per_s,device`` to ``csv`` (replacing an older row of the same setting) and the
run's details (versions, precision, batch, layout, data) beside it as JSON.

``python -m inceptionnext_pl.bench.fit ARGS`` runs the same fit as ``lightning fit ARGS``, through
the same command-line parser, model and trainer, with the data module swapped for in-memory
random images (:class:`~.synthetic.SyntheticImageDataModule` built like the configured one): the
ceiling of Lightning plus the model, with no decoding.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ..files import atomic_write_bytes
from .report import device_name, environment

CSV_FIELDS = ("setting", "img_per_s", "device")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FitThroughput(Callback):
    """Training images/s of a fit after ``warmup_steps`` optimizer steps, written at its end.

    Args:
        setting: the row's name in the CSV (e.g. ``a``, ``b``, ``c``).
        csv: CSV to write (``setting,img_per_s,device``), its details in the ``.json`` beside it;
            None only prints the result.
        warmup_steps: optimizer steps left out of the timing; must be below ``trainer.max_steps``.
    """

    def __init__(self, setting: str, csv: str | None = None, warmup_steps: int = 50) -> None:
        if warmup_steps < 1:
            raise ValueError(f"FitThroughput: warmup_steps must be >= 1, got {warmup_steps}")
        self.setting, self.csv, self.warmup_steps = setting, csv, warmup_steps
        self._t0: float | None = None
        self._t1: float | None = None
        self._images = 0
        self._steps = 0
        self.result: dict[str, Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_steps is None or trainer.max_steps <= self.warmup_steps:
            raise ValueError(
                f"FitThroughput(warmup_steps={self.warmup_steps}) needs trainer.max_steps above "
                f"it (got {trainer.max_steps}): set trainer.max_steps"
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if self._t1 is not None:
            return
        if self._t0 is not None:
            self._images += int(batch[0].shape[0]) * trainer.world_size
            self._steps += 1
        if self._t0 is None and trainer.global_step >= self.warmup_steps:
            _sync(pl_module.device)
            self._t0 = time.perf_counter()
        elif self._t0 is not None and trainer.global_step >= trainer.max_steps:
            _sync(pl_module.device)
            self._t1 = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._t0 is None or not self._steps:
            raise RuntimeError(
                f"FitThroughput: the run ended before {self.warmup_steps} warm-up steps were done "
                "and timed steps followed; lower warmup_steps or raise trainer.max_steps"
            )
        if self._t1 is None:
            _sync(pl_module.device)
            self._t1 = time.perf_counter()
        seconds = self._t1 - self._t0
        img_per_s = self._images / seconds
        device = device_name(pl_module.device)
        self.result = dict(setting=self.setting, img_per_s=round(img_per_s, 1), device=device)
        print(f"fit throughput [{self.setting}]: {img_per_s:.1f} img/s on {device}", flush=True)
        if self.csv and trainer.is_global_zero:
            details = {
                **self.result,
                "timed_steps": self._steps,
                "timed_images": self._images,
                "seconds": round(seconds, 4),
                "warmup_steps": self.warmup_steps,
                "max_steps": trainer.max_steps,
                "world_size": trainer.world_size,
                "precision": str(trainer.precision),
                "model": _model_settings(pl_module),
                "data": _data_settings(trainer),
                "environment": environment(pl_module.device),
                "command": " ".join(sys.argv),
            }
            write_row(Path(self.csv), self.result, details)


def _model_settings(pl_module: pl.LightningModule) -> dict[str, Any]:
    hp = dict(getattr(pl_module, "hparams", {}) or {})
    keys = ("model_name", "model_kwargs", "channels_last", "compile", "drop_path_rate")
    return {k: hp.get(k) for k in keys if k in hp}


def _data_settings(trainer: pl.Trainer) -> dict[str, Any]:
    dm = trainer.datamodule
    if dm is None:
        return {}
    hp = dict(getattr(dm, "hparams", {}) or {})
    keep = {k: hp[k] for k in ("dataset", "loader", "image_size", "mixup", "augment") if k in hp}
    batch = getattr(getattr(dm, "loader", None), "batch_size", getattr(dm, "batch_size", None))
    return {"class": type(dm).__name__, "batch_size": batch, **keep}


def _merge(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("setting") != row["setting"]] + [row]


def write_row(path: Path, row: dict[str, Any], details: dict[str, Any]) -> None:
    """Put ``row`` into the CSV at ``path`` and ``details`` into the JSON beside it, replacing
    an older row of the same setting; both writes are atomic."""
    rows: list[dict[str, Any]] = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r.get(k) for k in CSV_FIELDS} for r in _merge(rows, row))
    atomic_write_bytes(path, buf.getvalue().encode())
    json_path = path.with_suffix(".json")
    runs: list[dict[str, Any]] = []
    if json_path.is_file():
        runs = json.loads(json_path.read_text()).get("runs", [])
    payload = {"runs": _merge(runs, details)}
    atomic_write_bytes(json_path, (json.dumps(payload, indent=2, default=str) + "\n").encode())


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning fit ARGS`` with the configured data module replaced by in-memory images."""
    from ..cli import build_cli
    from .synthetic import SyntheticImageDataModule

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["fit"]:
        args = args[1:]
    cli = build_cli(args, run=False)
    data = SyntheticImageDataModule.like(cli.datamodule)
    cli.trainer.fit(cli.model, datamodule=data)


if __name__ == "__main__":
    main()

"""The ``lightning`` / ``inceptionnext-pl`` command: LightningCLI over ImageClassifier and ImageDataModule.

Configs can extend another one with a top-level ``__base__: other.yaml`` (path relative to the
file); the base is applied first, then the file's own values. Several ``--config`` files also
compose, later ones winning.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from lightning.pytorch.cli import LightningCLI

from .data import ImageDataModule
from .module import ImageClassifier, find_last_checkpoint

BASE_KEY = "__base__"


def expand_bases(args: Sequence[str]) -> list[str]:
    """Turn ``--config child.yaml`` into ``--config base.yaml --config <child without __base__>``."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += _expand_one(args[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            out += _expand_one(arg.split("=", 1)[1])
        else:
            out.append(arg)
        i += 1
    return out


def _expand_one(path: str, seen: tuple[Path, ...] = ()) -> list[str]:
    p = Path(path)
    if not p.is_file():
        return ["--config", path]  # let LightningCLI report it (or it is inline YAML)
    cfg = yaml.safe_load(p.read_text()) or {}
    if not isinstance(cfg, dict) or BASE_KEY not in cfg:
        return ["--config", path]
    base = (p.parent / str(cfg.pop(BASE_KEY))).resolve()
    if base in seen or base == p.resolve():
        raise SystemExit(f"error: config {path} has a cycle of {BASE_KEY} includes")
    if not base.is_file():
        raise SystemExit(f"error: {path}: {BASE_KEY} points to {base}, which does not exist")
    return _expand_one(str(base), (*seen, p.resolve())) + ["--config", yaml.safe_dump(cfg)]


def _config_paths(args: Sequence[str]) -> list[str]:
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    return paths + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


class ImageCLI(LightningCLI):
    config_names: tuple[str, ...] = ()

    def before_instantiate_classes(self) -> None:
        # Each config logs to its own run directory unless it names one: runs/<config name>.
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.default_root_dir is None:
            name = self.config_names[-1] if self.config_names else cfg.model.model_name
            cfg.trainer.default_root_dir = str(Path("runs") / name)
        # Lightning looks for "last" in the logger's next version directory, which is empty:
        # resume from the newest last.ckpt of this run directory instead.
        if getattr(cfg, "ckpt_path", None) == "last":
            found = find_last_checkpoint(cfg.trainer.default_root_dir)
            if found is None:
                raise SystemExit(
                    f"error: --ckpt_path last: no last.ckpt under {cfg.trainer.default_root_dir}. "
                    "Give a checkpoint path, or drop --ckpt_path to start a new run."
                )
            cfg.ckpt_path = found

    def add_arguments_to_parser(self, parser) -> None:
        # Eval crop_pct / image size come from the model's pretrained config.
        parser.link_arguments("model.model_name", "data.model_name")
        # Mixup smooths soft targets itself; with hard targets the module applies the same value.
        parser.link_arguments("data.label_smoothing", "model.label_smoothing")


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> ImageCLI:
    """Run the command and return the CLI; with ``run=False`` (no subcommand in ``args``) only
    model, data and trainer are built."""
    argv = list(sys.argv[1:] if args is None else args)
    ImageCLI.config_names = tuple(Path(p).stem for p in _config_paths(argv))
    return ImageCLI(
        ImageClassifier,
        ImageDataModule,
        save_config_kwargs={"overwrite": True},
        args=expand_bases(argv),
        auto_configure_optimizers=False,
        run=run,
    )


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point (``lightning``, ``inceptionnext-pl``)."""
    build_cli(args)


if __name__ == "__main__":
    main()

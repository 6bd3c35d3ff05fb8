"""The ``lightning`` / ``inceptionnext-pl`` command: LightningCLI over ImageClassifier and
ImageDataModule, or SemanticSegmenter and SegmentationDataModule for configs with
``task: segmentation``.

Configs can extend another one with a top-level ``__base__: other.yaml`` (path relative to the
file); the base is applied first, then the file's own values. Several ``--config`` files also
compose, later ones winning.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from .commands import run_command
from .data import ImageDataModule, check_moved_keys
from .tasks import ImageClassifier
from .zoo.runs import find_last_checkpoint

BASE_KEY = "__base__"
TASK_KEY = "task"  # top-level, read here: `task: segmentation` picks the segmentation classes
TASKS = ("classification", "segmentation")


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


def _task_of(path: Path, seen: tuple[Path, ...] = ()) -> str | None:
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict):
        return None
    if TASK_KEY in cfg:
        return str(cfg[TASK_KEY])
    base = cfg.get(BASE_KEY)
    if base is None or path.resolve() in seen:
        return None
    base_path = (path.parent / str(base)).resolve()
    return _task_of(base_path, (*seen, path.resolve())) if base_path.is_file() else None


def config_task(args: Sequence[str]) -> str:
    """The task that the config files and ``--task`` name, ``classification`` by default."""
    tasks = [t for p in _config_paths(args) if Path(p).is_file() and (t := _task_of(Path(p)))]
    tasks += [b for a, b in zip(args, args[1:]) if a == f"--{TASK_KEY}"]
    tasks += [a.split("=", 1)[1] for a in args if a.startswith(f"--{TASK_KEY}=")]
    if len(set(tasks)) > 1:
        raise SystemExit(
            f"error: the configs and --{TASK_KEY} name different tasks ({', '.join(tasks)}): a run "
            "is one task. Fix: give configs of one task, without a contradicting --task."
        )
    task = tasks[-1] if tasks else "classification"
    if task not in TASKS:
        raise SystemExit(f"error: {TASK_KEY}: {task!r} is unknown; use one of {', '.join(TASKS)}")
    return task


def _config_paths(args: Sequence[str]) -> list[str]:
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    return paths + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]


class TaskCLI(LightningCLI):
    """What both tasks' commands do: a run directory per config, ``--ckpt_path last``, and a
    ``task`` key, which the saved ``config.yaml`` keeps so that it runs again as it is."""

    config_names: tuple[str, ...] = ()
    runs_subdir: str = ""
    task: str = TASKS[0]

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            f"--{TASK_KEY}",
            type=Literal[self.task],  # chosen before parsing, from the files (config_task)
            default=self.task,
            help="classification (the default) or segmentation; read from the config files",
        )

    def _default_run_name(self, cfg) -> str:
        raise NotImplementedError

    def before_instantiate_classes(self) -> None:
        # Each config logs to its own run directory unless it names one: runs/<config name>.
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.default_root_dir is None:
            name = self.config_names[-1] if self.config_names else self._default_run_name(cfg)
            cfg.trainer.default_root_dir = str(Path("runs") / self.runs_subdir / name)
        ckpt_path = getattr(cfg, "ckpt_path", None)
        if ckpt_path and cfg.model.get("pretrained"):
            # The restored checkpoint has the weights: nothing to download just to overwrite.
            rank_zero_info(
                f"--ckpt_path given: model.pretrained={cfg.model.pretrained!r} not loaded"
            )
            cfg.model.pretrained = None
        # Lightning looks for "last" in the logger's next version directory, which is empty:
        # resume from the newest last.ckpt of this run directory instead.
        if ckpt_path == "last":
            found = find_last_checkpoint(cfg.trainer.default_root_dir)
            if found is None:
                raise SystemExit(
                    f"error: --ckpt_path last: no last.ckpt under {cfg.trainer.default_root_dir}. "
                    "Give a checkpoint path, or drop --ckpt_path to start a new run."
                )
            cfg.ckpt_path = found


class ImageCLI(TaskCLI):
    def _default_run_name(self, cfg) -> str:
        return cfg.model.model_name

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        # Eval crop_pct / image size come from the model's pretrained config.
        parser.link_arguments("model.model_name", "data.model_name")
        # Mixup smooths soft targets itself; with hard targets the module applies the same value.
        parser.link_arguments("data.label_smoothing", "model.label_smoothing")


class SegmentationCLI(TaskCLI):
    runs_subdir = "seg"
    task = TASKS[1]

    def _default_run_name(self, cfg) -> str:
        return f"{cfg.model.decoder}_{cfg.model.backbone}"

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.ignore_index", "model.ignore_index")


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> TaskCLI:
    """Run the command and return the CLI; with ``run=False`` (no subcommand in ``args``) only
    model, data and trainer are built. ``task: segmentation`` in a config picks
    SemanticSegmenter and SegmentationDataModule, otherwise ImageClassifier and ImageDataModule."""
    argv = list(sys.argv[1:] if args is None else args)
    if config_task(argv) == "segmentation":
        from .data import SegmentationDataModule
        from .tasks.segmentation import SemanticSegmenter

        cli_class, model_class, data_class = (
            SegmentationCLI,
            SemanticSegmenter,
            SegmentationDataModule,
        )
    else:
        cli_class, model_class, data_class = ImageCLI, ImageClassifier, ImageDataModule
    cli_class.config_names = tuple(Path(p).stem for p in _config_paths(argv))
    expanded = expand_bases(argv)
    check_moved_keys(expanded, data_class.moved_keys)  # old flat data keys name their new place
    return cli_class(
        model_class,
        data_class,
        save_config_kwargs={"overwrite": True},
        args=expanded,
        auto_configure_optimizers=False,
        run=run,
    )


def _run(argv: list[str]) -> int:
    build_cli(argv)
    return 0


def main(args: Sequence[str] | None = None) -> int:
    """Console entry point (``lightning``, ``inceptionnext-pl``); known errors print one line."""
    return run_command("lightning", _run, args)


if __name__ == "__main__":
    sys.exit(main())

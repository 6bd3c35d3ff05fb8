"""Option groups of the data modules, nested in configs as ``data.augment.*``, ``data.mixup.*`` and
``data.loader.*``, and the table of flat keys that moved into them.

LightningCLI (jsonargparse) nests a dataclass-typed argument as a group, so a config reads::

    data:
      dataset: digits
      loader: {batch_size: 32, num_workers: 2}
      augment: {auto_augment: null, hflip: 0.0}
      mixup: null          # no Mixup / CutMix

In Python the groups take the dataclass or a plain dict:
``ImageDataModule(loader=dict(batch_size=32), mixup=None)``. Data-module hyper-parameters keep them
as dicts, so that checkpoints stay loadable with ``weights_only=True``.

Before the groups existed these keys were flat (``data.batch_size``, ``data.mixup: 0.8``, ...).
:data:`MOVED_KEYS` maps each old key to its new place; :func:`check_moved_keys` finds old keys in
command-line arguments and config files, and the data modules refuse them as keyword arguments,
both with a message that names the new key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .errors import DataError

__all__ = [
    "AugmentConfig",
    "LOADER_KEYS",
    "LoaderConfig",
    "MOVED_KEYS",
    "MixupConfig",
    "as_group",
    "check_moved_keys",
    "moved_keys_error",
]


@dataclass(frozen=True)
class LoaderConfig:
    """DataLoader settings, per device.

    Args:
        batch_size: training batch per device (the LR rule scales with it); must be even while
            Mixup / CutMix is on.
        val_batch_size: validation / test batch per device; null: ``batch_size``.
        num_workers: loader worker processes per device (decoding and augmentation run there).
        pin_memory: pin host memory (used only when CUDA is available).
        persistent_workers: keep the workers alive between epochs.
        shuffle_buffer_size: examples in each worker's shuffle buffer when streaming.
    """

    batch_size: int = 128
    val_batch_size: int | None = None
    num_workers: int = 8
    pin_memory: bool = True
    persistent_workers: bool = True
    shuffle_buffer_size: int = 2000

    def check(self) -> None:
        if self.batch_size < 1:
            raise DataError(f"data.loader.batch_size must be >= 1, got {self.batch_size}.")
        if self.val_batch_size is not None and self.val_batch_size < 1:
            raise DataError(
                f"data.loader.val_batch_size must be >= 1 or null, got {self.val_batch_size}."
            )
        if self.num_workers < 0:
            raise DataError(f"data.loader.num_workers must be >= 0, got {self.num_workers}.")
        if self.shuffle_buffer_size < 1:
            raise DataError(
                f"data.loader.shuffle_buffer_size must be >= 1, got {self.shuffle_buffer_size}."
            )

    @property
    def eval_batch_size(self) -> int:
        return self.val_batch_size if self.val_batch_size is not None else self.batch_size


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation, by timm's ``create_transform`` (defaults: the paper's Table 9).

    Args:
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: horizontal flip probability.
        vflip: vertical flip probability.
        auto_augment: timm RandAugment / AutoAugment spec; null turns it off.
        color_jitter: ColorJitter strength; timm applies it only when auto_augment is null.
        reprob: random erasing probability.
        remode: random erasing fill ("pixel": per-pixel normal noise).
        recount: random erasing count per image.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    hflip: float = 0.5
    vflip: float = 0.0
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float | None = 0.4
    reprob: float = 0.25
    remode: Literal["pixel", "rand", "const"] = "pixel"
    recount: int = 1


@dataclass(frozen=True)
class MixupConfig:
    """timm's Mixup / CutMix, applied on the device to training batches (defaults: Table 9).

    ``data.mixup: null`` (or both alphas 0 and no ``cutmix_minmax``) turns it off.

    Args:
        mixup_alpha: Mixup's Beta(alpha, alpha); 0 disables Mixup.
        cutmix_alpha: CutMix's Beta(alpha, alpha); 0 disables CutMix.
        cutmix_minmax: CutMix box ratio range (overrides cutmix_alpha when set).
        prob: probability of mixing a batch at all.
        switch_prob: probability of CutMix instead of Mixup when both are on.
        mode: "batch" (one draw per batch), "pair" or "elem".
    """

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: Literal["batch", "pair", "elem"] = "batch"

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax is not None


# Flat loader keys and their place in the loader group (both data modules).
LOADER_KEYS: dict[str, str] = {
    k: f"loader.{k}"
    for k in (
        "batch_size",
        "num_workers",
        "pin_memory",
        "persistent_workers",
        "shuffle_buffer_size",
    )
}
# Flat keys of the ImageDataModule before the groups, and where each one lives now.
MOVED_KEYS: dict[str, str] = {
    **LOADER_KEYS,
    **{k: f"augment.{k}" for k in ("scale", "ratio", "hflip", "vflip", "auto_augment")},
    **{k: f"augment.{k}" for k in ("color_jitter", "reprob", "remode", "recount")},
    "mixup": "mixup.mixup_alpha",  # a number where the group now is
    "cutmix": "mixup.cutmix_alpha",
    "cutmix_minmax": "mixup.cutmix_minmax",
    "mixup_prob": "mixup.prob",
    "mixup_switch_prob": "mixup.switch_prob",
    "mixup_mode": "mixup.mode",
}

G = TypeVar("G")


def moved_keys_error(
    keys: Sequence[str], where: str = "", moved: Mapping[str, str] = MOVED_KEYS
) -> DataError:
    """One error for old flat data keys, naming each one's new key."""
    lines = [f"  data.{k} -> data.{moved[k]}" for k in keys]
    place = f" in {where}" if where else ""
    mixup = any(moved[k].startswith("mixup.") for k in keys)
    return DataError(
        f"{len(keys)} data key(s){place} moved into a group:\n"
        + "\n".join(lines)
        + "\nFix: write them under their group, e.g. `data: {loader: {batch_size: 32}}` or "
        "`--data.loader.batch_size=32`"
        + ("; `data.mixup: null` turns Mixup / CutMix off." if mixup else ".")
    )


def as_group(value: Any, cls: type[G], arg: str, *, optional: bool = False) -> G | None:
    """``value`` (a ``cls``, a dict of its fields, or None when ``optional``) as a ``cls``."""
    if value is None and optional:
        return None
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise DataError(
                f"data.{arg} has no field(s) {unknown}. Fields: {sorted(names)}. Fix: remove or "
                f"rename them."
            )
        # lists (YAML, saved hyper-parameters) back to the tuples the fields hold
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    if arg == "mixup" and isinstance(value, (int, float)):
        raise DataError(
            f"data.mixup={value} is a number, but data.mixup is now a group. Fix: write "
            f"data.mixup.mixup_alpha: {value} (and data.mixup.cutmix_alpha for CutMix), or "
            f"data.mixup: null to turn Mixup / CutMix off."
        )
    none = " or null" if optional else ""
    raise DataError(
        f"data.{arg} must be a {cls.__name__} or a dict of its fields{none}, got "
        f"{type(value).__name__} {value!r}."
    )


def group_dict(value: Any) -> dict[str, Any] | None:
    """A group as a plain dict of primitives (for hyper-parameters and checkpoints)."""
    if value is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}


def _data_section(cfg: Any) -> dict[str, Any]:
    if not isinstance(cfg, Mapping):
        return {}
    data = cfg.get("data")
    if not isinstance(data, Mapping):
        return {}
    init = data.get("init_args")  # subclass mode: data: {class_path: ..., init_args: {...}}
    return dict(init) if isinstance(init, Mapping) else dict(data)


def _old_keys(section: Mapping[str, Any], moved: Mapping[str, str]) -> list[str]:
    old = [k for k in section if k in moved and k != "mixup"]
    mixup = section.get("mixup", None)
    numeric = isinstance(mixup, (int, float)) and not isinstance(mixup, bool)
    if "mixup" in section and "mixup" in moved and numeric:
        old.insert(0, "mixup")
    return old


def check_moved_keys(args: Sequence[str], moved: Mapping[str, str] = MOVED_KEYS) -> None:
    """Raise :func:`moved_keys_error` for old flat data keys in command-line arguments.

    Looks at ``--data.KEY[=V]`` flags and at the ``data:`` section of every ``--config`` value
    (a file, or inline YAML as :func:`inceptionnext_pl.cli.expand_bases` writes it), so the user
    reads the new key instead of jsonargparse's "Group 'data' does not accept option 'cutmix'".
    ``moved`` is the data module's table: ``ImageDataModule.moved_keys`` or
    ``SegmentationDataModule.moved_keys``.
    """
    import yaml

    found: list[tuple[str, str]] = []
    items = list(args)
    for i, arg in enumerate(items):
        if arg.startswith("--data."):
            key = arg[len("--data.") :].split("=", 1)[0]
            value = arg.split("=", 1)[1] if "=" in arg else (items[i + 1 : i + 2] or [""])[0]
            if key in moved and (key != "mixup" or _is_number(value)):
                found.append((key, "the command line"))
        config = None
        if arg in ("--config", "-c") and i + 1 < len(items):
            config = items[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        if config is None:
            continue
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as f:
                text, where = f.read(), config
        else:
            text, where = config, "an inline config"
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # not YAML: LightningCLI reports it
        found += [(k, where) for k in _old_keys(_data_section(cfg), moved)]
    if found:
        keys = list(dict.fromkeys(k for k, _ in found))
        places = ", ".join(dict.fromkeys(w for _, w in found))
        raise moved_keys_error(keys, places, moved)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

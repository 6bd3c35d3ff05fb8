"""Checkpoint formats: read any of them, write any of them.

Recognised on reading (``read_checkpoint``), whatever the file extension:

* plain state dicts (``.pth`` / ``.bin`` / ``.safetensors``) with timm keys, which are also the
  official InceptionNeXt release's keys;
* facebook-format ConvNeXt state dicts (``downsample_layers.*``), bare or under ``model``, as the
  paper's Table 1 variants are released;
* training checkpoints that wrap a state dict: timm's ``train.py`` (``state_dict`` /
  ``state_dict_ema``) and facebook / DeiT style (``model`` / ``model_ema``);
* Lightning checkpoints (``.ckpt``) of either task: where the network and its EMA live and how to
  rebuild it is declared in the file by the task that wrote it (``LightningLayout``).

EMA weights are taken only when asked for (``ema=True``): our ``EMA`` callback's average
(``callbacks["EMA"]["state_dict"]``), a timm EMA kept by the LightningModule
(``model_ema.module.*``), the average that Lightning's ``WeightAveraging`` / ``EMAWeightAveraging``
callbacks write into ``state_dict`` (their raw weights are in ``current_model_state``), or the
``*_ema`` entries of training checkpoints. Without it the raw trained weights are read, and asking
for EMA weights from a checkpoint that has none is an error.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from timm.models import clean_state_dict

from ..files import atomic_write_bytes
from ..models.keymaps import from_facebook, is_facebook_format, to_facebook
from .errors import CheckpointFormatError

StateDict = dict[str, torch.Tensor]
Target = Literal["timm", "official", "facebook", "lightning"]
TARGETS: tuple[str, ...] = ("timm", "official", "facebook", "lightning")
LAYOUT_KEY = "inceptionnext_pl"  # the checkpoint entry where a task declares its LightningLayout
LIGHTNING_EMA_PREFIX = "model_ema.module."  # runs of 0.1 kept a timm EMA inside the module


@dataclass(frozen=True)
class LightningLayout:
    """How a task lays out its Lightning checkpoints. Each task declares its own in every file it
    saves (``checkpoint[LAYOUT_KEY]``); this layer reads it from there and knows no task."""

    task: str  # classification | segmentation
    network: str  # state_dict prefix of the network (the module's ``self.model``)
    ema_callback: str | None  # callbacks[ema_callback]["state_dict"] holds the EMA average
    arch: dict[str, Any]  # how to rebuild the network (classification: model_name, num_classes)
    metrics: dict[str, float] = field(default_factory=dict)  # its last evaluation (val/acc1, ...)
    trained: dict[str, int] = field(default_factory=dict)  # Lightning's epoch and step at saving

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, ckpt: dict[str, Any]) -> LightningLayout:
        declared = ckpt.get(LAYOUT_KEY)
        if isinstance(declared, dict):  # fields a later release adds are not this one's to read
            return cls(**{k: v for k, v in declared.items() if k in cls.__dataclass_fields__})
        # Saved before the tasks declared their layout: ImageClassifier's of release 0.1.
        hp = ckpt.get("hyper_parameters") or {}
        arch = {k: hp[k] for k in ("model_name", "num_classes", "model_kwargs") if k in hp}
        task = "classification" if "model_name" in hp else "unknown"
        return cls(task=task, network="model.", ema_callback="EMA", arch=arch)


@dataclass
class Checkpoint:
    """A state dict read from a file, and what was learnt about the file on the way."""

    state_dict: StateDict
    container: str  # lightning | timm-train | wrapped | state-dict | safetensors
    layout: str  # timm | facebook
    ema: bool = False
    has_ema: bool = False
    path: Path | None = None
    lightning: LightningLayout | None = None  # declared by the task, for Lightning checkpoints
    data_hparams: dict[str, Any] = field(default_factory=dict)  # a Lightning run's datamodule's

    @property
    def arch(self) -> dict[str, Any]:
        """How to rebuild the network, where the file says (``model_name``, ``num_classes``, ...)."""
        return dict(self.lightning.arch) if self.lightning else {}

    @property
    def description(self) -> str:
        kind = {
            "lightning": "Lightning checkpoint",
            "timm-train": "timm training checkpoint",
            "wrapped": "training checkpoint",
            "state-dict": "state dict",
            "safetensors": "safetensors state dict",
        }[self.container]
        weights = ", EMA weights" if self.ema else ""
        return f"{kind} ({self.layout} keys{weights})"


# ------------------------------------------------------------------------------ reading
def _safe_globals() -> list[Any]:
    """Harmless globals found in training checkpoints: argparse args and numpy RNG states."""
    import numpy as np

    allowed: list[Any] = [argparse.Namespace, np.ndarray, np.dtype]
    core = getattr(np, "_core", None) or np.core
    allowed.append(core.multiarray._reconstruct)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def load_file(path: str | os.PathLike, *, trust: bool = False) -> Any:
    """Load a safetensors file or a torch pickle (``weights_only`` unless ``trust``)."""
    return _load(Path(path), trust)[0]


def _load(path: Path, trust: bool) -> tuple[Any, bool]:
    """(content, whether it was a safetensors file)."""
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path), device="cpu"), True
        except Exception as e:
            raise CheckpointFormatError(f"{path} is not a readable safetensors file: {e}") from e
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch's zip format, or a legacy pickle
        raise CheckpointFormatError(
            f"{path} is not a PyTorch checkpoint or safetensors file (it starts with {head[:8]!r})."
        )
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False), False
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise CheckpointFormatError(
            f"{path} holds Python objects beyond tensors, so it was not loaded with "
            f"weights_only=True ({first}). If you trust the file, load it with trust=True "
            "(`--trust-pickle` on the command line)."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointFormatError(
            f"{path} is not a PyTorch checkpoint or it is truncated ({e}). "
            "Re-download or re-save it."
        ) from e


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return len(head) > 9 and head[8:9] == b"{"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _strip(sd: dict[str, Any], prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _prefixes(keys: Any) -> list[str]:
    return sorted({k.split(".", 1)[0] + "." for k in keys})


def _no_ema(path: Path) -> CheckpointFormatError:
    return CheckpointFormatError(f"{path} has no EMA weights: leave out ema=True / --ema")


def _from_lightning(
    ckpt: dict[str, Any], path: Path, ema: bool, layout: LightningLayout, prefix: str
) -> tuple[Any, bool]:
    sd = ckpt["state_dict"]
    # Lightning's WeightAveraging callbacks swap the average into `state_dict` on save.
    averaged = "current_model_state" in ckpt
    # Our EMA callback keeps the average in its own state; older runs kept it in the module.
    callbacks = ckpt.get("callbacks") or {}
    callback_ema = (callbacks.get(layout.ema_callback) or {}).get("state_dict")
    timm_ema = callback_ema is not None or any(k.startswith(LIGHTNING_EMA_PREFIX) for k in sd)
    if ema:
        if callback_ema is not None:
            return dict(callback_ema), True
        if timm_ema:
            return _strip(sd, LIGHTNING_EMA_PREFIX), True
        if not averaged:
            raise _no_ema(path)
    elif averaged:
        sd = ckpt["current_model_state"]
    out = _strip(sd, prefix)
    if not out:
        raise CheckpointFormatError(
            f"{path} is a Lightning checkpoint without {prefix!r} weights (its state_dict "
            f"prefixes: {', '.join(_prefixes(sd)) or 'none'}). The LightningModule must keep the "
            "network as `self.model`, or pass prefix= / --prefix with the attribute it uses."
        )
    return out, timm_ema or averaged


def read_checkpoint(
    path: str | os.PathLike,
    *,
    ema: bool = False,
    prefix: str | None = None,
    trust: bool = False,
) -> Checkpoint:
    """Read any supported checkpoint into a state dict (keys as stored, wrappers removed).

    ``prefix`` overrides where a Lightning checkpoint keeps the network (for modules of other
    projects); ours declare it in the file.
    """
    path = Path(path)
    obj, is_safetensors = _load(path, trust)
    data_hparams: dict[str, Any] = {}
    lightning: LightningLayout | None = None
    has_ema = False
    if not isinstance(obj, dict):
        raise CheckpointFormatError(
            f"{path} holds a {type(obj).__name__}, not a state dict. Save `model.state_dict()`, "
            "not the model object."
        )
    if is_safetensors:
        if ema:
            raise _no_ema(path)
        container, sd = "safetensors", obj
    elif "state_dict" in obj and ("pytorch-lightning_version" in obj or "hyper_parameters" in obj):
        container = "lightning"
        lightning = LightningLayout.of(obj)
        sd, has_ema = _from_lightning(obj, path, ema, lightning, prefix or lightning.network)
        data_hparams = dict(obj.get("datamodule_hyper_parameters") or {})
    elif isinstance(obj.get("state_dict"), dict):
        container = "timm-train"
        has_ema = isinstance(obj.get("state_dict_ema"), dict)
        if ema and not has_ema:
            raise _no_ema(path)
        sd = obj["state_dict_ema" if ema else "state_dict"]
    elif isinstance(obj.get("model"), dict):
        container = "wrapped"
        has_ema = isinstance(obj.get("model_ema"), dict)
        if ema and not has_ema:
            raise _no_ema(path)
        sd = obj["model_ema" if ema else "model"]
    elif _is_state_dict(obj):
        if ema:
            raise _no_ema(path)
        container, sd = "state-dict", obj
    else:
        raise CheckpointFormatError(
            f"{path} is a dict with keys {sorted(obj)[:8]} but no state dict this package knows "
            "(expected tensors, or `state_dict` / `model` holding them)."
        )
    sd = clean_state_dict(sd)
    bad = [k for k, v in sd.items() if not torch.is_tensor(v)]
    if bad or not sd:
        raise CheckpointFormatError(
            f"{path}: the state dict is empty or has non-tensor entries ({bad[:5]})."
        )
    layout = "facebook" if is_facebook_format(sd) else "timm"
    return Checkpoint(
        sd,
        container,
        layout,
        ema=ema,
        has_ema=has_ema,
        path=path,
        lightning=lightning,
        data_hparams=data_hparams,
    )


def canonical(ckpt: Checkpoint) -> StateDict:
    """The state dict in the keys of our / timm's models (facebook ConvNeXt -> MetaNeXt)."""
    return from_facebook(ckpt.state_dict) if ckpt.layout == "facebook" else dict(ckpt.state_dict)


# ------------------------------------------------------------------------------ writing
def save_state_dict(state_dict: dict[str, Any], dst: str | os.PathLike) -> Path:
    """Write atomically: ``.safetensors`` as safetensors, anything else with ``torch.save``."""
    dst = Path(dst)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save

        tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
        atomic_write_bytes(dst, save(tensors))
    else:
        buf = io.BytesIO()
        torch.save(state_dict, buf)
        atomic_write_bytes(dst, buf.getvalue())
    return dst


def _dwconv_layout(sd: StateDict) -> tuple[bool, bool]:
    """(is a ConvNeXt variant of ours, uses partial depthwise conv)."""
    convs = {k: v for k, v in sd.items() if re.search(r"\.token_mixer\.conv\.weight$", k)}
    if not convs:
        return False, False
    partial = False
    for k, w in convs.items():
        norm = sd.get(k.replace("token_mixer.conv.weight", "norm.weight"))
        if norm is not None and w.shape[0] < norm.shape[0]:
            partial = True
    return True, partial


def to_target(sd: StateDict, target: str) -> StateDict:
    """Canonical keys -> the key layout of ``target`` (not ``lightning``, see ``lightning_ckpt``)."""
    if target == "timm":
        return dict(sd)
    is_variant, partial = _dwconv_layout(sd)
    if target == "official":
        # The official release stores InceptionNeXt with timm's keys and the ConvNeXt
        # variants in facebook's.
        return to_facebook(sd, partial=partial) if is_variant else dict(sd)
    if target == "facebook":
        if not is_variant:
            raise CheckpointFormatError(
                "Only ConvNeXt-style networks (depthwise-conv token mixer, e.g. the Table 1 "
                "variants) have a facebook format; this state dict has no token_mixer.conv weights."
            )
        return to_facebook(sd, partial=partial)
    raise CheckpointFormatError(f"Unknown target format {target!r}; use one of {TARGETS}")


def lightning_ckpt(
    sd: StateDict, model_name: str, num_classes: int, model_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A weights-only Lightning checkpoint for ``ImageClassifier.load_from_checkpoint``."""
    import lightning

    hparams: dict[str, Any] = {"model_name": model_name, "num_classes": num_classes}
    if model_kwargs:
        hparams["model_kwargs"] = dict(model_kwargs)
    layout = LightningLayout("classification", "model.", None, dict(hparams))  # ImageClassifier's
    return {
        "state_dict": {layout.network + k: v for k, v in sd.items()},
        "hyper_parameters": hparams,
        LAYOUT_KEY: layout.to_dict(),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }


# --------------------------------------------------------------------- convert / export
@dataclass
class ConvertResult:
    dst: Path
    target: str
    source: str
    model_name: str | None
    num_classes: int | None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def timm_call(self) -> str:
        """The ``timm.create_model`` call that loads an exported / converted file."""
        if not self.model_name:
            return ""
        kwargs = "".join(f", {k}={v!r}" for k, v in self.model_kwargs.items())
        overlay = f"file={str(self.dst)!r}"
        if self.num_classes is not None and self.num_classes != 1000:
            kwargs = f", num_classes={self.num_classes}{kwargs}"
            overlay += f", num_classes={self.num_classes}"
        return (
            f"timm.create_model({self.model_name!r}, pretrained=True{kwargs}, "
            f"pretrained_cfg_overlay=dict({overlay}))"
        )


def check_fits(
    sd: StateDict, model_name: str, model_kwargs: dict[str, Any] | None = None, what: str = ""
) -> int:
    """Check that ``sd`` loads strictly into ``create_model(model_name)``; return its class count.

    The model is built on the meta device, so this costs no memory even for the base models.
    """
    from ..models import create_model
    from .matching import classifier_names, diff_state_dicts, mismatch_error

    kwargs = dict(model_kwargs or {})
    kwargs.pop("num_classes", None)
    with torch.device("meta"):
        probe = create_model(model_name, **kwargs)
    weight = next((sd[c + ".weight"] for c in classifier_names(probe) if c + ".weight" in sd), None)
    num_classes = int(weight.shape[0]) if weight is not None else 0
    with torch.device("meta"):
        model = create_model(model_name, num_classes=num_classes, **kwargs)
    diff = diff_state_dicts(sd, model.state_dict())
    if diff:
        raise mismatch_error(
            what or "The state dict", f"{model_name} ({num_classes} classes)", diff
        )
    return num_classes


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    to: str | None = None,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    ema: bool = False,
    prefix: str | None = None,
    trust: bool = False,
) -> ConvertResult:
    """Convert a checkpoint between the official, timm, facebook and Lightning formats.

    ``to`` defaults to ``lightning`` for a ``.ckpt`` destination and ``timm`` otherwise. With
    ``model_name`` (or a Lightning source, which names its model) the weights are checked to load
    strictly into that architecture before anything is written.
    """
    src, dst = Path(src), Path(dst)
    target = to or ("lightning" if dst.suffix == ".ckpt" else "timm")
    if target not in TARGETS:
        raise CheckpointFormatError(f"Unknown target format {target!r}; use one of {TARGETS}")
    ckpt = read_checkpoint(src, ema=ema, prefix=prefix, trust=trust)
    sd = canonical(ckpt)
    name = model_name or ckpt.arch.get("model_name")
    kwargs = model_kwargs if model_kwargs is not None else dict(ckpt.arch.get("model_kwargs") or {})
    num_classes = check_fits(sd, name, kwargs, f"{src} [{ckpt.description}]") if name else None
    if target == "lightning":
        if not name:
            raise CheckpointFormatError(
                "A Lightning checkpoint records its model: pass model_name= / --model NAME."
            )
        if dst.suffix == ".safetensors":
            raise CheckpointFormatError(
                "Lightning checkpoints are pickles: give the destination a .ckpt suffix."
            )
        out: dict[str, Any] = lightning_ckpt(sd, name, int(num_classes or 0), kwargs)
    else:
        out = to_target(sd, target)
    save_state_dict(out, dst)
    return ConvertResult(dst, target, ckpt.description, name, num_classes, kwargs)


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    ema: bool = False,
    model_name: str | None = None,
    prefix: str | None = None,
    trust: bool = False,
) -> ConvertResult:
    """Lightning checkpoint -> plain state dict (``.safetensors`` or ``.pth``) for timm.

    The result loads with ``timm.create_model(name, pretrained=True,
    pretrained_cfg_overlay=dict(file=dst))`` (plus ``num_classes`` when it is not 1000; see
    ``ConvertResult.timm_call``). It is checked to load strictly before it is written.
    """
    ckpt = read_checkpoint(ckpt_path, ema=ema, prefix=prefix, trust=trust)
    if ckpt.container != "lightning":
        raise CheckpointFormatError(
            f"{ckpt_path} is a {ckpt.description}, not a Lightning checkpoint: use "
            "`inceptionnext-zoo convert` for it."
        )
    name = model_name or ckpt.arch.get("model_name")
    if not name:
        raise CheckpointFormatError(
            f"{ckpt_path} does not record its model_name: pass model_name= / --model NAME."
        )
    kwargs = dict(ckpt.arch.get("model_kwargs") or {})
    sd = canonical(ckpt)
    num_classes = check_fits(sd, name, kwargs, f"{ckpt_path} [{ckpt.description}]")
    save_state_dict(sd, dst)
    return ConvertResult(Path(dst), "timm", ckpt.description, name, num_classes, kwargs)

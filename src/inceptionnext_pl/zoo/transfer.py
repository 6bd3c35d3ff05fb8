"""Transfer learning: load a zoo entry or checkpoint file into a model with a new head."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import create_model
from ..models.keymaps import from_facebook
from ..registry import (
    Source,
    UnknownEntryError,
    ZooEntry,
    find_entry,
    get_entry,
    registry_path,
)
from .convert import Checkpoint, StateDict, canonical, check_fits, read_checkpoint
from .download import fetch, fetch_source
from .errors import CheckpointFormatError, ZooError
from .matching import classifier_names, diff_state_dicts, is_classifier_key, mismatch_error
from .matching import model_name as _model_name
from .runs import weights_in

_CKPT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar")


@dataclass
class LoadReport:
    """What ``load_pretrained`` did."""

    source: str
    path: Path
    checkpoint: str
    loaded: list[str]
    classifier: list[str]
    classifier_loaded: bool
    classifier_note: str
    key_mapping: str = "as stored"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    has_ema: bool = False

    def __str__(self) -> str:
        head = "/".join(self.classifier) or "classifier"
        clf = f"{head} {'loaded' if self.classifier_loaded else 'kept as initialised'}"
        text = f"{len(self.loaded)} tensors from {self.path} [{self.checkpoint}]; {clf}"
        if not self.classifier_loaded and self.classifier_note:
            text += f" ({self.classifier_note})"
        skipped = len(self.missing) + len(self.unexpected) + len(self.mismatched)
        if skipped:
            text += (
                f"; NOT loaded: {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.mismatched)} mismatched key(s)"
            )
        if self.has_ema and "EMA" not in self.checkpoint:
            text += "; the file also holds EMA weights (ema=True)"
        return text


def resolve(source: str | os.PathLike, *, progress: bool = True) -> tuple[Path, ZooEntry | None]:
    """A local file for ``source``: an existing file, a directory (a run's newest ``last.ckpt``, or
    a hub-format folder's weights), a zoo name, an https URL or ``hf-hub:ID[:FILE]``."""
    path = Path(source)
    if path.is_file():
        return path, None
    if path.is_dir():
        return weights_in(path), None
    text = str(source)
    if text.startswith("hf-hub:"):
        repo, _, file = text[len("hf-hub:") :].partition(":")
        return fetch_source(
            Source(hf=repo, file=file or "model.safetensors"), progress=progress
        ), None
    if text.startswith(("https://", "http://")):
        return fetch_source(Source(url=text), progress=progress), None
    entry = find_entry(text)
    if entry is not None:
        return fetch(entry, progress=progress), entry
    if path.suffix in _CKPT_SUFFIXES or os.sep in text:
        raise FileNotFoundError(
            f"No checkpoint file at {path}. Pass an existing file, a zoo name "
            "(`inceptionnext-zoo list`), an https URL or hf-hub:<repo id>."
        )
    try:
        get_entry(text)
    except UnknownEntryError as e:
        raise UnknownEntryError(
            f"pretrained={text!r} is neither an existing file or directory nor a zoo entry. {e}"
        ) from None
    raise AssertionError("unreachable")


def pretrained_state_dict(cfg: Mapping[str, Any], overlay: Mapping[str, Any]) -> StateDict:
    """The weights of timm's ``pretrained=True`` for our models, found and read as every loader's.

    A ``file``, ``hf_hub_id`` or ``url`` given in ``pretrained_cfg_overlay`` (or a ``local-dir:``
    folder) is that source; otherwise the zoo entry named ``<architecture>.<tag>``, so the mirror,
    the registry variable and the sha256 checks apply as to ``load_pretrained``.
    """
    if overlay.get("file") or cfg.get("source") == "local-dir":
        source = str(cfg["file"])
    elif overlay.get("hf_hub_id"):
        source = f"hf-hub:{cfg['hf_hub_id']}:{cfg.get('hf_hub_filename') or 'model.safetensors'}"
    elif overlay.get("url"):
        source = str(cfg["url"])
    else:
        arch, tag = cfg.get("architecture"), cfg.get("tag")
        source = f"{arch}.{tag}" if tag else str(arch)
        if find_entry(source) is None:
            raise ZooError(
                f"{source} has no weights in the zoo registry ({registry_path()}). Pass "
                "pretrained_cfg_overlay=dict(file=PATH) with a checkpoint, or pretrained=False."
            )
    path, _ = resolve(source)
    return canonical(read_checkpoint(path))


def _filter_fn(model: nn.Module) -> Callable | None:
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


# What a key-remapping filter raises on a layout it was not written for; anything else is a bug.
_FILTER_MISMATCH = (KeyError, ValueError, RuntimeError, IndexError)


def adapt_keys(ckpt: Checkpoint, model: nn.Module) -> tuple[str, StateDict, list[str]]:
    """The reading of the file's keys that fits ``model`` best, and why other readings failed.

    Tried: the keys as stored; facebook ConvNeXt -> MetaNeXt; and the architecture's own
    ``checkpoint_filter_fn`` (timm's remap their original release formats, e.g. Swin's).
    """
    target = set(model.state_dict())
    options: list[tuple[str, StateDict]] = [("as stored", ckpt.state_dict)]
    failed: list[str] = []
    if ckpt.layout == "facebook":
        options.append(("facebook ConvNeXt -> timm keys", from_facebook(ckpt.state_dict)))
    fn = _filter_fn(model)
    if fn is not None:
        name = f"{fn.__module__}.checkpoint_filter_fn"
        try:
            options.append((name, fn(dict(ckpt.state_dict), model)))
        except _FILTER_MISMATCH as e:  # written for other layouts: the other readings remain
            failed.append(f"{name} could not read the file: {type(e).__name__}: {e}")
    mapping, sd = max(options, key=lambda o: len(target & set(o[1])))
    return mapping, sd, failed


def _hint(model: nn.Module, entry: ZooEntry | None, ckpt: Checkpoint) -> str:
    trained = entry.arch if entry else ckpt.arch.get("model_name")
    where = f"zoo entry {entry.name!r}" if entry else "the checkpoint"
    first = f"{where} is for {trained!r}; build that model. " if trained else ""
    return (
        f"{first}Use the architecture (and model kwargs) the checkpoint was trained with, "
        "or strict_backbone=False to load only the matching tensors."
    )


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike,
    *,
    strict_backbone: bool = True,
    ema: bool = False,
    progress: bool = True,
) -> LoadReport:
    """Load every backbone tensor of ``source`` into ``model``; the classifier only if it fits.

    ``source`` is a zoo name, a file in any format ``read_checkpoint`` knows (official / timm /
    facebook ConvNeXt / Lightning / training checkpoints), an https URL or ``hf-hub:<repo id>``.
    The classifier (``model.get_classifier()``, e.g. ``head.fc2``) is loaded when the file has one
    of the same shape, and otherwise keeps the model's fresh initialisation. With
    ``strict_backbone`` (default) a backbone key that is missing, unexpected or of another shape is
    an error listing them all, and nothing is loaded; without it only matching tensors load and the
    rest is reported.
    """
    path, entry = resolve(source, progress=progress)
    ckpt = read_checkpoint(path, ema=ema)
    return load_checkpoint(model, ckpt, strict_backbone=strict_backbone, source=source, entry=entry)


def load_checkpoint(
    model: nn.Module,
    ckpt: Checkpoint,
    *,
    strict_backbone: bool = True,
    source: str | os.PathLike | None = None,
    entry: ZooEntry | None = None,
) -> LoadReport:
    """``load_pretrained`` for a checkpoint already read (``read_checkpoint``)."""
    path = ckpt.path
    source = path if source is None else source
    mapping, sd, failed = adapt_keys(ckpt, model)
    target = model.state_dict()
    clf = classifier_names(model)
    diff = diff_state_dicts(sd, target, skip=clf)
    if diff and strict_backbone:
        raise mismatch_error(
            f"Checkpoint {path} [{ckpt.description}]",
            f"the backbone of {_model_name(model)}",
            diff,
            " ".join([*failed, _hint(model, entry, ckpt)]),
        )
    bad = {k for k, _, _ in diff.mismatched}
    to_load = {
        k: sd[k] for k in target if k in sd and k not in bad and not is_classifier_key(k, clf)
    }
    model_clf = [k for k in target if is_classifier_key(k, clf)]
    file_clf = [k for k in sd if is_classifier_key(k, clf)]
    if not model_clf:
        ok, note = False, "the model has no classifier"
    elif not file_clf:
        ok, note = False, "the checkpoint has no classifier weights"
    else:
        shapes = {
            k: (tuple(sd[k].shape) if k in sd else None, tuple(target[k].shape)) for k in model_clf
        }
        ok = set(file_clf) == set(model_clf) and all(a == b for a, b in shapes.values())
        k0 = next(k for k in model_clf if k.endswith("weight")) if not ok else ""
        note = "" if ok else f"checkpoint {shapes[k0][0]} vs model {shapes[k0][1]} for {k0}"
    if ok:
        to_load.update({k: sd[k] for k in model_clf})
    with torch.no_grad():
        model.load_state_dict(to_load, strict=False)
    return LoadReport(
        source=str(source),
        path=path,
        checkpoint=ckpt.description,
        loaded=sorted(to_load),
        classifier=clf,
        classifier_loaded=ok,
        classifier_note=note,
        key_mapping=mapping,
        missing=diff.missing,
        unexpected=diff.unexpected,
        mismatched=diff.mismatched,
        has_ema=ckpt.has_ema,
    )


def model_from(
    ckpt: Checkpoint, entry: ZooEntry | None = None, model_name: str | None = None
) -> tuple[nn.Module, LoadReport]:
    """The classifier a checkpoint declares (a Lightning run's, or a zoo entry's architecture;
    ``model_name`` for a file that names none), built with the file's class count, loaded strictly."""
    if ckpt.lightning is not None and ckpt.lightning.task != "classification":
        raise CheckpointFormatError(
            f"{ckpt.path} is a Lightning checkpoint of a {ckpt.lightning.task} module, not of "
            "ImageClassifier: only classifiers rebuild from a checkpoint. Build the network "
            "yourself and load it with load_pretrained."
        )
    arch = ckpt.arch or ({"model_name": entry.arch} if entry else {})
    name = model_name or arch.get("model_name")
    if not name:
        raise CheckpointFormatError(
            f"{ckpt.path} [{ckpt.description}] does not say which architecture it holds: build "
            "the model yourself (create_model(NAME)) and load it with load_pretrained."
        )
    kwargs = dict(arch.get("model_kwargs") or {})
    num_classes = check_fits(canonical(ckpt), name, kwargs, f"{ckpt.path} [{ckpt.description}]")
    model = create_model(name, num_classes=num_classes, **kwargs)
    report = load_checkpoint(model, ckpt, entry=entry)
    return model.eval(), report


def model_from_checkpoint(
    source: str | os.PathLike, *, ema: bool = False, progress: bool = True
) -> tuple[nn.Module, Checkpoint, LoadReport]:
    """Rebuild the classifier that ``source`` holds, in eval mode: a run directory or Lightning
    checkpoint of ``ImageClassifier`` (raw or ``ema``), a zoo name, or any file with the
    architecture declared. The checkpoint comes back too, with the run's data settings."""
    path, entry = resolve(source, progress=progress)
    ckpt = read_checkpoint(path, ema=ema)
    model, report = model_from(ckpt, entry)
    return model, ckpt, report

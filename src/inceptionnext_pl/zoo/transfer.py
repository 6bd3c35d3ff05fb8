"""Transfer learning: load a zoo entry or checkpoint file into a model with a new head."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .convert import Checkpoint, StateDict, read_checkpoint
from .download import ProgressHook, fetch, fetch_source
from .errors import UnknownEntryError
from .keymaps import from_facebook
from .matching import classifier_names, diff_state_dicts, is_classifier_key, mismatch_error
from .matching import model_name as _model_name
from .registry import Source, ZooEntry, find_entry, get_entry

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


def resolve(
    source: str | os.PathLike, *, progress: bool | ProgressHook = True
) -> tuple[Path, ZooEntry | None]:
    """A local file for ``source``: an existing path, a zoo name, an https URL or ``hf-hub:ID``."""
    path = Path(source)
    if path.is_file():
        return path, None
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
            f"pretrained={text!r} is neither an existing file nor a zoo entry. {e}"
        ) from None
    raise AssertionError("unreachable")


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
    trained = entry.arch if entry else ckpt.hparams.get("model_name")
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
    progress: bool | ProgressHook = True,
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

"""Backbone / classifier split of a model, and comparison of a state dict against it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import StateDictMismatchError

# BatchNorm's step counter is not a weight; files without it (older exports) still load.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
_SHOWN = 20


def model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def classifier_names(model: nn.Module) -> list[str]:
    """Module names of the classifier(s), e.g. ``['head.fc2']`` for InceptionNeXt.

    From the pretrained config's ``classifier`` entry, together with whatever module
    ``model.get_classifier()`` returns (the two agree for timm models and ours).
    """
    modules = dict(model.named_modules())
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    declared = cfg.get("classifier")
    names = [n for n in ([declared] if isinstance(declared, str) else list(declared or ())) if n]
    names = [n for n in names if n in modules]
    if hasattr(model, "get_classifier"):
        clf = model.get_classifier()
        clfs = clf if isinstance(clf, tuple | list) else (clf,)
        names += [n for n, m in modules.items() if n and any(m is c for c in clfs)]
    return list(dict.fromkeys(names))


def is_classifier_key(key: str, classifiers: list[str]) -> bool:
    return any(key.startswith(c + ".") for c in classifiers)


def split_parameters(model: nn.Module) -> tuple[list[str], list[str]]:
    """(backbone parameter names, classifier parameter names), e.g. to freeze the backbone.

    The classifier is only the final layer (``head.fc2`` for InceptionNeXt): ``head.fc1`` and
    ``head.norm`` are pretrained and belong to the backbone side.
    """
    clf = classifier_names(model)
    backbone, head = [], []
    for name, _ in model.named_parameters():
        (head if is_classifier_key(name, clf) else backbone).append(name)
    return backbone, head


def freeze_backbone(model: nn.Module, frozen: bool = True) -> list[str]:
    """Set ``requires_grad = not frozen`` on every backbone parameter; returns their names.

    BatchNorm layers keep updating their running statistics in train mode; call ``.eval()`` on
    them as well for a fully frozen backbone.
    """
    backbone, _ = split_parameters(model)
    params = dict(model.named_parameters())
    for name in backbone:
        params[name].requires_grad_(not frozen)
    return backbone


@dataclass
class Diff:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


def diff_state_dicts(
    file_sd: dict[str, torch.Tensor],
    model_sd: dict[str, torch.Tensor],
    skip: list[str] | None = None,
) -> Diff:
    """Missing, unexpected and shape-mismatched keys, ignoring keys under the ``skip`` modules."""
    skip = skip or []
    d = Diff()
    for k, v in model_sd.items():
        if is_classifier_key(k, skip):
            continue
        if k not in file_sd:
            if not k.endswith(OPTIONAL_SUFFIXES):
                d.missing.append(k)
        elif tuple(file_sd[k].shape) != tuple(v.shape):
            d.mismatched.append((k, tuple(file_sd[k].shape), tuple(v.shape)))
    d.unexpected = [k for k in file_sd if k not in model_sd and not is_classifier_key(k, skip)]
    return d


def _listing(items: list[str]) -> str:
    lines = [f"    {x}" for x in items[:_SHOWN]]
    if len(items) > _SHOWN:
        lines.append(f"    ... and {len(items) - _SHOWN} more")
    return "\n".join(lines)


def mismatch_error(what: str, target: str, diff: Diff, hint: str = "") -> StateDictMismatchError:
    """One error that lists every mismatched, missing and unexpected key."""
    parts = [f"{what} does not fit {target}:"]
    if diff.mismatched:
        parts.append(f"  {len(diff.mismatched)} shape mismatch(es) (key: checkpoint vs model):")
        parts.append(_listing([f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in diff.mismatched]))
    if diff.missing:
        parts.append(f"  {len(diff.missing)} key(s) of the model missing from the checkpoint:")
        parts.append(_listing(diff.missing))
    if diff.unexpected:
        parts.append(f"  {len(diff.unexpected)} key(s) of the checkpoint not in the model:")
        parts.append(_listing(diff.unexpected))
    parts.append(hint or "Use the architecture (and model kwargs) the checkpoint was trained with.")
    return StateDictMismatchError("\n".join(parts))

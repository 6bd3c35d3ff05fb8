"""Key layouts of foreign checkpoint formats, beside the architectures they map onto: one table
per format, read in both directions (timm's ``pretrained=True`` reads them through
``checkpoint_filter_fn``; the weights layer reads and writes either layout with them).
"""

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from timm.models import clean_state_dict

StateDict = dict[str, torch.Tensor]


class KeyRule(NamedTuple):
    """``facebook`` and ``ours`` are key prefixes; ``{i}`` and ``{j}`` are indices, ``{conv}`` is
    ``conv.`` in the release's PartialConv2d and empty in a plain depthwise conv."""

    facebook: str
    ours: str
    pointwise: bool = False  # nn.Linear (2-D weight) in facebook's code, 1x1 conv (4-D) in ours


# facebook ConvNeXt (the layout of the paper's Table 1 release) <-> MetaNeXt / timm keys.
# The first rule that matches a key wins, in either direction.
FACEBOOK_RULES: tuple[KeyRule, ...] = (
    KeyRule("downsample_layers.0.{j}.", "stem.{j}."),
    KeyRule("downsample_layers.{i}.{j}.", "stages.{i}.downsample.{j}."),
    KeyRule("stages.{i}.{j}.dwconv.{conv}", "stages.{i}.blocks.{j}.token_mixer.conv."),
    KeyRule("stages.{i}.{j}.pwconv1.", "stages.{i}.blocks.{j}.mlp.fc1.", pointwise=True),
    KeyRule("stages.{i}.{j}.pwconv2.", "stages.{i}.blocks.{j}.mlp.fc2.", pointwise=True),
    KeyRule("stages.{i}.{j}.norm.", "stages.{i}.blocks.{j}.norm."),
    KeyRule("stages.{i}.{j}.gamma", "stages.{i}.blocks.{j}.gamma"),
    KeyRule("norm.", "head.norm."),
    KeyRule("head.", "head.fc."),
)

_FIELD = re.compile(r"\{(\w+)\}")


def _pattern(template: str) -> re.Pattern[str]:
    """A template as an anchored regex: ``{i}``/``{j}`` match digits, ``{conv}`` an optional ``conv.``."""
    out, pos = [], 0
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name = m.group(1)
        out.append(r"(?P<conv>(?:conv\.)?)" if name == "conv" else rf"(?P<{name}>\d+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out))


_FROM_FB = [(_pattern(r.facebook), r) for r in FACEBOOK_RULES]
_TO_FB = [(_pattern(r.ours), r) for r in FACEBOOK_RULES]


def _convert(
    state_dict: Mapping[str, torch.Tensor],
    rules: list[tuple[re.Pattern[str], KeyRule]],
    target: str,
    fields: dict[str, str],
    ndim: int,
) -> StateDict:
    out: StateDict = {}
    for key, value in state_dict.items():
        new = key
        for pattern, rule in rules:
            m = pattern.match(key)
            if m is None:
                continue
            template = getattr(rule, target)
            new = template.format(**(m.groupdict() | fields)) + key[m.end() :]
            if rule.pointwise and new.endswith(".weight") and value.ndim != ndim:
                value = value[:, :, None, None] if ndim == 4 else value[:, :, 0, 0]
            break
        out[new] = value
    return out


def is_facebook_format(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("downsample_layers.") for k in state_dict)


def from_facebook(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """facebook ConvNeXt keys (nn.Linear pointwise layers) -> MetaNeXt keys (1x1 convs)."""
    return _convert(state_dict, _FROM_FB, "ours", {}, ndim=4)


def to_facebook(state_dict: Mapping[str, torch.Tensor], partial: bool) -> StateDict:
    """MetaNeXt keys -> facebook ConvNeXt keys (``partial``: the release's PartialConv2d names)."""
    return _convert(state_dict, _TO_FB, "facebook", {"conv": "conv." if partial else ""}, ndim=2)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: Any = None) -> StateDict:
    """timm's ``pretrained_filter_fn`` for our models: unwrap, then read either key layout.

    URL downloads reach it as saved (the releases keep flat state dicts, some trainers wrap them
    in ``model`` / ``state_dict``); facebook-format ConvNeXt keys become MetaNeXt keys.
    """
    for wrapper in ("state_dict", "model"):
        inner = state_dict.get(wrapper)
        if isinstance(inner, Mapping):
            state_dict = inner
            break
    state_dict = clean_state_dict(dict(state_dict))
    return from_facebook(state_dict) if is_facebook_format(state_dict) else state_dict

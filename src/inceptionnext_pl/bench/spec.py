"""Benchmark rows as model specs: ``NAME`` or ``NAME:key=value[,key=value]``.

The keys are ``create_model`` keyword arguments, so one run can time the same network with
different options side by side, e.g. ``inceptionnext_tiny:fast=on inceptionnext_tiny:fast=off``.
Values are Python literals where they parse as one (``7``, ``0.25``, ``True``), else strings.
"""

from __future__ import annotations

import ast
from typing import Any

from ..errors import InceptionNextError


class SpecError(InceptionNextError, ValueError):
    """A model spec that does not parse; the message shows the expected form."""


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"inceptionnext_tiny:fast=on"`` -> ``("inceptionnext_tiny", {"fast": "on"})``."""
    name, sep, rest = str(spec).partition(":")
    kwargs: dict[str, Any] = {}
    if sep:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip().isidentifier():
                raise SpecError(
                    f"model spec {spec!r}: {item!r} is not key=value; write NAME:key=value[,...], "
                    "e.g. inceptionnext_tiny:fast=on"
                )
            kwargs[key.strip()] = _value(value.strip())
    return name, kwargs


def format_kwargs(kwargs: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in kwargs.items())

"""The zoo registry: ``checkpoints/registry.yaml`` read into typed entries.

The facts of every set of weights (sources, hashes, preprocessing, licence, paper row) are written
once, in that file. This module only reads them, and imports nothing but the paper's figures and
the error base, so that every room can: the models take timm's pretrained configs from it, the
weights layer (``zoo``) its sources.

The file is looked up in this order: ``$INCEPTIONNEXT_ZOO_REGISTRY``, the copy beside this module
(``registry.yaml``, a link to the repository's file that wheels carry as package data), and the
repository checkout's ``checkpoints/registry.yaml``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import InceptionNextError
from .paper import PAPER


class RegistryError(InceptionNextError, ValueError):
    """A registry file that cannot be read, or a source asked for what it does not have."""


class UnknownEntryError(RegistryError, KeyError):
    """A name that is neither a zoo entry nor an existing file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


REGISTRY_ENV = "INCEPTIONNEXT_ZOO_REGISTRY"
# A mirror of the release files: every `url` source is fetched from MIRROR/<file name> instead.
MIRROR_ENV = "INCEPTIONNEXT_ZOO_MIRROR"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Source:
    """Where one file of an entry can be fetched: a URL or a Hugging Face hub repo."""

    url: str | None = None
    hf: str | None = None
    file: str = "model.safetensors"
    revision: str | None = None
    sha256: str | None = None
    format: str = "timm"

    @property
    def kind(self) -> str:
        return "url" if self.url else "hf"

    @property
    def key(self) -> str:
        """Stable identity of the file, used for recorded hashes (mirrors share it)."""
        if self.url:
            return self.url
        return f"hf://{self.hf}/{self.file}@{self.revision or 'main'}"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1] if self.url else self.file

    def resolved_url(self) -> str:
        """The URL to fetch, honouring ``$INCEPTIONNEXT_ZOO_MIRROR``."""
        if not self.url:
            raise RegistryError(f"{self.key} is a hub source, not a URL")
        mirror = os.environ.get(MIRROR_ENV)
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url

    def describe(self) -> str:
        return self.url if self.url else f"hf-hub:{self.hf} ({self.file})"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch: str
    input_size: tuple[int, int, int]
    crop_pct: float
    interpolation: str
    license: str
    sources: tuple[Source, ...]
    group: str = ""
    timm_arch: str | None = None
    aliases: tuple[str, ...] = ()
    top1: float | None = None
    top1_ref: str = ""
    params_m: float | None = None
    notes: str = ""

    @property
    def resolution(self) -> int:
        return self.input_size[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "timm_arch": self.timm_arch,
            "aliases": list(self.aliases),
            "group": self.group,
            "input_size": list(self.input_size),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "top1": self.top1,
            "top1_ref": self.top1_ref,
            "params_m": self.params_m,
            "license": self.license,
            "notes": self.notes,
            "sources": [
                {k: v for k, v in vars(s).items() if v is not None and not (k == "file" and s.url)}
                for s in self.sources
            ],
        }


def registry_path() -> Path:
    """The registry file in use (see the module docstring for the search order)."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise RegistryError(f"${REGISTRY_ENV}={env} is not a file: point it at a registry.yaml")
        return path
    here = Path(__file__).resolve()
    for path in (
        Path(__file__).with_name("registry.yaml"),
        here.parents[2] / "checkpoints" / "registry.yaml",
    ):
        if path.is_file():
            return path
    raise RegistryError(
        "The zoo registry was not found (looked beside inceptionnext_pl/registry.py and in the checkout's "
        f"checkpoints/). Set ${REGISTRY_ENV} to a registry.yaml."
    )


def _source(raw: Any, where: str) -> Source:
    if not isinstance(raw, dict) or ("url" in raw) == ("hf" in raw):
        raise RegistryError(f"{where}: each source needs exactly one of `url` or `hf`")
    unknown = set(raw) - {"url", "hf", "file", "revision", "sha256", "format"}
    if unknown:
        raise RegistryError(f"{where}: unknown source field(s) {sorted(unknown)}")
    sha = raw.get("sha256")
    if sha is not None and not _SHA256.match(str(sha)):
        raise RegistryError(f"{where}: sha256 must be 64 lowercase hex digits or null, got {sha!r}")
    url = raw.get("url")
    if url is not None and not str(url).startswith("https://"):
        raise RegistryError(f"{where}: source URLs must be https, got {url!r}")
    return Source(
        url=url,
        hf=raw.get("hf"),
        file=raw.get("file", "model.safetensors"),
        revision=raw.get("revision"),
        sha256=sha,
        format=raw.get("format", "timm"),
    )


_REQUIRED = ("arch", "input_size", "crop_pct", "interpolation", "license", "sources")
_KNOWN = set(_REQUIRED) | {
    "timm_arch",
    "aliases",
    "group",
    "top1",
    "top1_ref",
    "params_m",
    "notes",
    "paper",
}


def _paper_fields(name: str, raw: dict[str, Any], where: str) -> dict[str, Any]:
    """top1, top1_ref and params_m from the row of ``inceptionnext_pl.paper`` that the entry's
    ``paper`` names, unless the entry sets them itself."""
    key = raw.get("paper")
    row = None
    if key is not None:
        row = PAPER.get(str(key))
        if row is None:
            raise RegistryError(
                f"{where}: {name}.paper is {key!r}, which is not a row of inceptionnext_pl.paper; "
                f"use one of {sorted(PAPER)}"
            )
    fields = {
        "top1": row.top1 if row else None,
        "top1_ref": f"paper {row.ref}" if row else "",
        "params_m": row.params_m if row else None,
    }
    fields.update({k: raw[k] for k in fields if k in raw})
    return fields


def _entry(name: str, raw: Any, where: str) -> ZooEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: entry {name!r} must be a mapping")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise RegistryError(f"{where}: entry {name!r} lacks {missing}")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise RegistryError(f"{where}: entry {name!r} has unknown field(s) {sorted(unknown)}")
    size = tuple(int(v) for v in raw["input_size"])
    if len(size) != 3:
        raise RegistryError(
            f"{where}: {name}.input_size must be [C, H, W], got {raw['input_size']}"
        )
    if raw["interpolation"] not in INTERPOLATIONS:
        raise RegistryError(f"{where}: {name}.interpolation must be one of {INTERPOLATIONS}")
    crop = float(raw["crop_pct"])
    if not 0.0 < crop <= 1.0:
        raise RegistryError(f"{where}: {name}.crop_pct must be in (0, 1], got {crop}")
    paper = _paper_fields(name, raw, where)
    top1 = paper["top1"]
    if top1 is not None and not 0.0 < float(top1) < 100.0:
        raise RegistryError(f"{where}: {name}.top1 must be a percentage or null, got {top1}")
    sources = tuple(
        _source(s, f"{where}: {name}.sources[{i}]") for i, s in enumerate(raw["sources"] or [])
    )
    if not sources:
        raise RegistryError(f"{where}: entry {name!r} needs at least one source")
    return ZooEntry(
        name=name,
        arch=str(raw["arch"]),
        input_size=size,  # type: ignore[arg-type]
        crop_pct=crop,
        interpolation=str(raw["interpolation"]),
        license=str(raw["license"]),
        sources=sources,
        group=str(raw.get("group", "")),
        timm_arch=raw.get("timm_arch"),
        aliases=tuple(raw.get("aliases") or ()),
        top1=None if top1 is None else float(top1),
        top1_ref=str(paper["top1_ref"]),
        params_m=None if paper["params_m"] is None else float(paper["params_m"]),
        notes=str(raw.get("notes", "")),
    )


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> dict[str, ZooEntry]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise RegistryError(f"{path}: expected a mapping with an `entries` mapping")
    entries = {name: _entry(name, raw, path) for name, raw in data["entries"].items()}
    seen: dict[str, str] = {}
    for e in entries.values():
        for alias in (e.name, *e.aliases):
            if alias in seen and seen[alias] != e.name:
                raise RegistryError(f"{path}: name {alias!r} is used by {seen[alias]} and {e.name}")
            seen[alias] = e.name
    return entries


def load_registry(path: str | os.PathLike | None = None) -> dict[str, ZooEntry]:
    """All entries, by name, in file order."""
    p = Path(path) if path is not None else registry_path()
    return _load(str(p), p.stat().st_mtime_ns)


def list_entries() -> list[ZooEntry]:
    return list(load_registry().values())


def find_entry(name: str) -> ZooEntry | None:
    """The entry called ``name`` (or with that alias), else None."""
    entries = load_registry()
    if name in entries:
        return entries[name]
    for e in entries.values():
        if name in e.aliases:
            return e
    return None


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name``; an unknown name raises with the closest names."""
    entry = find_entry(name)
    if entry is not None:
        return entry
    names = [n for e in load_registry().values() for n in (e.name, *e.aliases)]
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownEntryError(
        f"{name!r} is not in the model zoo.{hint} `inceptionnext-zoo list` prints every entry."
    )

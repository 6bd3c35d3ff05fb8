"""Fetch zoo files into the caches torch.hub and Hugging Face keep, and verify them.

Both kinds of source are downloaded by ``huggingface_hub``: hub repos by ``hf_hub_download`` into
its cache (``$HF_HOME``), release URLs by its ``http_get`` into ``torch.hub.get_dir()/checkpoints``
(so ``$TORCH_HOME`` moves them, and ``torch.hub`` / timm find the same files). Its client resumes
a dropped connection with a Range request, retries, and refuses a body shorter than announced
(``torch.hub.download_url_to_file`` keeps a truncated body as if complete). ``HF_HUB_OFFLINE=1``
stops both. This module adds what the zoo promises on top: a URL download goes to
``<file>.part``, which a later run resumes, and becomes the file only once its sha256 matches; one
process downloads while the others (DDP ranks) wait; and sources that publish no sha256 are
trusted on first download, recorded in ``<cache>/inceptionnext_pl-sha256.json`` and checked on
every later use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

from ..files import atomic_write_bytes
from ..registry import Source, ZooEntry, get_entry
from .errors import ChecksumError, DownloadError, ZooError

HASH_STORE_NAME = "inceptionnext_pl-sha256.json"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where URL sources are cached: ``torch.hub.get_dir()/checkpoints`` (follows ``$TORCH_HOME``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


# ----------------------------------------------------------------------------- hashes
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class HashStore:
    """sha256 recorded on first download, per source key, in a JSON file in the user's cache."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / HASH_STORE_NAME

    def _read(self) -> dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as e:
            raise ZooError(
                f"The hash store {self.path} is not valid JSON ({e}); delete it to start afresh "
                "(recorded hashes are then recorded again on the next download)."
            ) from e
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        rec = self._read().get(key)
        return rec.get("sha256") if isinstance(rec, dict) else None

    def _update(self, change: Callable[[dict[str, dict]], None]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            data = self._read()
            change(data)
            atomic_write_bytes(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def record(self, key: str, sha256: str, size: int) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")

        def change(data: dict[str, dict]) -> None:
            data[key] = {"sha256": sha256, "size": size, "recorded": stamp}

        self._update(change)

    def forget(self, key: str) -> bool:
        found = key in self._read()
        if found:
            self._update(lambda data: data.pop(key, None))
        return found


# --------------------------------------------------------------------------- download
def _checksum_message(what: str, got: str, expected: str, published: bool) -> str:
    origin = "published" if published else "recorded on the first download"
    fix = (
        "The file is corrupt or was replaced upstream. Retry the download; if the registry's hash "
        "is outdated, update checkpoints/registry.yaml."
        if published
        else "The file is corrupt or was replaced upstream. Retry the download; if the upstream "
        "file was updated on purpose, drop the recorded hash with `inceptionnext-zoo download "
        "NAME --forget-hash`."
    )
    return f"sha256 mismatch for {what}: got {got}, expected {expected} ({origin}). {fix}"


def _quiet_tqdm() -> type:
    from tqdm.auto import tqdm

    class Quiet(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


def _copy_local(url: str, part: Path) -> None:
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    src = Path(url2pathname(urlparse(url).path))
    if not src.is_file():
        raise DownloadError(f"{url}: no such file")
    shutil.copyfile(src, part)


def download_url(
    url: str, dst: str | os.PathLike, *, sha256: str | None = None, progress: bool = True
) -> str:
    """Download ``url`` to ``dst`` atomically and return the file's sha256.

    The bytes go to ``dst + '.part'``, which a dropped connection (or a later run) resumes; on a
    ``sha256`` mismatch the ``.part`` is deleted and ``ChecksumError`` raised, so ``dst`` is only
    ever created complete and verified. Concurrent calls for the same ``dst`` (DDP ranks, say)
    wait for each other and download once; an existing ``dst`` is only verified.
    """

    def check(digest: str) -> None:
        if sha256 is not None and digest != sha256:
            raise ChecksumError(_checksum_message(url, digest, sha256, published=True))

    return _download(url, dst, check, progress)


def _download(
    url: str, dst: str | os.PathLike, check: Callable[[str], None], progress: bool
) -> str:
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled
    from huggingface_hub.file_download import http_get

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    with FileLock(str(dst) + ".lock"):
        if dst.exists():  # another process (e.g. a DDP rank) finished it while we waited
            digest = sha256_file(dst)
            check(digest)
            return digest
        quiet = {} if progress else {"tqdm_class": _quiet_tqdm()}
        for fresh_start in (False, True):
            have = part.stat().st_size if part.exists() else 0
            try:
                if url.startswith("file:"):  # a mirror on a shared disk
                    _copy_local(url, part)
                else:
                    with open(part, "ab") as f:
                        http_get(url, f, resume_size=have, displayed_filename=dst.name, **quiet)
                break
            except HfHubHTTPError as e:
                status = getattr(e.response, "status_code", None)
                if status == 416 or not have:  # 416: the .part is no prefix the server extends
                    part.unlink(missing_ok=True)
                if status == 416 and not fresh_start:
                    continue
                raise DownloadError(f"{url}: HTTP {status}") from e
            except (HTTPError, OfflineModeIsEnabled) as e:  # no answer, or the body broke off
                kept = ""
                if part.exists() and part.stat().st_size:
                    kept = f"; the partial file {part} is kept and the next run resumes it"
                else:
                    part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: {type(e).__name__}: {e}{kept}") from e
        digest = sha256_file(part)
        try:
            check(digest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dst)
        return digest


# ----------------------------------------------------------------------------- sources
def _expected(source: Source, store: HashStore) -> tuple[str | None, bool]:
    """(expected sha256, published?) for a source."""
    if source.sha256:
        return source.sha256, True
    return store.get(source.key), False


def _verify(
    source: Source, path: Path, store: HashStore, published_hint: str | None = None
) -> None:
    """Check ``path`` against the published / recorded hash; record it when there is none."""
    expected, published = _expected(source, store)
    if expected is None and published_hint:
        expected, published = published_hint, True
    digest = sha256_file(path)
    if expected is None:
        store.record(source.key, digest, path.stat().st_size)
        return
    if digest != expected:
        raise ChecksumError(
            _checksum_message(f"{source.describe()} ({path})", digest, expected, published)
            + f" To fetch it again, delete {path} or use `inceptionnext-zoo download NAME --force`."
        )


def _url_path(source: Source, root: Path) -> Path:
    return root / source.filename


def _fetch_url(source: Source, root: Path, store: HashStore, progress: bool, force: bool) -> Path:
    dst = _url_path(source, root)
    if dst.exists() and not force:
        _verify(source, dst, store)
        return dst
    if force:
        dst.unlink(missing_ok=True)
    expected, published = _expected(source, store)
    url = source.resolved_url()

    def check(digest: str) -> None:
        if expected is not None and digest != expected:
            raise ChecksumError(_checksum_message(url, digest, expected, published))

    digest = _download(url, dst, check, progress)
    if expected is None:
        store.record(source.key, digest, dst.stat().st_size)
    return dst


def _cached_hf(source: Source) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(source.hf, source.file, revision=source.revision)
    return Path(hit) if isinstance(hit, str) else None


def _lfs_sha256(path: str) -> str | None:
    """Hub LFS files live in ``blobs/<sha256>``: the blob name is the published hash."""
    name = Path(path).resolve().name
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else None


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

    # Not OSError in general: a full disk or a permission error is not the hub's.
    return (EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled)


def _hub_hint(e: BaseException) -> str:
    """What went wrong with a hub download, and what to do, by the hub client's error type."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, GatedRepoError):
        return f"the repo is gated: accept its licence on the hub and set HF_TOKEN ({first})"
    if isinstance(e, RepositoryNotFoundError):
        return f"no such repo (or it is private: set HF_TOKEN) ({first})"
    if isinstance(e, RevisionNotFoundError | RemoteEntryNotFoundError):
        return f"the repo has no such file or revision: check the registry entry ({first})"
    if isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled):
        return (
            "not in the local cache and the hub cannot be reached (offline, or HF_HUB_OFFLINE "
            f"is set): download it once with network access ({first})"
        )
    return f"{type(e).__name__}: {first}"


def _fetch_hf(source: Source, store: HashStore, force: bool) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - a dependency of timm
        raise DownloadError(
            "huggingface_hub is not installed: `pip install huggingface_hub`"
        ) from e
    # A cached copy is used without a network round trip: the hub client retries for ~30 s
    # before it gives up on an unreachable hub.
    path = None if force else _cached_hf(source)
    if path is None:
        try:
            path = hf_hub_download(
                repo_id=source.hf,
                filename=source.file,
                revision=source.revision,
                force_download=force,
            )
        except _hub_errors() as e:
            raise DownloadError(f"hf-hub:{source.hf} ({source.file}): {_hub_hint(e)}") from e
    _verify(source, Path(path), store, published_hint=_lfs_sha256(str(path)))
    return Path(path)


def _select(entry: ZooEntry, source: str | int | None) -> list[Source]:
    if source is None:
        return list(entry.sources)
    if isinstance(source, int) or str(source).isdigit():
        i = int(source)
        if not 0 <= i < len(entry.sources):
            raise ZooError(f"{entry.name} has sources 0..{len(entry.sources) - 1}, not {i}")
        return [entry.sources[i]]
    if source not in ("url", "hf"):
        raise ZooError(f"source={source!r}: use 'url', 'hf' or a source index")
    chosen = [s for s in entry.sources if s.kind == source]
    if not chosen:
        kinds = sorted({s.kind for s in entry.sources})
        raise ZooError(f"{entry.name} has no {source!r} source (it has {', '.join(kinds)})")
    return chosen


def cached_file(entry: ZooEntry | str, root: str | os.PathLike | None = None) -> Path | None:
    """The already downloaded file of an entry, if any (no network, no hashing)."""
    entry = get_entry(entry) if isinstance(entry, str) else entry
    base = Path(root) if root is not None else cache_dir()
    return next((p for s in entry.sources if (p := _cached(s, base)) is not None), None)


def _cached(source: Source, base: Path) -> Path | None:
    if source.url:
        path = _url_path(source, base)
        return path if path.exists() else None
    return _cached_hf(source)


def fetch(
    entry: ZooEntry | str,
    *,
    source: str | int | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """The local file of a zoo entry, downloading it if needed.

    Sources are tried in registry order (or only ``source``: 'url', 'hf' or an index). A cached
    file is used without network access after its hash is checked. A checksum mismatch stops at
    once (falling back to another source would hide it); other failures move on to the next
    source, and when all fail one ``DownloadError`` lists every reason.
    """
    entry = get_entry(entry) if isinstance(entry, str) else entry
    base = Path(root) if root is not None else cache_dir()
    chosen = _select(entry, source)
    if not force:  # a file already on disk wins, whichever source it came from
        for s in chosen:
            if _cached(s, base) is not None:
                return fetch_source(s, root=base, progress=progress)
    failures = []
    for s in chosen:
        try:
            return fetch_source(s, root=base, progress=progress, force=force)
        except DownloadError as e:
            failures.append(f"  - {e}")
    where = _url_path(chosen[0], base) if chosen[0].url else "the Hugging Face cache ($HF_HOME)"
    raise DownloadError(
        f"Could not fetch {entry.name!r} from any source:\n"
        + "\n".join(failures)
        + f"\nFix: connect to the network and retry; or copy the file to {where}; or set "
        "$INCEPTIONNEXT_ZOO_MIRROR to a server holding the release files; or pass a local "
        "checkpoint path instead of the zoo name."
    )


def fetch_source(
    source: Source,
    *,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """The local file of one source (a URL or hub file outside the registry, too)."""
    base = Path(root) if root is not None else cache_dir()
    store = HashStore(base / HASH_STORE_NAME)
    if not force:
        path = _cached(source, base)
        if path is not None:
            _verify(
                source, path, store, published_hint=None if source.url else _lfs_sha256(str(path))
            )
            return path
    if source.url:
        return _fetch_url(source, base, store, progress, force)
    return _fetch_hf(source, store, force)


def forget_hashes(entry: ZooEntry | str, root: str | os.PathLike | None = None) -> list[str]:
    """Drop the recorded hashes of an entry's sources (after an intentional upstream update)."""
    entry = get_entry(entry) if isinstance(entry, str) else entry
    base = Path(root) if root is not None else cache_dir()
    store = HashStore(base / HASH_STORE_NAME)
    return [s.key for s in entry.sources if store.forget(s.key)]

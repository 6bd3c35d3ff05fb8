"""One error type for bad data input, and the translation of `datasets`/hub failures into it.

`datasets` and `huggingface_hub` report the same few user mistakes (no network, no token for a
gated repo, a typo in a repo id) through many exception types and long tracebacks. Every entry
point of the data package funnels them through :func:`hub_error` so the user reads one message
that names the dataset, what went wrong and how to fix it.
"""

from __future__ import annotations

import os

from ..errors import InceptionNextError

__all__ = ["DataError", "hub_error"]

TOKEN_HINT = (
    "accept the dataset's licence on its Hugging Face page with your account, then give a token "
    "with read access: `export HF_TOKEN=hf_...` (or run `hf auth login` once)"
)


class DataError(InceptionNextError, ValueError):
    """Bad data input: a missing dataset, an unknown split or column, a corrupt image, ..."""


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _is_gated(exc: BaseException) -> bool:
    for e in _chain(exc):
        if type(e).__name__ == "GatedRepoError" or "gated" in str(e).lower():
            return True
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return True
    return False


def _is_offline(exc: BaseException) -> bool:
    names = {"OfflineModeIsEnabled", "ConnectError", "ConnectTimeout", "TimeoutException"}
    for e in _chain(exc):
        if type(e).__name__ in names or isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if "couldn't reach" in str(e).lower():
            return True
    return False


def _is_not_found(exc: BaseException) -> bool:
    names = {"DatasetNotFoundError", "RepositoryNotFoundError", "RevisionNotFoundError"}
    return any(type(e).__name__ in names for e in _chain(exc))


def hub_error(exc: BaseException, dataset: str, revision: str | None = None) -> DataError | None:
    """A :class:`DataError` for a hub failure of ``dataset``, or None if ``exc`` is something else.

    The checks run from the most specific cause to the least: a gated repo answers 401/403 and
    `datasets` wraps that as "not found", so gating is tested before "not found".
    """
    where = f"dataset '{dataset}'" + (f" (revision '{revision}')" if revision else "")
    if _is_gated(exc):
        has_token = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
        state = (
            "the token in HF_TOKEN has no access"
            if has_token
            else "no Hugging Face token was found"
        )
        return DataError(
            f"{where} is gated on the Hugging Face Hub and {state}. Fix: {TOKEN_HINT}. "
            f"Or point `data.dataset` at a local copy (an ImageNet folder, parquet files or a "
            f"save_to_disk directory)."
        )
    if _is_offline(exc):
        return DataError(
            f"Cannot reach the Hugging Face Hub to load {where} (no network, or HF_HUB_OFFLINE=1 "
            f"and the dataset is not in the cache). Fix: connect to the network and run once to fill "
            f"the cache (set HF_TOKEN first if the repo is gated), or set `data.dataset` to a local "
            f"path, or use a built-in offline demo set: `data.dataset: digits` (classification) or "
            f"`digits_scenes` (segmentation)."
        )
    if _is_not_found(exc):
        detail = _chain(exc)[0]
        return DataError(
            f"{where} was not found: no local path of that name exists and the Hugging Face Hub "
            f"has no such dataset or revision ({detail}). Fix: check the spelling of `data.dataset`"
            f" (a hub id 'owner/name', a local directory, a parquet glob, 'digits' or "
            f"'digits_scenes') and "
            f"`data.revision`. If the repo is gated, also {TOKEN_HINT}."
        )
    return None

"""Errors of the model zoo; each message names the problem and the fix."""

from __future__ import annotations

from ..errors import InceptionNextError


class ZooError(InceptionNextError, RuntimeError):
    """Base class: anything the zoo refuses to do."""


class DownloadError(ZooError):
    """No source could deliver the file (offline, 404, too many interruptions)."""


class ChecksumError(ZooError):
    """A file's sha256 differs from the published or the recorded one."""


class CheckpointFormatError(ZooError, ValueError):
    """A file that is not a checkpoint this package understands."""


class StateDictMismatchError(ZooError, ValueError):
    """A checkpoint whose backbone does not fit the model (shapes, missing or extra keys)."""

"""The base of every error that is the user's to fix, in a module that imports nothing of the package.

Each room derives its own errors from ``InceptionNextError`` (``DataError``, ``UnknownModelError``,
``ZooError``, ``CamError``, ...), so a command catches them all with one class and lets every other
exception surface as the fault it is. ``inceptionnext_pl.commands.run_command`` prints them.
"""

from __future__ import annotations


class InceptionNextError(Exception):
    """Bad input: a value, file, dataset or name that cannot work; the message names the fix."""


class ConfigError(InceptionNextError, ValueError):
    """An argument or config value that cannot work; the message names the key and the fix."""

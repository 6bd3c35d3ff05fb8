"""Errors that a command shows as one message, and the wrapper that shows them.

A known error is the user's to fix (a bad value, a missing file or dataset, an unknown name):
the command prints it without a traceback and exits with status 1. Anything else is a fault and
surfaces as usual. ``--debug`` or ``INCEPTIONNEXT_DEBUG=1`` shows the traceback of known errors too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

DEBUG_ENV = "INCEPTIONNEXT_DEBUG"
EXIT_ERROR = 1


class ConfigError(ValueError):
    """An argument or config value that cannot work; the message names the key and the fix."""


def known_errors() -> tuple[type[BaseException], ...]:
    from .data.errors import DataError
    from .models.factory import UnknownModelError
    from .zoo.errors import ZooError  # CheckpointFormatError, DownloadError, ... derive from it

    return (ConfigError, DataError, UnknownModelError, ZooError)


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_command(
    prog: str,
    main: Callable[[list[str]], int | None],
    argv: Sequence[str] | None = None,
    extra: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``main(argv)`` (``--debug`` removed) and turn known errors into one line on stderr."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != "--debug"]
    try:
        return int(main(args) or 0)
    except (*known_errors(), *extra) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        print(f"(add --debug or set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR

"""How every console script shows a known error: one line on stderr and exit status 1.

A known error (``InceptionNextError`` and the classes a command adds) is the user's to fix, so it
is printed without a traceback. Anything else is a fault and surfaces as usual. ``--debug`` or
``INCEPTIONNEXT_DEBUG=1`` shows the traceback of known errors too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from .errors import InceptionNextError

DEBUG_ENV = "INCEPTIONNEXT_DEBUG"
EXIT_ERROR = 1


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
    except (InceptionNextError, *extra) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        print(f"(add --debug or set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR

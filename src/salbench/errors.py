"""Base class of the errors salbench raises for bad input; stages print them without a traceback."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[[], None])


class SalbenchError(Exception):
    """A user-fixable problem (bad params, unknown name, missing artifact); the message names the fix."""


def cli(main: F) -> F:
    """Run a stage's ``main``: a SalbenchError prints ``error: <message>`` and exits 2
    (set SALBENCH_DEBUG=1 for the traceback)."""

    @functools.wraps(main)
    def wrapper() -> None:
        try:
            main()
        except SalbenchError as e:
            if os.environ.get("SALBENCH_DEBUG"):
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]

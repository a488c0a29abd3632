"""The errors a user can act on, each with a one-line message that names the problem and the fix.

Kept free of heavy imports, so that a bad command line is reported before torch or Lightning load.
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


def one_line(message: object) -> str:
    """The message with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())


def print_error(message: object) -> None:
    """`error: <message>` as one line on stderr: how every entry point reports a problem."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def fail(message: object, code: int = 1) -> NoReturn:
    """print_error, then exit with `code`."""
    print_error(message)
    sys.exit(code)


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names it and the fix."""


class DataError(ValueError):
    """A data file is missing, truncated or malformed; the message is one line with the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class TrainingStopped(RuntimeError):
    """Training ended early for a reason the user can act on; `status` goes into metrics.json."""

    exit_code = 1

    def __init__(self, message: str, status: str, step: int) -> None:
        super().__init__(message)
        self.status, self.step = status, step


class Diverged(TrainingStopped):
    pass


class Interrupted(TrainingStopped):
    def __init__(self, message: str, step: int, signal_name: str) -> None:
        super().__init__(message, "interrupted", step)
        self.exit_code = 128 + int(getattr(signal, signal_name))  # the shell's convention: 130, 143

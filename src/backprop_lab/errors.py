"""The errors a user can act on, each with a one-line message that names the problem and the fix.

Kept free of heavy imports, so that a bad command line is reported before torch or Lightning load.
"""

from __future__ import annotations

import errno
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


# What writing into a folder that cannot take it raises: full disk, read-only or missing mount, a file in the way.
WRITE_ERRNOS = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST
}  # fmt: skip


RUN_FOLDER_FIX = (
    "free some disk space, or choose a writable folder: hydra.run.dir=PATH, or hydra.sweep.dir=PATH for a sweep"
)


def unwritable(e: BaseException | None, fix: str = RUN_FOLDER_FIX) -> str | None:
    """The one-line message for an output file or folder that cannot be written, naming `fix`, else None. The
    OSError may be the cause of another error (Hydra's log file set-up raises a ValueError from it)."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    if e is None or e.errno not in WRITE_ERRNOS:
        return None
    where = f"{e.filename}" if e.filename else "the output folder"
    return f"cannot write {where}: {e.strerror or e} ({fix})"


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


class Pruned(TrainingStopped):
    """An Optuna search's pruner stopped the trial: its metric so far was not worth finishing the run."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message, "pruned", step)


class Interrupted(TrainingStopped):
    def __init__(self, message: str, step: int, signal_name: str) -> None:
        super().__init__(message, "interrupted", step)
        self.exit_code = 128 + int(getattr(signal, signal_name))  # the shell's convention: 130, 143

"""What the entry points share: errors become one line on stderr and a status in metrics.json.

A single run exits non-zero on a known error (bad config, bad data, divergence, interruption)
with no traceback; BACKPROP_LAB_VERBOSE=1 shows it. Inside a sweep a failing job is recorded and
the sweep goes on.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode

from backprop_lab import paths  # noqa: F401  (registers the resolvers conf/ uses)
from backprop_lab.errors import (
    ConfigError,
    DataError,
    Interrupted,
    Pruned,
    TrainingStopped,
    fail,
    one_line,
    print_error,
    unwritable,
)
from backprop_lab.paths import set_status

log = logging.getLogger("backprop_lab")
KNOWN = (ConfigError, DataError, TrainingStopped)


def ignore_framework_deprecations() -> None:
    """Lightning 2.6 builds torch's LeafSpec, which torch 2.14 deprecates: a FutureWarning at every
    fit and test that no user of the entry points (or the benchmark) can act on."""
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


ignore_framework_deprecations()


def verbose() -> bool:
    return os.environ.get("BACKPROP_LAB_VERBOSE", "") not in ("", "0")


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record_status(cfg: Any, status: str) -> None:
    """metrics.json says why the run ended, so a sweep's summary can list it."""
    try:
        out = Path(cfg.paths.output_dir)
    except Exception:  # no Hydra run folder (e.g. called from a test without one)
        return
    try:
        set_status(out, status)
    except (OSError, ValueError) as e:  # a folder that cannot be written: the log and the console keep it
        log.error("could not record the status in %s: %s", out / "metrics.json", one_line(e))


def _log_to_files(message: str) -> None:
    """The run's log file keeps the error; the console shows only the one `error:` line."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


EARLY_CTRL_C = "interrupted before training started: nothing was trained (run the command again)"


def run(task: Callable[[Any], dict], cfg: Any) -> dict:
    """Call task(cfg) and turn what can go wrong into one line, a metrics.json status and an exit code."""
    try:
        try:
            return task(cfg)
        except KeyboardInterrupt:  # Ctrl-C while the data loads (during training train() stops cleanly)
            _record_status(cfg, f"interrupted: {EARLY_CTRL_C}")
            raise Interrupted(EARLY_CTRL_C, 0, "SIGINT") from None
    except Exception as e:
        known = isinstance(e, KNOWN) or unwritable(e) is not None
        message = unwritable(e) or (one_line(e) or type(e).__name__ if known else f"{type(e).__name__}: {one_line(e)}")
        if not isinstance(e, TrainingStopped):  # train() (or the Ctrl-C above) has written its own status
            _record_status(cfg, f"failed: {message}")
        if is_multirun() and isinstance(e, Pruned):  # a search's pruner stopped it: an outcome, not an error
            log.info("%s", message)
            return {}
        if is_multirun() and not isinstance(e, Interrupted):  # record it and let the other jobs run
            log.error("job failed: %s", message)
            print_error(message)
            return {}
        if not known or verbose():
            raise
        _log_to_files(message)
        fail(message, getattr(e, "exit_code", 1))


def hydra_entry(main: Callable[[], Any]) -> None:
    """Run a @hydra.main function; Hydra's own errors (unknown option, bad override) become one line too."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let them reach us instead of Hydra's multi-line report
    try:
        main()
    except (MissingConfigException, OverrideParseException, ConfigCompositionException) as e:
        if verbose():
            raise
        fail(hydra_message(e))
    except (OSError, ValueError) as e:  # Hydra creates the run or sweep folder, and its log file, before the task
        if verbose() or unwritable(e) is None:
            raise
        fail(unwritable(e))
    except KeyboardInterrupt:  # Ctrl-C while Python imports torch and Lightning, or between a sweep's jobs
        if verbose():
            raise
        fail("interrupted by Ctrl-C (a run stopped in training resumes with ckpt_path=last in its folder)", 130)


def hydra_message(e: Exception) -> str:
    """Hydra's composition errors in one line (a missing option: the options there are)."""
    if isinstance(e, MissingConfigException) and "/" in (e.missing_cfg_file or "") and e.options:
        group, option = e.missing_cfg_file.rsplit("/", 1)
        return f"{group}={option} is not an option ({group}= one of: {', '.join(sorted(e.options))})"
    if isinstance(e, OverrideParseException):
        return f"cannot parse the override {e.override!r}: {one_line(e)}"
    return one_line(e)

"""What the entry points share: errors become one line on stderr and a status in metrics.json.

A single run exits non-zero on a known error (bad config, bad data, divergence) with no traceback;
BACKPROP_LAB_VERBOSE=1 shows it. Inside a sweep a failing job is recorded and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from backprop_lab.config import ConfigError

log = logging.getLogger("backprop_lab")


def verbose() -> bool:
    return os.environ.get("BACKPROP_LAB_VERBOSE", "") not in ("", "0")


def known_errors() -> tuple[type[BaseException], ...]:
    from backprop_lab.data import DataError

    return (ConfigError, DataError)


def fail(message: str, code: int = 1) -> None:
    """Print `error: ...` as one line and exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _record_failure(cfg: Any, message: str) -> None:
    """metrics.json says why the run ended, so a sweep's summary can list it."""
    try:
        out = Path(cfg.paths.output_dir)
    except Exception:  # no Hydra run folder (e.g. called from a test without one)
        return
    path = out / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics["status"] = f"failed: {message}"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")


def run(task: Callable[[Any], dict], cfg: Any) -> dict:
    from backprop_lab.training import is_multirun

    try:
        return task(cfg)
    except Exception as e:
        known = isinstance(e, known_errors())
        message = one_line(e) if known else f"{type(e).__name__}: {one_line(e)}"
        _record_failure(cfg, message)
        if is_multirun():  # record it and let the other jobs run
            log.error("job failed: %s", message)
            print(f"error: {message}", file=sys.stderr, flush=True)
            return {}
        if not known or verbose():
            raise
        log.error(message)
        fail(message)
        raise  # unreachable

"""Where things live: the project root and the run folder (OmegaConf resolvers for conf/, registered
on import; the entry points import this through training.cli before Hydra composes a config), and how files
in a run folder are written (atomically).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"  # the Hydra configs: conf/ at the top of the checkout


def project_root() -> str:
    """The checkout that holds conf/ (an editable install), else the current directory."""
    return str(PROJECT_ROOT if (PROJECT_ROOT / "conf").is_dir() else Path.cwd())


if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", project_root)


def run_dir(ckpt_path: str | None, default: str) -> str:
    """Hydra's run folder: the folder of the checkpoint being resumed, else a new timestamped one.

    Resuming in place keeps one TensorBoard run, one checkpoint folder and one metrics.json per
    run, and gives a pre-empted cluster job the same folder when it restarts.
    """
    if ckpt_path:
        run = Path(ckpt_path).expanduser().resolve().parent.parent
        if (run / ".hydra").is_dir():
            return str(run)
    return default


if not OmegaConf.has_resolver("run_dir"):
    OmegaConf.register_new_resolver("run_dir", run_dir)


TMP_SUFFIX = ".partial"


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through a temporary file beside it, flushed to disk, then renamed over it.

    The rename is atomic within one filesystem, which is why the temporary file lives in the same
    folder (a rename from /tmp, often another filesystem, would be a copy). A process killed
    midway leaves the old file intact and at most a hidden `.<name>.*.partial` beside it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_partial_writes(folder: Path) -> list[Path]:
    """Delete what killed `atomic_write`s left in `folder`; returns what was removed."""
    stale = sorted(folder.glob(f".*{TMP_SUFFIX}")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, written atomically so a reader never sees half of it."""
    atomic_write(out / "metrics.json", lambda f: f.write((json.dumps(metrics, indent=2) + "\n").encode()))

"""Where things live: the configs, the project root and the run folder (OmegaConf resolvers for conf/, registered
on import; the entry points import this through training.cli before Hydra composes a config), and how files
in a run folder are written (atomically).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The Hydra configs are the package backprop_lab.conf: in a checkout (an editable install) src/backprop_lab/conf
# links to conf/ at its top, and a wheel holds a copy. The entry points name the package, compose() the folder.
CONF_PACKAGE = "backprop_lab.conf"
CONFIG_PATH = f"pkg://{CONF_PACKAGE}"  # @hydra.main's config_path
CONF_DIR = (Path(__file__).parent / "conf").resolve()


def in_checkout() -> bool:
    """Whether the package runs from a checkout of the project (src/backprop_lab beside conf/ and pyproject.toml)."""
    return (PROJECT_ROOT / "conf").is_dir() and (PROJECT_ROOT / "pyproject.toml").is_file()


def project_root() -> str:
    """The checkout (an editable install), else the current directory: where outputs/ and data/ live."""
    return str(PROJECT_ROOT if in_checkout() else Path.cwd())


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


NAME_MAX = 255  # bytes in one file or folder name (ext4, APFS, NTFS)


def job_dir(name: str) -> str:
    """A sweep job's folder: its overrides (Hydra's override_dirname), cut and ended with a hash of the whole
    when a long list of overrides would pass the filesystem's limit on one name (the job's own
    .hydra/overrides.yaml keeps them all)."""
    raw = name.encode()
    if len(raw) < NAME_MAX:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return raw[: NAME_MAX - 64].decode(errors="ignore") + ",...," + digest


if not OmegaConf.has_resolver("job_dir"):
    OmegaConf.register_new_resolver("job_dir", job_dir)


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


def set_status(out: Path, status: str, unless_ended: bool = False) -> None:
    """metrics.json's `status` set to `status`, its other values kept (a file is started if there is none);
    `unless_ended`: only while the run has no status or is still "running". Raises OSError or ValueError."""
    path = out / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    if not unless_ended or metrics.get("status") in (None, "running"):
        write_metrics(out, {**metrics, "status": status})

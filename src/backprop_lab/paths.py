"""Where things live: the project root and the run folder, as OmegaConf resolvers for conf/.

Registered on import; the entry points import this (through cli) before Hydra composes a config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, written to a temporary file and renamed so a reader never sees half of it."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(out / "metrics.json")

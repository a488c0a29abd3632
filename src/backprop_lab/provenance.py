"""Where a run came from, for metrics.json: the versions of the software, the code's git commit, the device,
and the data files read with their sha256, so that a number can be traced back and reproduced.

Plain arguments only (no Hydra, no Lightning); nothing here may fail a run: what cannot be found is None.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

DISTRIBUTIONS = ("lightning", "hydra-core", "torchmetrics")  # installed names (pip's), beside python and torch
PACKAGE_DIR = Path(__file__).resolve().parent
GIT_TIMEOUT = 10.0  # seconds; a hung git (a network filesystem) must not hold up a run


def versions() -> dict[str, str | None]:
    """{"python": "3.11.7", "torch": "2.14.1+cu130" (with its build), "lightning", "hydra-core", "torchmetrics"}."""
    found: dict[str, str | None] = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _git(folder: Path, *args: str) -> str | None:
    """git's stdout in `folder`, or None when git is missing, fails, or takes too long."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: str | Path = PACKAGE_DIR) -> dict[str, Any]:
    """{"git_commit": HEAD's hash, "git_dirty": whether tracked files differ from it} for the checkout whose
    tracked files include `folder` (by default this package's folder, wherever the run is started from);
    both None for an installed copy (e.g. in site-packages, even inside some other repository) or without git."""
    folder = Path(folder)
    tracked = _git(folder, "ls-files", "--", ".")  # empty outside a checkout that tracks this folder
    commit = _git(folder, "rev-parse", "HEAD") if tracked else None
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else status != ""}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device | str | None = None) -> str:
    """The name of the device a run computes on: the GPU's (torch.cuda.get_device_name), else the CPU's."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_name()
    return device.type  # e.g. mps: no public API names the chip


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The file's sha256 as hex, read in chunks (the MNIST image files are 47 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksums(files: Iterable[str | Path]) -> dict[str, str | None]:
    """{path: sha256} for each file read (None for one that can no longer be read)."""
    out: dict[str, str | None] = {}
    for path in files:
        try:
            out[str(path)] = sha256(path)
        except OSError:
            out[str(path)] = None
    return out


def collect(data_source: str | None, data_files: Iterable[str | Path], device: torch.device | str | None) -> dict:
    """The `provenance` object of metrics.json."""
    return {
        "versions": versions(),
        **git_state(),
        "device": device_name(device),
        "data_source": data_source,
        "data_files": checksums(data_files),
    }

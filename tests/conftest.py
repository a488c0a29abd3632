"""Shared fixtures: configs composed from conf/ exactly as train.py composes them, on tiny data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Tiny MLPs gain nothing from intra-op threads, and two pytest workers with two threads each on a
# 2-core machine slow every small op down by an order of magnitude. Subprocesses inherit this.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch
from omegaconf import DictConfig

from backprop_lab.training.config import compose

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark's package, scripts/bench, as `import bench`

# Small but real: the embedded MNIST digits, a few hundred of them, one quick epoch, no progress bar.
TINY = [
    "data=mnist_subset",
    "data.train_size=300",
    "data.val_size=100",
    "data.test_size=100",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=5",
]


def compose_cfg(tmp_path: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    """Compose conf/<config_name>.yaml with TINY defaults, writing into tmp_path."""
    return compose(
        [*TINY, *overrides] if config_name == "train" else list(overrides),
        tmp_path,
        config_name,
        hydra_node=any(o.startswith("hydra/") for o in overrides),
    )


@pytest.fixture
def make_cfg(tmp_path):
    return lambda *overrides: compose_cfg(tmp_path, *overrides)


def run_script(
    *args: str, cwd: Path = ROOT, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run a project script with the test interpreter, capturing its output."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("BACKPROP_LAB_VERBOSE", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )

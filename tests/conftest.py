"""Shared fixtures: configs composed from conf/ exactly as train.py composes them, on tiny data."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

# Tiny MLPs gain nothing from intra-op threads, and two pytest workers with two threads each on a
# 2-core machine slow every small op down by an order of magnitude. Subprocesses inherit this.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
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
    "log.pictures_every_n_epochs=0",  # matplotlib's drawing costs more than a tiny run's training
]


# TINY for a run whose output nobody watches: no progress bar, no model summary, no pictures.
QUIET = [o for o in TINY if not o.startswith("trainer.enable")]


def compose_cfg(tmp_path: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    """Compose conf/<config_name>.yaml with TINY defaults, writing into tmp_path."""
    return compose(
        [*TINY, *overrides] if config_name == "train" else list(overrides),
        tmp_path,
        config_name,
        hydra_node=any(o.startswith("hydra/") for o in overrides),
    )


# Tests that share an expensive module fixture, by node-id prefix -> group: under `pytest -n N` each group
# runs in one worker, so that the fixture is computed once. (xdist_group marks with --dist loadgroup would
# say this by the tests, but pytest-xdist 3.8 cannot add the group to pytest 9.2's node ids.)
SHARED_FIXTURES = {
    "tests/test_experiments.py::test_report_": "tiny_report",  # 25 training runs
    "tests/test_predict.py::": "predict",  # 5,000 digits parsed, a network trained for 10 epochs
    "tests/test_visuals.py::": "visuals",  # a fit with both callbacks
    "tests/test_reliability.py::test_bad_checkpoints_": "reliability",  # a trained run
    "tests/test_reliability.py::test_interrupted_run_": "reliability",  # it, and the process forking runs
    "tests/test_reliability.py::test_sigkill_": "reliability",  # that process
    "tests/test_benchmark.py::test_tiny_run_": "benchmark_tiny",
    "tests/test_benchmark.py::test_a_gpu_only_run_": "benchmark_tiny",
    "tests/test_export.py::": "export",  # a trained run and a trained population
    "tests/test_packaging.py::": "packaging",  # the package built and installed into a folder
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist load (what -n N implies), with the SHARED_FIXTURES groups: xdist's loadscope scheduling with
    one test per unit of work except for those groups. Units are handed out one at a time as workers free
    up, the groups first (xdist orders units by size), then the rest in collection order (`slow` first)."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((g for prefix, g in SHARED_FIXTURES.items() if nodeid.startswith(prefix)), nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """The `slow` end-to-end tests first: a long test started last would leave the other worker idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


def run_in_process(
    script: str | Path, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python <script> <args>` (a project script, or any path), run in this process from `cwd`, with `env` added.

    The script runs as `__main__` with these arguments (runpy, as `python` runs it): for a Hydra entry the same
    composition, run folder, one-line errors and exit code as run_script, without a new interpreter's start
    (importing torch and Lightning takes seconds). stdout and stderr are captured; an uncaught exception is
    printed with its traceback and exits 1, as in a real process. Use run_script where the process itself is
    what is tested (signals, warnings, DDP's launch)."""
    path = ROOT / script
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: lg.level for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)
    }
    saved = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", "BACKPROP_LAB_VERBOSE", *(env or {}))}
    os.environ.pop("BACKPROP_LAB_VERBOSE", None)
    os.environ.update(env or {})
    argv, deterministic = sys.argv, torch.are_deterministic_algorithms_enabled()
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [str(path), *args]
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:  # as the interpreter exits: None is 0, a message is printed and exits 1
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:  # leave nothing of the run behind in this process: logging, Hydra's job config, torch's flags
        sys.argv = argv
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, logger_level in levels.items():
            logging.getLogger(name).setLevel(logger_level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        HydraConfig.instance().cfg = None
        torch.use_deterministic_algorithms(deterministic)
    return subprocess.CompletedProcess([sys.executable, script, *args], code, out.getvalue(), err.getvalue())


# Hand-made sweep folders for the sweep-summary tests (test_sweeps.py, test_sweep_callbacks.py).


def make_job(sweep: Path, overrides: list[str], metrics: dict | str | None) -> Path:
    """A job folder named like Hydra's override_dirname; `metrics` as dict, raw text, or None (no file)."""
    job = sweep / ",".join(overrides)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (job / "metrics.json").write_text(text)
    return job


def completed(test_acc: float, val_best: float, curve: list[float] | None = None, **extra) -> dict:
    curve = curve or [val_best - 0.1, val_best - 0.05, val_best]
    return {
        "status": "completed",
        "test/acc": test_acc,
        "test/loss": 0.3,
        "val/acc_best": val_best,
        "val/acc": curve[-1],
        "epochs": len(curve),
        "train_seconds": 12.34,
        "data_source": "mnist-subset",
        "data_sizes": {"train": 4000, "val": 500, "test": 500},
        "history": {
            "epoch": list(range(1, len(curve) + 1)),
            "val/acc": curve,
            "val/loss": [0.5] * len(curve),
            "train/loss": [0.6] * len(curve),
            "train/acc": curve,
        },
        **extra,
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Four completed jobs (one nested by a `/` value), one diverged, one failed, one broken, one crashed."""
    s = tmp_path / "multiruns" / "2024-01-01_00-00-00"
    s.mkdir(parents=True)
    (s / "multirun.yaml").write_text("hydra: {}\n")
    make_job(s, ["activation=relu", "optimizer=adam"], completed(0.91, 0.92))
    make_job(s, ["activation=tanh", "optimizer=sgd"], completed(0.95, 0.93))
    make_job(s, ["activation=sigmoid", "optimizer=sgd"], completed(0.91, 0.94))
    make_job(s, ["data=mnist/small", "seed=1"], completed(0.50, 0.55))
    make_job(s, ["optimizer.lr=100"], {"status": "diverged: val/loss is nan at epoch 2", "epochs": 2})
    make_job(s, ["activation=bad"], {"status": "failed: ValueError: unknown activation 'bad'"})
    make_job(s, ["loss=broken"], '{"status": "completed", "test/acc": 0.9')  # truncated write
    make_job(s, ["model=mlp/deep", "trainer=crash"], None)  # nested and no metrics.json
    return s

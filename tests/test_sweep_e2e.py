"""The README's sweep, end to end in a subprocess: every job runs, each in its own folder, and the summary appears."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import TINY, run_script

README_SWEEP = "optimizer=sgd,momentum,adam activation=sigmoid,relu,tanh loss=mse,cross_entropy data.batch_size=10,100"


@pytest.mark.slow
def test_readme_sweep_runs_and_is_summarised(tmp_path):
    tiny = [o for o in TINY if not o.startswith("trainer.enable")] + [
        "data.train_size=200",
        "log.pictures_every_n_epochs=0",
    ]
    excluded = ",".join(o.split("=")[0] for o in tiny)
    result = run_script(
        "train.py",
        "-m",
        *README_SWEEP.split(),
        *tiny,
        f"hydra.sweep.dir={tmp_path}",
        f"hydra.job.config.override_dirname.exclude_keys=[{excluded},ckpt_path]",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert len(jobs) == 3 * 3 * 2 * 2
    names = {p.name for p in jobs}
    assert "activation=relu,data.batch_size=100,loss=mse,optimizer=adam" in names
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed", (job.name, metrics["status"])
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert list(job.glob("events.out.tfevents.*"))
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert len(rows) == 36
    assert (tmp_path / "summary.md").read_text().count("\n| ") >= 36
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # sweeps are quiet: no progress bars in the output
    assert "it/s" not in result.stdout + result.stderr


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel_processes(tmp_path):
    tiny = [o for o in TINY if not o.startswith("trainer.enable")] + [
        "data.train_size=200",
        "log.pictures_every_n_epochs=0",
    ]
    excluded = ",".join(o.split("=")[0] for o in tiny)
    result = run_script(
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer=sgd,adam",
        *tiny,
        f"hydra.sweep.dir={tmp_path}",
        f"hydra.job.config.override_dirname.exclude_keys=[{excluded},ckpt_path]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in tmp_path.rglob("metrics.json")}
    assert statuses == {"optimizer=sgd": "completed", "optimizer=adam": "completed"}
    assert (tmp_path / "summary.md").is_file()


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_is_summarised(tmp_path):
    tiny = [o for o in TINY if not o.startswith("trainer.enable")] + [
        "data.train_size=200",
        "log.pictures_every_n_epochs=0",
    ]
    excluded = ",".join(o.split("=")[0] for o in tiny)
    result = run_script(
        "train.py",
        "-m",
        "optimizer.lr=-1,0.5",
        *tiny,
        f"hydra.sweep.dir={tmp_path}",
        f"hydra.job.config.override_dirname.exclude_keys=[{excluded},ckpt_path]",
    )
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in tmp_path.rglob("metrics.json")}
    assert statuses["optimizer.lr=0.5"] == "completed"
    assert statuses["optimizer.lr=-1"].startswith("failed: optimizer.lr=-1 must be positive")
    summary = (tmp_path / "summary.md").read_text()
    assert "optimizer.lr=-1 must be positive" in summary
    assert result.returncode != 0  # the sweep reports that one of its jobs failed

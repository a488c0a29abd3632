"""Sweeps end to end through train.py's entry with `-m` (run in this process, as `python train.py -m` runs it;
the joblib launcher's jobs in processes of their own): the README's sweep (every job runs, each
in its own folder, and the summary has one row per group and a column per swept key), seeds pooled into
mean ± std under the joblib launcher, a population's members read as seeds, and a failing job summarised.

Each job is tiny (TINY, 200 training images); the README's 36 jobs also skip testing and stop after two
batches, since what they check is the sweep's machinery, not the numbers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from backprop_lab.reporting.jobs import STAT_COLUMNS, summarize
from backprop_lab.reporting.sweeps import group_curve
from conftest import ROOT, TINY, run_in_process

README_SWEEP = "optimizer=sgd,momentum,adam activation=sigmoid,relu,tanh loss=mse,cross_entropy data.batch_size=10,100"
QUICK = ["test=false", "+trainer.limit_train_batches=2"]  # what the README sweep's checks do not need


def run_sweep(sweep_dir: Path, *overrides: str, extra: tuple[str, ...] = ()):
    """`train.py -m overrides` on tiny data, quiet; `extra` settings, like TINY's, stay out of the folder names."""
    tiny = [o for o in TINY if not o.startswith("trainer.enable")] + [
        "data.train_size=200",
        "log.pictures_every_n_epochs=0",
        *extra,
    ]
    excluded = ",".join(o.split("=")[0].lstrip("+") for o in tiny)
    return run_in_process(
        "train.py",
        "-m",
        *overrides,
        *tiny,
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.job.config.override_dirname.exclude_keys=[{excluded},ckpt_path]",
    )


def summary_csv(sweep_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_the_readme_names_this_sweep():
    assert f"python train.py -m {README_SWEEP}\n" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_readme_sweep_runs_and_is_summarised(tmp_path):
    result = run_sweep(tmp_path, *README_SWEEP.split(), extra=tuple(QUICK))
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
    # no seeds: 36 groups of one; a column per swept key, the tiny-data overrides stated once
    columns, rows = summary_csv(tmp_path)
    assert columns == ["optimizer", "activation", "loss", "data.batch_size", *STAT_COLUMNS]
    assert len(rows) == 36
    keys = columns[:4]
    folders = [dict(o.split("=") for o in name.split(",")) for name in names]
    assert sorted(tuple(r[k] for k in keys) for r in rows) == sorted(tuple(f[k] for k in keys) for f in folders)
    assert all((r["n"], r["jobs"], r["failed"]) == ("1", "1", "0") and r["val_acc_best_mean"] for r in rows)
    assert all(r["test_acc_mean"] == "" for r in rows)  # test=false
    md = (tmp_path / "summary.md").read_text()
    assert "36 jobs, 36 completed, 0 failed; 36 groups" in md
    assert "Every job: " in md and "`data=mnist_subset`" in md and "`trainer.max_epochs=1`" in md
    assert "| rank | optimizer | activation | loss | data.batch_size | test acc (%) |" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 36 and not any("mnist_subset" in line for line in table)
    assert "Failures" not in md
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # sweeps are quiet: no progress bars in the output
    assert "it/s" not in result.stdout + result.stderr


@pytest.mark.slow
def test_joblib_seed_sweep_runs_in_parallel_processes_and_pools_the_seeds(tmp_path):
    """The done-when example, `-m seed=0,1,2 optimizer=sgd,adam`, two jobs at a time: two rows, n=3 each."""
    result = run_sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2", "optimizer=sgd,adam")
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in tmp_path.rglob("metrics.json")}
    assert statuses == {f"optimizer={o},seed={s}": "completed" for o in ("sgd", "adam") for s in (0, 1, 2)}
    columns, rows = summary_csv(tmp_path)
    assert columns == ["optimizer", *STAT_COLUMNS]
    assert sorted(r["optimizer"] for r in rows) == ["adam", "sgd"]
    for row in rows:
        assert (row["n"], row["jobs"], row["failed"]) == ("3", "3", "0")
        assert row["test_acc_mean"] and row["test_acc_std"] and row["test_acc_ci95"]
    md = (tmp_path / "summary.md").read_text()
    assert "6 jobs, 6 completed, 0 failed; 2 groups" in md
    assert md.count(" ± ") >= 4 and md.count(" (3) |") == 4  # test and best val acc, mean ± std (3), per row


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_and_a_population_is_read_as_its_seeds(tmp_path):
    result = run_sweep(tmp_path, "optimizer.lr=-1,0.5", "population=3")
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in tmp_path.rglob("metrics.json")}
    assert statuses["optimizer.lr=0.5,population=3"] == "completed"
    assert statuses["optimizer.lr=-1,population=3"].startswith("failed: optimizer.lr=-1 must be positive")
    summary = (tmp_path / "summary.md").read_text()
    assert "- `optimizer.lr=-1,population=3`: failed: optimizer.lr=-1 must be positive" in summary
    assert "Every job: " in summary and "`population=3`" in summary
    _, rows = summary_csv(tmp_path)
    good, bad = rows
    assert (good["optimizer.lr"], good["n"], good["jobs"], good["failed"]) == ("0.5", "3", "1", "0")
    assert good["test_acc_std"] and good["val_acc_best_ci95"]  # three members: a spread
    best = summarize(tmp_path).groups[0]
    epochs, mean, std = group_curve(best)  # the band from the members' own val/acc curves
    assert epochs == [1] and std[0] > 0
    assert mean[0] == pytest.approx(100 * best.jobs[0].values["val/acc_best"], abs=1e-3)  # one epoch: its best
    assert (bad["optimizer.lr"], bad["n"], bad["failed"]) == ("-1", "0", "1")
    assert result.returncode != 0  # the sweep reports that one of its jobs failed


def test_a_job_with_more_overrides_than_a_folder_name_holds_runs_in_a_shortened_folder(tmp_path):
    """Hydra names a job's folder after its overrides; past the filesystem's 255 bytes it is cut, with a hash."""
    long = "optimizer=adam optimizer.lr=0.001,0.002 optimizer.weight_decay=0.0001 scheduler=cosine"
    long += " trainer.gradient_clip_val=1.0 model.init=scaled model.hidden=[16,8] activation=relu loss=cross_entropy"
    long += " model.output=softmax data.split_seed=42 log.grad_every_n_steps=50 divergence_factor=100 population=1"
    result = run_sweep(tmp_path, *long.split(), extra=tuple(QUICK))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent for p in tmp_path.rglob("metrics.json"))
    assert len(jobs) == 2 and len({j.name for j in jobs}) == 2
    assert all(len(j.name.encode()) < 255 and j.name.startswith("activation=relu,") for j in jobs)
    _, rows = summary_csv(tmp_path)  # the summary reads each job's full overrides from its .hydra folder
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.001", "0.002"] and all(r["n"] == "1" for r in rows)

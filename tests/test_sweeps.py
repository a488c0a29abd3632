"""Sweep summaries: ranking, csv/md/png output, broken jobs, the CLI and the Hydra callback."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from backprop_lab.reporting.sweeps import COLUMNS, NO_METRICS, SummarizeSweep, collect, write_summary

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def test_collect_ranks_completed_best_first_and_broken_last(sweep):
    rows = collect(sweep)
    assert [r["job"] for r in rows[:4]] == [
        "activation=tanh,optimizer=sgd",  # best test acc
        "activation=sigmoid,optimizer=sgd",  # ties on test acc, better val acc
        "activation=relu,optimizer=adam",
        "data=mnist/small,seed=1",  # nested folder, found by recursive search
    ]
    assert rows[0]["overrides"] == "activation=tanh optimizer=sgd"
    assert rows[3]["overrides"] == "data=mnist/small seed=1"
    assert all(r["status"] == "completed" for r in rows[:4])
    failed = {"optimizer.lr=100", "activation=bad", "loss=broken", "model=mlp/deep,trainer=crash"}
    assert {r["job"] for r in rows[4:]} == failed
    assert all(set(r) == set(COLUMNS) for r in rows)


def test_collect_turns_broken_jobs_into_status_lines(sweep):
    status = {r["job"]: r["status"] for r in collect(sweep)}
    assert status["model=mlp/deep,trainer=crash"] == NO_METRICS
    assert status["loss=broken"].startswith("unreadable metrics.json: ")
    assert status["activation=bad"] == "failed: ValueError: unknown activation 'bad'"
    assert status["optimizer.lr=100"] == "diverged: val/loss is nan at epoch 2"


def test_csv_has_the_contract_columns_in_rank_order(sweep):
    paths = write_summary(sweep)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "summary.png"]
    with (sweep / "summary.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert len(rows) == 8
    first = rows[0]
    assert first["job"] == "activation=tanh,optimizer=sgd"
    assert float(first["test/acc"]) == 0.95 and float(first["val/acc_best"]) == 0.93
    assert first["epochs"] == "3" and first["data_source"] == "mnist-subset"
    crashed = next(r for r in rows if r["job"] == "model=mlp/deep,trainer=crash")
    assert crashed["test/acc"] == "" and crashed["status"] == NO_METRICS


def test_markdown_table_lists_every_job_with_its_status(sweep):
    write_summary(sweep)
    md = (sweep / "summary.md").read_text()
    lines = md.splitlines()
    assert str(sweep) in lines[0] and "8 jobs, 4 completed, 4 failed" in lines[0]
    assert "| rank | overrides | test acc | best val acc | epochs | time (s) | status |" in md
    assert "| 1 | activation=tanh optimizer=sgd | 95.00% | 93.00% | 3 | 12.3 | completed |" in md
    assert "failed: ValueError: unknown activation 'bad'" in md
    assert "unreadable metrics.json: " in md and NO_METRICS in md
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + 8  # header + one row per job


def assert_real_png(path: Path) -> None:
    """A PNG by its magic bytes, of a sensible size, and not a blank canvas."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.01  # something was drawn


def test_png_plots_the_histories(sweep):
    write_summary(sweep)
    assert_real_png(sweep / "summary.png")


def test_png_falls_back_to_test_acc_bars_without_history(tmp_path):
    for i, acc in enumerate([0.8, 0.9]):
        metrics = completed(acc, acc)
        del metrics["history"]
        make_job(tmp_path, [f"seed={i}"], metrics)
    write_summary(tmp_path)
    assert_real_png(tmp_path / "summary.png")


def test_nothing_succeeded_still_writes_all_files(tmp_path):
    make_job(tmp_path, ["activation=bad"], {"status": "failed: boom"})
    make_job(tmp_path, ["seed=2"], None)
    paths = write_summary(tmp_path)
    assert all(p.exists() for p in paths)
    assert "2 jobs, 0 completed, 2 failed" in (tmp_path / "summary.md").read_text()
    assert_real_png(tmp_path / "summary.png")


def test_many_jobs_and_malformed_metrics_do_not_raise(tmp_path):
    for i in range(10):  # enough to move the legend below the axes
        make_job(tmp_path, [f"seed={i}", "optimizer=sgd"], completed(0.5 + i / 100, 0.5 + i / 100))
    make_job(tmp_path, ["weird=list"], "[1, 2, 3]")
    logs = tmp_path / "seed=0,optimizer=sgd" / "logs"  # a logger's own metrics.json is not a job
    logs.mkdir()
    (logs / "metrics.json").write_text("{}")
    make_job(
        tmp_path,
        ["weird=types"],
        {
            "status": "completed\nwith newline",
            "test/acc": "high",
            "epochs": None,
            "history": {"epoch": [1, 2], "val/acc": ["x", float("nan"), 0.5]},
        },
    )
    rows = collect(tmp_path)
    assert len(rows) == 12
    by_job = {r["job"]: r for r in rows}
    assert by_job["weird=list"]["status"].startswith("unreadable metrics.json: expected a JSON object")
    assert by_job["weird=types"]["test/acc"] is None
    assert by_job["weird=types"]["status"] == "completed with newline"
    assert rows[0]["job"] == "seed=9,optimizer=sgd"
    write_summary(tmp_path)
    assert_real_png(tmp_path / "summary.png")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/summarize_sweep.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_prints_the_table_and_writes_files(sweep):
    proc = run_cli(str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Sweep `{sweep}`")
    assert "| 1 | activation=tanh optimizer=sgd |" in proc.stdout
    assert (sweep / "summary.png").exists()


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_cli_fails_in_one_line_without_jobs(tmp_path, case):
    target = tmp_path / "nope"
    if case == "empty":
        target.mkdir()
        (target / "multirun.yaml").write_text("hydra: {}\n")
    proc = run_cli(str(target))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not (target / "summary.md").exists()


def test_callback_writes_the_summary(sweep, caplog):
    with caplog.at_level("INFO", logger="backprop_lab.reporting.sweeps"), pytest.raises(SystemExit) as stop:
        SummarizeSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert stop.value.code == 1  # the fixture sweep has failed jobs
    assert all((sweep / f"summary.{ext}").exists() for ext in ("csv", "md", "png"))
    assert str(sweep / "summary.md") in caplog.text


@pytest.mark.slow
def test_hydra_multirun_calls_the_callback(tmp_path):
    """A real multirun: the registered callback finds the sweep dir even when `${now:}` ticks mid-sweep."""
    (tmp_path / "cfg.yaml").write_text(
        textwrap.dedent("""
        x: 1
        hydra:
          sweep:
            dir: ${oc.env:SWEEP_ROOT}/${now:%Y-%m-%d_%H-%M-%S}
            subdir: ${hydra.job.override_dirname}
          callbacks:
            summarize_sweep:
              _target_: backprop_lab.reporting.sweeps.SummarizeSweep
    """)
    )
    (tmp_path / "app.py").write_text(
        textwrap.dedent("""
        import json, time
        from pathlib import Path
        import hydra
        from hydra.core.hydra_config import HydraConfig

        @hydra.main(version_base="1.3", config_path=".", config_name="cfg")
        def main(cfg):
            out = Path(HydraConfig.get().runtime.output_dir)
            if cfg.x == 1:
                time.sleep(1.1)  # later jobs start in a later second
            status = "failed: x too big" if cfg.x == 3 else "completed"
            metrics = {"status": status, "test/acc": cfg.x / 10, "val/acc_best": cfg.x / 10, "epochs": 1,
                       "history": {"epoch": [1], "val/acc": [cfg.x / 10]}}
            (out / "metrics.json").write_text(json.dumps(metrics))

        main()
    """)
    )
    env = {**__import__("os").environ, "SWEEP_ROOT": str(tmp_path / "multiruns")}
    proc = subprocess.run(
        [sys.executable, "app.py", "-m", "x=1,2,3"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 1, proc.stderr  # x=3 failed: the summary is written, the exit status says so
    assert "1 of 3 sweep jobs did not complete" in proc.stderr
    (sweep_dir,) = (tmp_path / "multiruns").iterdir()
    md = (sweep_dir / "summary.md").read_text()
    assert "3 jobs, 2 completed, 1 failed" in md and "failed: x too big" in md
    assert [r["overrides"] for r in collect(sweep_dir)] == ["x=2", "x=1", "x=3"]

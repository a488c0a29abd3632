"""The sweep summary's command line (scripts/summarize_sweep.py) and its Hydra callback (SummarizeSweep), on the
hand-made sweeps of test_sweeps.py."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_sweeps import population

from backprop_lab.reporting.jobs import collect
from backprop_lab.reporting.sweeps import SummarizeSweep
from conftest import make_job, run_in_process


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_in_process("scripts/summarize_sweep.py", *args)


def test_cli_prints_the_table_and_writes_files(sweep):
    proc = run_cli(str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Sweep `{sweep}`")
    assert "| 1 | tanh | sgd |" in proc.stdout
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


def end_of_multirun(sweep: Path) -> None:
    SummarizeSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))


def test_callback_writes_the_summary(sweep, caplog, capsys):
    with caplog.at_level("INFO", logger="backprop_lab.reporting.sweeps"), pytest.raises(SystemExit) as stop:
        end_of_multirun(sweep)
    assert stop.value.code == 1  # the fixture sweep has failed jobs
    assert all((sweep / f"summary.{ext}").exists() for ext in ("csv", "md", "png"))
    assert str(sweep / "summary.md") in caplog.text
    err = capsys.readouterr().err
    assert err == f"error: 4 of 8 sweep jobs did not complete (see {sweep / 'summary.md'})\n"


def test_callback_exits_0_when_every_job_completed_though_a_member_diverged(tmp_path, capsys):
    make_job(tmp_path, ["population=2", "seed=0"], population(0, [0.9, 0.1], [None, 5]))
    make_job(tmp_path, ["population=2", "seed=2"], population(2, [0.8, 0.85]))
    end_of_multirun(tmp_path)  # no SystemExit: both jobs completed; the diverged member is in the table
    assert capsys.readouterr().err == ""
    md = (tmp_path / "summary.md").read_text()
    assert "| 1 | all jobs | 85.00 ± 5.00 (3) |" in md and "seed 1: diverged at step 5" in md


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
    proc = run_in_process(
        tmp_path / "app.py", "-m", "x=1,2,3", cwd=tmp_path, env={"SWEEP_ROOT": str(tmp_path / "multiruns")}
    )
    assert proc.returncode == 1, proc.stderr  # x=3 failed: the summary is written, the exit status says so
    assert "1 of 3 sweep jobs did not complete" in proc.stderr
    (sweep_dir,) = (tmp_path / "multiruns").iterdir()
    md = (sweep_dir / "summary.md").read_text()
    assert "3 jobs, 2 completed, 1 failed" in md and "- `x=3`: failed: x too big" in md
    assert [r["overrides"] for r in collect(sweep_dir)] == ["x=2", "x=1", "x=3"]
    assert "| 1 | 2 | 20.00 (1) |" in md  # x, the one swept key, is the only column before the statistics

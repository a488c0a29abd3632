"""An output folder that cannot be created or written: one `error:` line and exit status 1 for a run, a failed
job like any other in a sweep. Tests run as root here, where permissions stop nothing, so a file standing
where a folder must go does the blocking (the same OSError path as a full disk or a read-only mount)."""

from __future__ import annotations

import errno
import json

import pytest

from backprop_lab.errors import unwritable
from backprop_lab.reporting.jobs import summarize
from conftest import QUIET, run_in_process


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_errors_name_the_file_and_the_fix(code):
    message = unwritable(OSError(code, "why", "/runs/x/metrics.json"))
    assert message.startswith("cannot write /runs/x/metrics.json: why") and "hydra.run.dir=" in message
    assert unwritable(OSError(errno.ECONNREFUSED, "no")) is None and unwritable(ValueError("x")) is None


def test_a_run_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("in the way")
    result = run_in_process("train.py", *QUIET, f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    line = one_error_line(result)
    assert f"cannot write {tmp_path / 'file' / 'run'}" in line and "hydra.run.dir=PATH" in line
    assert (tmp_path / "file").read_text() == "in the way"


def test_a_log_file_that_cannot_be_opened_is_one_line(tmp_path):
    """Hydra opens <run>/train.log before the task runs; its failure arrives wrapped in a ValueError."""
    (tmp_path / "train.log").mkdir()
    result = run_in_process("train.py", *QUIET, f"hydra.run.dir={tmp_path}")
    line = one_error_line(result)
    assert f"cannot write {tmp_path / 'train.log'}: Is a directory" in line and "hydra.run.dir=PATH" in line


def test_a_run_that_cannot_write_its_checkpoints_is_one_line_and_recorded(tmp_path):
    (tmp_path / "checkpoints").write_text("in the way")
    result = run_in_process("train.py", *QUIET, f"hydra.run.dir={tmp_path}")
    assert f"cannot write {tmp_path / 'checkpoints'}" in one_error_line(result)
    status = json.loads((tmp_path / "metrics.json").read_text())["status"]
    assert status.startswith(f"failed: cannot write {tmp_path / 'checkpoints'}")


def test_a_sweep_job_that_cannot_write_is_a_failed_job_and_the_others_run(tmp_path):
    (tmp_path / "seed=2").mkdir(parents=True)
    (tmp_path / "seed=2" / "checkpoints").write_text("in the way")
    excluded = ",".join(o.split("=")[0] for o in QUIET)
    result = run_in_process(
        "train.py",
        "-m",
        "seed=1,2",
        *QUIET,
        f"hydra.sweep.dir={tmp_path}",
        f"hydra.job.config.override_dirname.exclude_keys=[{excluded}]",
    )
    assert "cannot write" in result.stderr
    assert json.loads((tmp_path / "seed=1" / "metrics.json").read_text())["status"] == "completed"
    jobs = {job.job: job.status for job in summarize(tmp_path).jobs}
    assert jobs["seed=1"] == "completed" and jobs["seed=2"].startswith("failed: cannot write"), jobs
    assert "seed=2" in (tmp_path / "summary.md").read_text()

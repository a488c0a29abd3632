"""`python train.py -m hparams_search=optuna`: an Optuna study in the sweep folder's SQLite file, resumed by the
same command, trials pruned epoch by epoch, failing trials told FAIL while the search goes on, one-line errors
for a bad search space, and an entry point that returns a float to the sweeper whatever the run's end.

Every search runs train.py's entry in this process (run_in_process), on the tiny data of conftest.TINY with two
batches per epoch: what is tested is the search's machinery, not the numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict
from optuna.trial import TrialState

from backprop_lab.training.search import objective
from conftest import TINY, compose_cfg, run_in_process

STUDY = "mnist_mlp"  # conf/hparams_search/optuna.yaml's study_name
QUICK = [
    *TINY,
    "+trainer.limit_train_batches=2",
    "log.pictures_every_n_epochs=0",
    "test=false",
    "optimizer.lr=tag(log, interval(1e-3, 1e-1))",  # no divergence on the way: every trial has a value
]


def search(sweep_dir: Path, *overrides: str):
    return run_in_process("train.py", "-m", "hparams_search=optuna", *QUICK, f"hydra.sweep.dir={sweep_dir}", *overrides)


def study_in(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def new_study(sweep_dir: Path) -> optuna.Study:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=STUDY, storage=f"sqlite:///{sweep_dir / 'optuna.db'}", direction="maximize")


def test_a_stopped_search_resumes_with_the_same_command_and_runs_only_what_is_left(tmp_path):
    first = search(tmp_path, "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert [t.state for t in study_in(tmp_path).trials] == [TrialState.COMPLETE] * 3
    ran = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("trial_*/metrics.json")}
    assert sorted(ran) == ["trial_0", "trial_1", "trial_2"]

    second = search(tmp_path, "hydra.sweeper.n_trials=6")  # the same command with the whole budget
    assert second.returncode == 0, second.stderr[-3000:]
    trials = study_in(tmp_path).trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == TrialState.COMPLETE and isinstance(t.value, float) for t in trials)
    jobs = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("trial_*/metrics.json")}
    assert sorted(jobs) == [f"trial_{n}" for n in range(6)]  # one folder per trial
    assert {k: jobs[k] for k in ran} == ran  # the first three did not run again
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # a resumed sampler draws anew
    for t in trials:  # each trial reported its epoch to the study, and knows its job
        assert list(t.intermediate_values) == [1] and t.user_attrs["job_dir"] == str(tmp_path / f"trial_{t.number}")
        assert json.loads((tmp_path / f"trial_{t.number}" / "metrics.json").read_text())["val/acc_best"] == t.value

    third = search(tmp_path, "hydra.sweeper.n_trials=6")  # nothing left to run
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(study_in(tmp_path).trials) == 6
    changed = search(tmp_path, "hydra.sweeper.n_trials=7", "activation=relu,tanh")  # Optuna cannot change choices
    assert "error: the search space entry activation is not the one the study mnist_mlp searched" in changed.stderr
    assert changed.returncode == 1 and len(study_in(tmp_path).trials) == 6
    summary = (tmp_path / "summary.md").read_text()
    assert "6 jobs, 6 completed, 0 failed" in summary
    header = next(line for line in summary.splitlines() if line.startswith("| rank |"))
    assert header.startswith("| rank | optimizer | activation | model.hidden | data.batch_size | optimizer.lr |")
    assert "search." not in summary  # the trial's link to its study is no hyperparameter
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert f"best_value: {max(t.value for t in trials)}" in best


def test_a_search_stopped_by_ctrl_c_resumes_with_the_identical_command(tmp_path, monkeypatch):
    """Ctrl-C during trial 3 of a 6-trial search; the same command again runs trial 3's values again and what is
    left, never the three that finished."""
    import backprop_lab.training.train as training

    real, started = training.train, []

    def ctrl_c_in_the_fourth_trial(cfg):
        started.append(cfg.search.trial)
        if len(started) == 4:
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setattr(training, "train", ctrl_c_in_the_fourth_trial)
    interrupted = search(tmp_path, "hydra.sweeper.n_trials=6")
    assert interrupted.returncode == 130 and "error: interrupted" in interrupted.stderr, interrupted.stderr[-3000:]
    monkeypatch.undo()
    stopped = study_in(tmp_path).trials
    assert [t.state for t in stopped] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL, TrialState.WAITING]
    assert stopped[3].user_attrs["interrupted"] is True
    ran = {p.parent.name: p.stat().st_mtime_ns for p in tmp_path.glob("trial_*/metrics.json")}

    again = search(tmp_path, "hydra.sweeper.n_trials=6")  # the identical command
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study_in(tmp_path).trials
    counted = [t for t in trials if not t.user_attrs.get("interrupted")]
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)
    rerun = next(t for t in counted if t.user_attrs.get("rerun_of") == 3)
    assert rerun.params == stopped[3].params
    finished = ("trial_0", "trial_1", "trial_2")  # they did not run again
    assert {k: (tmp_path / k / "metrics.json").stat().st_mtime_ns for k in finished} == {k: ran[k] for k in finished}


def test_a_second_search_of_a_running_study_is_one_line_even_from_another_folder(tmp_path):
    import fcntl

    shared = tmp_path / "shared"
    shared.mkdir()
    with open(shared / f".{STUDY}.search.lock", "w") as running:  # a search of this study holds it
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = search(tmp_path / "other", f"hydra.sweeper.storage=sqlite:///{shared / 'optuna.db'}")
    assert result.returncode == 1 and result.stderr.count("error:") == 1, result.stderr[-2000:]
    assert f"error: another search of the study {STUDY} is running" in result.stderr
    assert not list((tmp_path / "other").glob("trial_*"))  # nothing ran


def test_a_trial_left_running_by_a_killed_search_is_marked_and_run_again(tmp_path):
    study = new_study(tmp_path)
    study.enqueue_trial({"activation": "relu"})
    killed = study.ask({"activation": optuna.distributions.CategoricalDistribution(["sigmoid", "tanh", "relu"])})
    killed.set_user_attr("job_dir", str(tmp_path / "trial_0"))
    (tmp_path / "trial_0").mkdir()  # SIGKILL: a job folder without metrics.json
    result = search(tmp_path, "hydra.sweeper.n_trials=1")
    assert result.returncode == 0, result.stderr[-3000:]
    first, rerun = study_in(tmp_path).trials
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"] is True
    assert rerun.state == TrialState.COMPLETE and rerun.user_attrs["rerun_of"] == 0
    assert rerun.params["activation"] == "relu"  # the same values again
    assert json.loads((tmp_path / "trial_0" / "metrics.json").read_text())["status"] == "interrupted"
    assert "- `trial_0`: interrupted" in (tmp_path / "summary.md").read_text()


def test_a_pruned_trial_ends_pruned_with_a_float_and_the_summary_says_so(tmp_path):
    # A threshold no accuracy reaches: every trial is pruned at its first epoch.
    result = search(
        tmp_path,
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=2.0",
        "hydra.sweeper.n_trials=1",
        "trainer.max_epochs=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]  # pruning is what a search does, not a failure
    (trial,) = study_in(tmp_path).trials
    assert trial.state == TrialState.PRUNED and trial.user_attrs["status"] == "pruned"
    assert isinstance(trial.value, float) and trial.value == trial.intermediate_values[1]
    metrics = json.loads((tmp_path / "trial_0" / "metrics.json").read_text())
    assert metrics["status"] == "pruned" and metrics["error"].startswith("trial 0 pruned after epoch 1: val/acc_best=")
    assert metrics["val/acc_best"] == pytest.approx(trial.value)
    assert metrics["epochs"] == 0 and list(trial.intermediate_values) == [1]  # stopped in epoch 1 of 3
    summary = (tmp_path / "summary.md").read_text()
    assert (
        "- `trial_0`: pruned" in summary
        and "1 jobs, 0 completed, 1 pruned, diverged or interrupted, 0 failed" in summary
    )
    assert "error:" not in result.stderr  # an outcome of the search, logged, not an error


def test_failing_trials_are_told_fail_and_the_search_goes_on(tmp_path):
    study = new_study(tmp_path)
    for params in (
        {"optimizer": "nope", "optimizer.lr": 0.05},  # does not compose: never launched
        {"optimizer": "sgd", "optimizer.lr": -1.0},  # the job fails its config check
        {"optimizer": "sgd", "optimizer.lr": 0.05},
    ):
        study.enqueue_trial(params)
    result = search(
        tmp_path, "optimizer=choice(sgd,nope)", "optimizer.lr=choice(-1.0,0.05)", "hydra.sweeper.n_trials=3"
    )
    assert result.returncode == 1  # as a sweep does when a job failed
    assert "error: 2 of 3 sweep jobs did not complete" in result.stderr
    bad_option, bad_value, good = study_in(tmp_path).trials
    assert [t.state for t in (bad_option, bad_value, good)] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert bad_option.user_attrs["status"].startswith("failed: optimizer=nope is not an option (optimizer= one of:")
    assert bad_value.user_attrs["status"].startswith("failed: optimizer.lr=-1.0 must be positive")
    summary = (tmp_path / "summary.md").read_text()
    assert "- `trial_0`: failed: optimizer=nope is not an option" in summary
    assert "- `trial_1`: failed: optimizer.lr=-1.0 must be positive" in summary


def test_the_entry_returns_a_float_for_every_end_of_a_run(tmp_path):
    cfg = compose_cfg(tmp_path, "optimizer.lr=-1")
    hydra_cfg = compose_cfg(tmp_path, "optimizer.lr=-1", "hydra/sweeper=basic")  # with its `hydra` node
    with open_dict(hydra_cfg):
        hydra_cfg.hydra.mode = RunMode.MULTIRUN  # a sweep's job: a failure is recorded, not raised
    from backprop_lab.training.entry.train import main

    HydraConfig.instance().set_config(hydra_cfg)
    try:
        value = main(cfg)  # @hydra.main passes a given config straight to the function
    finally:
        HydraConfig.instance().cfg = None
    assert isinstance(value, float) and math.isnan(value)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"].startswith("failed: optimizer.lr=-1")

    def value_of(written: dict | None, metrics: dict | None = None) -> float:
        (tmp_path / "metrics.json").unlink(missing_ok=True)
        if written is not None:
            (tmp_path / "metrics.json").write_text(json.dumps(written))
        return objective(metrics or {}, cfg.optimized_metric, tmp_path)

    assert value_of(None, {"val/acc_best": 0.5}) == 0.5
    assert value_of({"status": "diverged", "val/acc_best": 0.25}) == 0.25  # its best before it diverged
    assert value_of({"status": "pruned", "val/acc_best": 0.125}) == 0.125
    assert math.isnan(value_of({"status": "failed: boom", "val/acc_best": 0.25}))  # an earlier run's value
    assert math.isnan(value_of(None))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("foo=interval(0,1)", "error: the search space entry foo is not a key of the config"),
        (
            "optimizer.lrr=interval(0.1,1)",
            "error: the search space entry optimizer.lrr is a key of none of the options",
        ),
        ("optimizer.lr=tag(log, interval(0, 1))", "cannot be searched: `low > 0` must hold for `log=True`"),
        ("+hydra.sweeper.params.data.batch_size='choice(5,7)'", "Hydra splits this key at its dots"),
        ("hydra/sweeper/sampler=nope", "error: hydra/sweeper/sampler=nope is not an option"),
        ("hydra.sweeper.sampler._target_=optuna.samplers.Nope", "error: hydra.sweeper.sampler (optuna.samplers.Nope)"),
        ("hydra.sweeper.n_jobs=0", "error: hydra.sweeper.n_trials=0 and n_jobs=0: n_trials must be at least 0"),
        (
            "hydra.sweeper.direction=up",
            "error: hydra.sweeper.direction=up is not an option (one of: maximize, minimize)",
        ),
    ],
    ids=["unknown-key", "key-of-no-option", "bad-interval", "dotted-params", "sampler", "target", "jobs", "direction"],
)
def test_a_bad_search_setting_is_one_line_naming_it(tmp_path, override, message):
    result = search(tmp_path, override, "hydra.sweeper.n_trials=0")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error: ")]) == 1

"""The logger= and callbacks= groups, and HPARAMS for every run whatever its end."""

from __future__ import annotations

import csv
import json
import math
import sqlite3

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab.errors import ConfigError
from backprop_lab.training.train import hparams, train
from conftest import QUIET, run_in_process

DIVERGING = ["trainer.max_epochs=3", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=10000"]


def events(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_hparams_are_what_a_user_sets_not_internals(make_cfg):
    hp = hparams(make_cfg("optimizer=momentum", "scheduler=step", "population=3"))
    assert hp["optimizer/name"] == "SGD" and hp["optimizer/momentum"] == 0.9 and hp["scheduler/name"] == "StepLR"
    assert hp["data/batch_size"] == 10 and hp["data/name"] == "MNISTSubset" and hp["population"] == 3
    assert hp["model/hidden"] == "[15]" and hp["activation"] == "sigmoid" and hp["trainer/max_epochs"] == 1
    internals = ("batches_per_block", "download", "device", "csv_path", "split_seed", "members", "_target_")
    assert not [k for k in hp if any(word in k for word in internals)], hp
    assert all(isinstance(v, (int, float, str, bool)) for v in hp.values())


def test_logger_csv_writes_its_csv_and_no_tensorboard_files(make_cfg, tmp_path):
    metrics = train(make_cfg("logger=csv", "population=2"))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert any(r["train/loss"] for r in rows) and any(r["val/acc"] for r in rows)
    final = [r for r in rows if r["hp/test_acc"]]
    assert float(final[-1]["hp/test_acc"]) == pytest.approx(metrics["test/acc"], abs=1e-6)
    saved = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert saved["population"] == 2 and "data/batches_per_block" not in saved
    assert not list(tmp_path.rglob("events.out.tfevents.*"))  # nor the members' TensorBoard runs


def test_logger_many_adds_mlflow_in_the_run_folder(make_cfg, tmp_path):
    metrics = train(make_cfg("logger=many", "logger.mlflow.run_name=tiny"))
    assert (tmp_path / "csv" / "metrics.csv").is_file() and list(tmp_path.glob("events.out.tfevents.*"))
    db = sqlite3.connect(tmp_path / "mlflow.db")
    [(run_id, name, status)] = db.execute("select run_uuid, name, status from runs").fetchall()
    assert (name, status) == ("tiny", "FINISHED")
    params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())
    assert params["optimizer/lr"] == "0.5" and params["model/kind"] == "manual"
    latest = dict(db.execute("select key, value from latest_metrics where run_uuid=?", (run_id,)).fetchall())
    assert latest["hp/test_acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_a_diverged_run_is_in_hparams_with_its_final_values(tmp_path):
    result = run_in_process("train.py", *QUIET, *DIVERGING, "activation=relu", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1 and "training diverged" in result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    acc = events(tmp_path)
    plugin = acc.PluginTagToContent("hparams")
    assert b"scheduler/gamma" in plugin["_hparams_/session_start_info"]
    assert b"hp/diverged" in plugin["_hparams_/experiment"]
    assert acc.Scalars("hp/diverged")[-1].value == 1.0
    assert acc.Scalars("hp/val_acc_best")[-1].value == pytest.approx(metrics["val/acc_best"], abs=1e-6)
    assert math.isnan(acc.Scalars("hp/test_acc")[-1].value)  # never tested: NaN, not a stale number


def test_callbacks_group_adds_delta_norms_and_early_stopping(make_cfg, tmp_path):
    cfg = make_cfg(
        "callbacks=[delta_norms,early_stopping]",
        "callbacks.delta_norms.n_images=50",
        "callbacks.early_stopping.patience=0",
        "callbacks.early_stopping.min_delta=1.0",  # no epoch improves by a whole 100 %: stop after the first check
        "trainer.max_epochs=5",
    )
    metrics = train(cfg)
    assert metrics["epochs"] == 2  # epoch 0 sets the best, epoch 1 fails to beat it by min_delta
    norms = json.loads((tmp_path / "delta_norms.json").read_text())["delta_norms"]
    assert len(norms) == 1 + 2 and all(len(n) == 2 and all(v > 0 for v in n) for n in norms)


@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (["+trainer.logger=false"], ["trainer.logger is not read", "logger=tensorboard|csv"]),
        (["+trainer.callbacks=[]"], ["trainer.callbacks is not read", "callbacks=delta_norms"]),
        (["logger=csv", "+logger.csv.no_such_argument=1"], ["logger.csv cannot be built", "no_such_argument"]),
        (["callbacks=early_stopping", "callbacks.early_stopping.mode=up"], ["callbacks.early_stopping", "mode"]),
    ],
)
def test_logger_and_callback_mistakes_are_one_line_config_errors(make_cfg, overrides, fragments):
    with pytest.raises(ConfigError) as e:
        train(make_cfg(*overrides))
    assert all(f in str(e.value) for f in fragments), str(e.value)
    assert "\n" not in str(e.value)

"""train(cfg): every config option, both models with every optimizer, checkpoints, resume, evaluate, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import hydra.utils
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab.errors import ConfigError
from backprop_lab.training.checkpoints import load_checkpoint
from backprop_lab.training.evaluate import evaluate
from backprop_lab.training.train import build_module, train
from conftest import CONF, compose_cfg

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "experiment", "debug", "hydra/launcher"]
OPTIONS = [
    (g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml")) if p.stem != "default" or g == "trainer"
]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(tmp_path, group, option):
    cfg = compose_cfg(tmp_path, f"{group}={option}")
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.batch_size == cfg.data.batch_size
    module = build_module(cfg)
    optimizers = module.configure_optimizers()
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    if group == "scheduler" and option != "none":
        assert optimizers["lr_scheduler"]["scheduler"].__class__.__name__ == cfg.scheduler._target_.rsplit(".", 1)[1]
    if option not in ("gpu", "ddp"):  # no GPU on CI machines; ddp is exercised in test_ddp.py
        hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    if group == "hydra/launcher":
        assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


@pytest.mark.parametrize("optimizer", sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
@pytest.mark.parametrize("model", ["manual", "reference"])
def test_fast_run_for_each_model_and_optimizer(make_cfg, tmp_path, model, optimizer):
    metrics = train(make_cfg(f"model={model}", f"optimizer={optimizer}"))
    assert metrics["status"] == "completed"
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["epochs"] == 1
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test/acc", "test/loss", "val/acc_best", "epochs", "data_source", "train_seconds", "status"):
        assert key in on_disk, key
    assert on_disk["data_source"].startswith("mnist-subset")
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "checkpoints").glob("best-*.ckpt"))


def test_default_run_learns(make_cfg):
    """The lecture's 784-15-10 network on 300 digits, 3 epochs: well above chance (10%)."""
    metrics = train(make_cfg("trainer.max_epochs=3"))
    assert metrics["val/acc_best"] > 0.5
    assert len(metrics["history"]["val/acc"]) == 3


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_manual_and_reference_train_to_the_same_weights(tmp_path, optimizer):
    runs = {}
    for model in ("manual", "reference"):
        cfg = compose_cfg(tmp_path / model, f"model={model}", f"optimizer={optimizer}", "data.train_size=100")
        train(cfg)
        runs[model] = _weights(tmp_path / model)
    assert list(runs["manual"]) == list(runs["reference"])
    for k, w in runs["manual"].items():
        torch.testing.assert_close(w, runs["reference"][k], rtol=1e-4, atol=1e-5, msg=k)


def test_resume_continues_and_evaluate_reproduces_test_accuracy(tmp_path):
    first = train(compose_cfg(tmp_path, "trainer.max_epochs=1"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    resumed = train(compose_cfg(tmp_path, "trainer.max_epochs=2", f"ckpt_path={last}"))
    assert resumed["epochs"] == 2 and first["epochs"] == 1
    assert torch.load(last, weights_only=True)["epoch"] == 1

    cfg = compose_cfg(
        tmp_path,
        f"ckpt_path={resumed['best_ckpt']}",
        "data=mnist_subset",
        "data.train_size=300",
        "data.val_size=100",
        "data.test_size=100",
        "accelerator=cpu",
        config_name="evaluate",
    )
    assert evaluate(cfg)["test/acc"] == pytest.approx(resumed["test/acc"], abs=1e-6)


def test_checkpoint_loads_into_either_model(make_cfg, tmp_path):
    train(make_cfg("model=manual"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    manual = load_checkpoint(last)
    reference = load_checkpoint(last, model="reference")
    assert type(manual.net).__name__ == "ManualMLP" and type(reference.net).__name__ == "ReferenceMLP"
    x = torch.rand(5, 784)
    torch.testing.assert_close(manual(x), reference(x))


def test_tensorboard_has_scalars_and_real_hparams(make_cfg, tmp_path):
    metrics = train(make_cfg("trainer.max_epochs=2", "log.histogram_every_n_steps=10", "log.pictures_every_n_epochs=1"))
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0, "images": 0, "histograms": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/acc",
        "lr-SGD",
        "delta_norm/layer1",
        "delta_norm/layer2",
        "dW_norm/layer1",
        "dW_norm/layer2",
    ):
        assert tag in scalars, (tag, scalars)
    assert {"features/hidden_units", "test/misclassified", "test/confusion_matrix"} <= set(events.Tags()["images"])
    assert {"weights/W1", "grads/W1"} <= set(events.Tags()["histograms"])
    first = events.Histograms("weights/W1")[0].histogram_value
    assert len(first.bucket) == 64 + 1 and first.num == 15 * 784  # 64 equal bins after torch's empty first one
    assert "hp_metric" not in scalars
    hp = events.Scalars("hp/test_acc")
    assert hp[-1].value == pytest.approx(metrics["test/acc"], abs=1e-6)
    plugin = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin and "_hparams_/experiment" in plugin
    assert b"optimizer/lr" in plugin["_hparams_/session_start_info"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.hidden=[]", None),  # no hidden layer is allowed: logistic regression
        ("model.hidden=[0]", "model.hidden"),
        ("activation=swish", "activation=swish is not an option"),
        ("loss=hinge", "loss=hinge is not an option"),
        ("optimizer.lr=0", "optimizer.lr=0"),
        ("optimizer.lr=-1", "must be positive"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1"),
        ("optimizer=momentum optimizer.momentum=1.0", "optimizer.momentum=1.0 must be in [0, 1)"),
        ("model.output=identity", "cross_entropy needs probabilities"),
        ("data.batch_size=1000", "larger than the training split"),
    ],
)
def test_bad_config_values_are_refused_before_training(make_cfg, tmp_path, override, message):
    cfg = make_cfg(*override.split())
    if message is None:
        assert train(cfg)["status"] == "completed"
        return
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_last_checkpoint_and_history_cover_every_epoch_even_when_the_best_is_early(make_cfg, tmp_path):
    """With a learning rate too small to change val/acc, the best checkpoint stays at epoch 1."""
    metrics = train(make_cfg("trainer.max_epochs=3", "optimizer.lr=1e-9"))
    assert Path(metrics["best_ckpt"]).name == "best-epoch000.ckpt"
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert metrics["history"]["epoch"] == [1, 2, 3]
    assert json.loads((tmp_path / "metrics.json").read_text())["history"]["epoch"] == [1, 2, 3]


def test_ckpt_path_last_resumes_the_folder_when_there_is_a_checkpoint(make_cfg, tmp_path):
    """What a requeued cluster job does: the same folder, `ckpt_path=last`."""
    assert train(make_cfg("trainer.max_epochs=1", "ckpt_path=last"))["epochs"] == 1  # nothing to resume: a fresh start
    assert train(make_cfg("trainer.max_epochs=2", "ckpt_path=last"))["epochs"] == 2  # continues from epoch 1
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    before = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run .* ckpt_path=last"):  # a new run would replace it
        train(make_cfg("trainer.max_epochs=1"))
    assert (tmp_path / "metrics.json").read_bytes() == before

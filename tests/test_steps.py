"""LitMLP's training loop: blocks of mini-batches per training_step, the two gradient paths, and what
must not change."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab.errors import Diverged
from backprop_lab.training import module
from backprop_lab.training import train as training
from backprop_lab.training.train import train
from conftest import compose_cfg

EPOCH = 30  # TINY: 300 training images in mini-batches of 10


def _run(tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    metrics = train(compose_cfg(tmp_path, "log.pictures_every_n_epochs=0", *overrides))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    return metrics, ckpt


def _net(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


@pytest.mark.parametrize("model", ["manual", "reference"])
def test_block_length_and_gradient_path_leave_the_weights_unchanged(tmp_path, monkeypatch, model):
    """One mini-batch per call, blocks of 5, the whole epoch in one block, and gradients through
    autograd (manual_backward, as under DDP): the same optimizer steps on the same batches, so
    bitwise the same weights."""
    runs = {}
    for name, block in (("plain", "null"), ("blocks", "5"), ("epoch", "100")):
        runs[name] = _run(tmp_path / name, f"model={model}", "trainer.max_epochs=2", f"data.batches_per_block={block}")
    monkeypatch.setattr(module, "gradients_without_autograd", lambda trainer: False)
    runs["standard"] = _run(tmp_path / "standard", f"model={model}", "trainer.max_epochs=2", "data.batches_per_block=5")
    plain_metrics, plain = runs.pop("plain")
    assert plain["global_step"] == 2 * EPOCH
    for name, (metrics, ckpt) in runs.items():
        assert ckpt["global_step"] == 2 * EPOCH, name
        for k, w in _net(plain).items():
            assert torch.equal(ckpt["state_dict"][k], w), (name, k)
        assert metrics["test/acc"] == plain_metrics["test/acc"], name


def test_logged_steps_count_optimizer_steps(tmp_path):
    _run(tmp_path, "trainer.max_epochs=2", "data.batches_per_block=7", "log.grad_every_n_steps=10")  # blocks of 7 steps
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    steps_of = lambda tag: [e.step for e in events.Scalars(tag)]
    assert steps_of("train/loss") == list(range(0, 2 * EPOCH, 5))  # every log_every_n_steps-th step, at that step
    assert steps_of("delta_norm/layer1") == list(range(0, 2 * EPOCH, 10))
    assert steps_of("val/acc") == [EPOCH, 2 * EPOCH]  # epoch metrics at the optimizer step they follow
    assert steps_of("lr-SGD") == [0, EPOCH]
    first = events.Scalars("train/loss")[0].value
    assert 1.5 < first < 3.5  # the cost of the untrained net on 10 classes: about ln 10


def test_max_steps_stops_inside_a_block(tmp_path):
    _, blocks = _run(tmp_path / "a", "+trainer.max_steps=7", "data.batches_per_block=5", "test=false")
    _, plain = _run(tmp_path / "b", "+trainer.max_steps=7", "data.batches_per_block=null", "test=false")
    assert blocks["global_step"] == plain["global_step"] == 7
    for k, w in _net(plain).items():
        assert torch.equal(blocks["state_dict"][k], w), k


@pytest.mark.parametrize("interval,every,expected_steps", [("epoch", 1, 3), ("step", 20, 4)])
def test_schedulers_step_at_their_interval(tmp_path, interval, every, expected_steps):
    """StepLR halves the rate every `every` epochs or steps: 3 epochs of 30 steps give 3 or 4 halvings."""
    _, ckpt = _run(
        tmp_path,
        "scheduler=step",
        f"scheduler.interval={interval}",
        f"scheduler.step_size={every}",
        "trainer.max_epochs=3",
        "data.batches_per_block=7",
    )
    (sched,) = ckpt["lr_schedulers"]
    lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    expected_calls = 3 if interval == "epoch" else 3 * EPOCH
    assert sched["last_epoch"] == expected_calls
    assert lr == pytest.approx(0.5 * 0.5**expected_steps)


def test_plateau_scheduler_reads_its_monitor(tmp_path):
    metrics, ckpt = _run(
        tmp_path, "scheduler=plateau", "scheduler.patience=0", "trainer.max_epochs=3", "optimizer.lr=1e-6"
    )  # nothing improves by 1e-4: every epoch after the first halves the rate
    assert metrics["status"] == "completed"
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-6 * 0.5**2)


class NaNGradientAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step:
            pl_module.net.b[0].grad[0] = float("nan")


@pytest.mark.parametrize("block", ["5", "null"])
def test_a_nan_gradient_stops_training_at_its_own_step(tmp_path, monkeypatch, block):
    """The loss of step 7 is finite; its gradient is not: the run stops at step 7, not at step 8."""
    build = training.build_trainer

    def with_nan(cfg, out):
        trainer, *rest = build(cfg, out)
        trainer.callbacks.insert(0, NaNGradientAt(7))
        return (trainer, *rest)

    monkeypatch.setattr(training, "build_trainer", with_nan)
    with pytest.raises(Diverged, match="a gradient became NaN or infinite at step 7 "):
        train(compose_cfg(tmp_path, f"data.batches_per_block={block}"))


def test_gradients_bypass_autograd_only_where_nothing_needs_the_graph():
    """net.backprop writes .grad directly on one device in full precision or bf16 autocast; DDP (its
    all-reduce hooks autograd) and other precisions (16-mixed's GradScaler, half-precision weights)
    take manual_backward. (On a CPU Lightning turns 16-mixed into bf16-mixed: 16-true stands in.)"""
    cpu = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert module.gradients_without_autograd(L.Trainer(**cpu, devices=1))
    assert module.gradients_without_autograd(L.Trainer(**cpu, devices=1, precision="bf16-mixed"))
    assert not module.gradients_without_autograd(L.Trainer(**cpu, devices=1, precision="16-true"))
    assert not module.gradients_without_autograd(L.Trainer(**cpu, devices=2, strategy="ddp"))


def test_optimizer_step_hooks_run_at_every_step_of_a_block(tmp_path, monkeypatch):
    class CountSteps(L.Callback):
        calls = 0

        def on_train_start(self, trainer, pl_module):
            trainer.optimizers[0].register_step_post_hook(
                lambda *args: setattr(CountSteps, "calls", CountSteps.calls + 1)
            )

    cfg = compose_cfg(tmp_path, "log.pictures_every_n_epochs=0", "trainer.max_epochs=2", "data.batches_per_block=7")
    original = training.build_trainer

    def with_counter(*args, **kwargs):
        trainer, *rest = original(*args, **kwargs)
        trainer.callbacks.append(CountSteps())
        return (trainer, *rest)

    monkeypatch.setattr(training, "build_trainer", with_counter)
    train(cfg)
    assert CountSteps.calls == 2 * EPOCH

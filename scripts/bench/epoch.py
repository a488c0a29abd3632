"""One epoch through the project's Lightning path (`lightning_epoch`) vs a bare PyTorch loop
(`plain_epoch`), with Lightning's own floor per call (`floor_epoch`) timed in the same rounds."""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.data import Data
from bench.settings import COST, LR, Budget
from bench.step import make_model, make_step
from bench.timing import Pair, interleave_all, sync


def compose_train_cfg(out_dir: str | Path, batch_size: int, train_size: int | None, accelerator: str):
    """conf/train.yaml as train.py composes it: 784-30-10 ManualMLP, SGD, one epoch, no validation or test."""
    from backprop_lab.training.config import compose

    overrides = [
        "data=fashion_mnist",
        "data.val_size=0",
        f"data.batch_size={batch_size}",
        "data.download=false",
        f"data.train_size={'null' if train_size is None else train_size}",
        "model=manual",
        "model.hidden=[30]",
        "optimizer=sgd",
        "scheduler=none",
        "trainer.max_epochs=1",
        f"trainer.accelerator={accelerator}",
        "+trainer.limit_val_batches=0",
        "trainer.enable_model_summary=false",
        "test=false",
    ]
    return compose(overrides, out_dir)


@contextlib.contextmanager
def _quiet_fit(*messages: str) -> Iterator[None]:
    """A fit without the framework's deprecation noise and the given warnings (which a timed epoch expects)."""
    from backprop_lab.training.cli import ignore_framework_deprecations

    with warnings.catch_warnings():
        ignore_framework_deprecations()
        for message in messages:
            warnings.filterwarnings("ignore", message=f".*{re.escape(message)}")
        yield


def _epoch_timer_callback(device):
    import lightning as L

    class EpochTimer(L.Callback):
        """Seconds from on_train_epoch_start to on_train_epoch_end (validation is off), and the steps."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.steps = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            sync(device)
            self._t0 = time.perf_counter()
            self._step0 = trainer.global_step

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            sync(device)
            self.seconds.append(time.perf_counter() - self._t0)
            self.steps = trainer.global_step - self._step0

    return EpochTimer()


def lightning_epoch(
    data: Data, batch_size: int, device: str, train_size: int | None, seed: int = 42
) -> tuple[float, int, bool]:
    """One epoch through the project's path: `build_module` + `build_trainer` (default callbacks, TensorBoard
    logging, checkpointing) + `trainer.fit` with the data module, as `train(cfg)` does; only the training
    epoch is timed. Returns (seconds, steps, progress bar shown)."""
    import logging

    from backprop_lab.training import config
    from backprop_lab.training.train import build_module, build_trainer

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-lightning-") as out:
        cfg = compose_train_cfg(out, batch_size, train_size, "gpu" if device == "cuda" else "cpu")
        config.check(cfg)
        dm = data.datamodule
        config.check_batch_size(batch_size, dm.sizes["train"])
        dm.batch_size = batch_size  # the data module rebuilds its loader for the new batch size
        torch.manual_seed(seed)
        module = build_module(cfg, dm.n_features, dm.n_classes)
        trainer = build_trainer(cfg, Path(out))[0]  # (trainer, checkpoint, history, ...)
        timer = _epoch_timer_callback(device)
        trainer.callbacks.append(timer)
        # no validation, hence no val/acc to monitor; tiny epochs log rarely
        with _quiet_fit("could not find the monitored key", "smaller than the logging interval"):
            trainer.fit(module, datamodule=dm)
        bar = trainer.progress_bar_callback is not None
    return timer.seconds[0], timer.steps, bar


def plain_epoch(data: Data, batch_size: int, device: str, seed: int = 42) -> tuple[float, int]:
    """The same epoch as a bare loop: ManualMLP 784-30-10, SGD(lr=0.5), the same InMemoryLoader batches,
    and the same step as LitMLP's (`make_step`: `backprop`, then the optimizer's step and zero_grad)."""
    from backprop_lab.data.loader import InMemoryLoader

    x, y = data.datamodule.train_x.to(device), data.datamodule.train_y.to(device)
    loader = InMemoryLoader(x, y, batch_size, shuffle=True, seed=data.datamodule.seed)  # epoch 0's order
    step = make_step(make_model("manual", [784, 30, 10], device, seed))
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for xb, yb in loader:
        step(xb, yb)
        n += 1
    sync(device)
    return time.perf_counter() - t0, n


def floor_epoch(data: Data, batch_size: int, device: str, seed: int = 42) -> tuple[float, int]:
    """Lightning's own floor per training_step: the same epoch through a bare Trainer (no logger, no
    checkpointing, no callbacks but the timer), automatic optimization, one mini-batch per
    training_step whose only work is the cost. Not a target: it shows what Lightning costs per call,
    which the project pays once per block of mini-batches instead (data.batches_per_block)."""
    import lightning as L

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model("manual", [784, 30, 10], seed=seed)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.net.loss(self.net(x), y, COST)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    dm = data.datamodule
    dm.batch_size, batches_per_block, dm.batches_per_block = (
        batch_size,
        dm.batches_per_block,
        None,
    )  # one mini-batch per training_step
    timer = _epoch_timer_callback(device)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    try:
        with _quiet_fit("no `validation_step`"):  # the data module has a val loader
            trainer.fit(Bare(), datamodule=dm)
    finally:
        dm.batches_per_block = batches_per_block
    return timer.seconds[0], timer.steps


def epoch_pair(data: Data, batch_size: int, budget: Budget, device: str = "cpu") -> tuple[Pair, int, bool, list[float]]:
    """Lightning epoch vs bare epoch, interleaved; each Lightning epoch is a fresh max_epochs=1 fit.
    Also times Lightning's floor (`floor_epoch`) in the same rounds; returns its times last."""
    info: dict[str, Any] = {}

    def a() -> float:
        s, info["steps"], info["bar"] = lightning_epoch(data, batch_size, device, budget.epoch_train_size)
        return s

    def b() -> float:
        s, info["plain_steps"] = plain_epoch(data, batch_size, device)
        return s

    def c() -> float:
        s, info["floor_steps"] = floor_epoch(data, batch_size, device)
        return s

    times = interleave_all({"lightning": a, "plain": b, "floor": c}, budget.epoch_repeats, budget.epoch_warmup)
    if not info["steps"] == info["plain_steps"] == info["floor_steps"]:
        raise RuntimeError(
            f"Lightning ran {info['steps']} steps, the bare loop {info['plain_steps']},"
            f" the bare Trainer {info['floor_steps']}"
        )
    return Pair("lightning", "plain", times["lightning"], times["plain"]), info["steps"], info["bar"], times["floor"]

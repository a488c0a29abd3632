"""The LightningModule (the system): one of the two MLPs, its cost, metrics, optimizer and schedule.

It takes only primitive, typed arguments and saves them with `save_hyperparameters`, so a
checkpoint rebuilds the module without any config, and `model=` can be switched at load time
(both networks share their state_dict).

Training uses manual optimization so that one `training_step` can run a whole `data.Block` of
mini-batches, one optimizer step each (several `opt.step()` calls per `training_step` is documented
manual-optimization behaviour): Lightning's own work per call (hooks, progress, logging checks)
would otherwise cost more than a small MLP's step. Every mini-batch is still a full step through
Lightning's `LightningOptimizer.step()` (the `on_before_optimizer_step` hooks, clipping, the
optimizer), counted in `global_step`, and every logged x-axis counts optimizer steps.
"""

from __future__ import annotations

from typing import Any

import hydra.utils
import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from backprop_lab.core import costs
from backprop_lab.core.models import MODELS
from backprop_lab.data.loader import Block

SCHEDULER_KEYS = ("interval", "frequency", "monitor")  # Lightning's keys, not the scheduler's
CLIP_ALGORITHMS = ("norm", "value")
DIRECT_PRECISIONS = ("32-true", "64-true", "bf16-mixed")  # no GradScaler, parameters in full precision


def gradients_without_autograd(trainer: L.Trainer) -> bool:
    """Whether `net.backprop` may write the gradients directly: one device (no DDP all-reduce to feed)
    and a precision without a GradScaler (which must scale the loss before the backward)."""
    return isinstance(trainer.strategy, SingleDeviceStrategy) and trainer.precision in DIRECT_PRECISIONS


class LitMLP(L.LightningModule):
    def __init__(
        self,
        sizes: list[int],
        model: str = "manual",
        activation: str = "sigmoid",
        output: str = "softmax",
        cost: str = "cross_entropy",
        init: str = "pytorch",
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        clip_val: float | None = None,
        clip_algorithm: str = "norm",
    ) -> None:
        """`optimizer`/`scheduler` are `_target_` dicts (Hydra's `_partial_` style), completed with
        the parameters / optimizer in `configure_optimizers`. `clip_val`/`clip_algorithm` clip the
        gradients before each step (what `Trainer(gradient_clip_val=...)` does under automatic
        optimization; train.py maps `trainer.gradient_clip_val` here)."""
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r} (choose one of: {', '.join(MODELS)})")
        if clip_algorithm not in CLIP_ALGORITHMS:
            raise ValueError(f"unknown clip_algorithm {clip_algorithm!r} (choose one of: {', '.join(CLIP_ALGORITHMS)})")
        costs.check(cost, output)
        self.save_hyperparameters()
        self.automatic_optimization = False  # see the module docstring
        self.net = MODELS[model](sizes, activation, output, init)
        n_classes = sizes[-1]
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(n_classes, average="micro") for _ in range(3))
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        for (
            metric
        ) in self.metrics():  # their running sums live in checkpoints, so a resumed epoch ends as if never stopped
            metric.persistent(True)
        self._direct, self._step_interval = False, False

    def metrics(self) -> list:
        return [
            self.train_acc,
            self.val_acc,
            self.test_acc,
            self.train_loss,
            self.val_loss,
            self.test_loss,
            self.val_acc_best,
        ]

    def forward(self, x: Tensor) -> Tensor:
        """z^L for a batch of images; `predict_proba` gives a^L."""
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        z = self.net(x)  # (B, n_L)
        C = self.net.loss(z, y, self.hparams.cost)
        return C, z.argmax(dim=1)  # the decision: argmax of the output

    def on_train_start(self) -> None:
        self._direct = gradients_without_autograd(self.trainer)
        self._step_interval = any(c.interval == "step" for c in self.trainer.lr_scheduler_configs)

    def training_step(self, batch: Block | tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        """One optimizer step per mini-batch of the block (a plain (x, y) batch is a block of one).

        On one device without a GradScaler the gradients come from `net.backprop`: for the manual
        model, the hand-written backward without an autograd graph. Otherwise the cost goes through
        autograd and `manual_backward` (DDP all-reduces the Function's gradients).
        """
        x, y = batch
        if not isinstance(batch, Block):
            x, y = x.unsqueeze(0), y.unsqueeze(0)  # (1, B, ...), (1, B)
        s0, max_steps = self.global_step, self.trainer.max_steps
        if max_steps >= 0:  # stop inside the block when trainer.max_steps is reached
            x, y = x[: max(0, max_steps - s0)], y[: max(0, max_steps - s0)]
        opt = self.optimizers()
        cost = self.hparams.cost
        losses, outputs = [], []
        for xb, yb in zip(x, y):  # (B, n_0), (B,)
            if self._direct:
                C, z = self.net.backprop(xb, yb, cost)  # gradients in .grad
            else:
                z = self.net(xb)
                C = self.net.loss(z, yb, cost)
                self.manual_backward(C)
            opt.step()  # the on_before_optimizer_step hooks (callbacks', then ours: clipping), the update
            opt.zero_grad()
            if self._step_interval:
                self._step_schedulers("step")
            losses.append(C.detach())
            outputs.append(z.detach())
        if not losses:
            return {}
        C = torch.stack(losses)  # (k,) one cost per step
        preds = torch.stack(outputs).argmax(dim=2)  # (k, B) the decision: argmax of the output
        self.train_loss.update(C)
        self.train_acc.update(preds.flatten(), y[: len(losses)].flatten())
        self._log_step_losses(C, s0)
        return {"loss": C, "first_step": s0}

    def _log_step_losses(self, C: Tensor, s0: int) -> None:
        """train/loss of every log_every_n_steps-th step, at that step (one host sync per block at most)."""
        every = self.trainer.log_every_n_steps
        if every <= 0 or not self.loggers:
            return
        first = -s0 % every  # index of the first step s0 + i with (s0 + i) % every == 0
        if first >= len(C):
            return
        for i, value in zip(range(first, len(C), every), C[first::every].tolist()):
            for logger in self.loggers:
                logger.log_metrics({"train/loss": value}, step=s0 + i)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clipping, after the callbacks' hooks (they see the raw gradients, as under automatic optimization)."""
        if self.hparams.clip_val:
            self.clip_gradients(optimizer, self.hparams.clip_val, self.hparams.clip_algorithm)

    def _log_at_global_step(self) -> None:
        """Epoch metrics at the optimizer step they were measured after: Lightning takes a logged
        `step` as the x-axis (it would otherwise count training_step calls, i.e. blocks)."""
        self.log("step", float(self.global_step))
        self.log("epoch", float(self.current_epoch))

    def on_train_epoch_start(self) -> None:
        """The learning rate of each optimizer at the epoch's first step (what LearningRateMonitor shows)."""
        for opt in self.trainer.optimizers:
            for logger in self.loggers:
                logger.log_metrics({f"lr-{type(opt).__name__}": opt.param_groups[0]["lr"]}, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self.train_loss)
        self.log("train/acc", self.train_acc)
        self._log_at_global_step()
        self._step_schedulers("epoch")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        C, pred = self._step(batch)
        self.val_loss(C, weight=len(pred))
        self.val_acc(pred, batch[1])

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self._log_at_global_step()
        if not self.trainer.sanity_checking:
            self.val_acc_best(acc)
            self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        C, pred = self._step(batch)
        self.test_loss(C, weight=len(pred))
        self.test_acc(pred, batch[1])
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        self._log_at_global_step()

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.net.predict_proba(x)

    def configure_optimizers(self) -> Any:
        if not self.hparams.optimizer:
            raise ValueError("no optimizer configured (pass optimizer={'_target_': 'torch.optim.SGD', 'lr': ...})")
        opt_cfg = {k: v for k, v in self.hparams.optimizer.items() if k != "_partial_"}
        optimizer = hydra.utils.instantiate(opt_cfg, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        sched_cfg = {k: v for k, v in self.hparams.scheduler.items() if k not in (*SCHEDULER_KEYS, "_partial_")}
        scheduler = hydra.utils.instantiate(sched_cfg, optimizer=optimizer)
        # `monitor` stays here: under manual optimization Lightning drops it (we step the schedulers).
        extra = {k: self.hparams.scheduler[k] for k in SCHEDULER_KEYS if k != "monitor" and k in self.hparams.scheduler}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **extra}}

    def _step_schedulers(self, interval: str) -> None:
        """Manual optimization leaves the schedulers to us; Lightning's rules: every `frequency` epochs
        or steps, and a plateau scheduler reads its `monitor` from the logged metrics."""
        count = self.current_epoch + 1 if interval == "epoch" else self.global_step
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency:
                continue
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                monitor = self.hparams.scheduler.get("monitor", "val/loss")
                value = self.trainer.callback_metrics.get(monitor)
                if value is None:
                    raise ValueError(
                        f"scheduler monitor {monitor!r} was not logged this epoch "
                        f"(monitor one of: {', '.join(sorted(self.trainer.callback_metrics)) or 'none yet'})"
                    )
                config.scheduler.step(value)
            else:
                config.scheduler.step()

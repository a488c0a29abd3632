"""The LightningModule (the system): one of the two MLPs, its cost, metrics, optimizer and schedule.

It takes only primitive, typed arguments and saves them with `save_hyperparameters`, so a
checkpoint rebuilds the module without any config, and `model=` can be switched at load time
(both networks share their state_dict).
"""

from __future__ import annotations

from typing import Any

import hydra.utils
import lightning as L
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from backprop_lab import costs
from backprop_lab.models import MODELS

SCHEDULER_KEYS = ("interval", "frequency", "monitor")  # Lightning's keys, not the scheduler's


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
    ) -> None:
        """`optimizer`/`scheduler` are `_target_` dicts (Hydra's `_partial_` style), completed with
        the parameters / optimizer in `configure_optimizers`."""
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r} (choose one of: {', '.join(MODELS)})")
        costs.check(cost, output)
        self.save_hyperparameters()
        self.net = MODELS[model](sizes, activation, output, init)
        n_classes = sizes[-1]
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(n_classes, average="micro") for _ in range(3))
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        for metric in self.metrics():  # their running sums live in checkpoints, so a resumed epoch ends as if never stopped
            metric.persistent(True)

    def metrics(self) -> list:
        return [self.train_acc, self.val_acc, self.test_acc, self.train_loss, self.val_loss, self.test_loss, self.val_acc_best]

    def forward(self, x: Tensor) -> Tensor:
        """z^L for a batch of images; `predict_proba` gives a^L."""
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        z = self.net(x)  # (B, n_L)
        C = self.net.loss(z, y, self.hparams.cost)
        return C, z.argmax(dim=1)  # the decision: argmax of the output

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        C, pred = self._step(batch)
        self.train_loss(C)
        self.train_acc(pred, batch[1])
        self.log("train/loss", C, on_step=True, on_epoch=False)
        return C

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self.train_loss)
        self.log("train/acc", self.train_acc)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        C, pred = self._step(batch)
        self.val_loss(C, weight=len(pred))
        self.val_acc(pred, batch[1])

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        if not self.trainer.sanity_checking:
            self.val_acc_best(acc)
            self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        C, pred = self._step(batch)
        self.test_loss(C, weight=len(pred))
        self.test_acc(pred, batch[1])
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

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
        extra = {k: self.hparams.scheduler[k] for k in SCHEDULER_KEYS if k in self.hparams.scheduler}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **extra}}

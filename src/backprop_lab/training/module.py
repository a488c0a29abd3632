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

`population=N` trains N networks at once (seeds seed..seed+N-1, each on its own order of
mini-batches) in the same pass. Every metric is kept per member; what is logged is the mean over the
members still training. A member whose loss or gradient turns non-finite is retired (its weights
held where they are) by `DivergenceGuard`; the run fails only when every member has.
"""

from __future__ import annotations

from typing import Any

import hydra.utils
import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor

from backprop_lab.core import activations, costs
from backprop_lab.core.models import MODELS
from backprop_lab.data.loader import Block
from backprop_lab.training.members import MemberMax, MemberMean, build_net, clip_member_norms

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
        population: int = 1,
        seed: int | None = None,
    ) -> None:
        """`optimizer`/`scheduler` are `_target_` dicts (Hydra's `_partial_` style), completed with
        the parameters / optimizer in `configure_optimizers`. `clip_val`/`clip_algorithm` clip the
        gradients before each step (what `Trainer(gradient_clip_val=...)` does under automatic
        optimization; train.py maps `trainer.gradient_clip_val` here), each member by its own norm.
        `population` members start from seeds seed, seed+1, ... (one network: whatever torch's
        generator holds, as train() seeds it)."""
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r} (choose one of: {', '.join(MODELS)})")
        if clip_algorithm not in CLIP_ALGORITHMS:
            raise ValueError(f"unknown clip_algorithm {clip_algorithm!r} (choose one of: {', '.join(CLIP_ALGORITHMS)})")
        costs.check(cost, output)
        if isinstance(population, bool) or not isinstance(population, int) or population < 1:
            raise ValueError(f"population must be a whole number >= 1, got {population!r}")
        self.save_hyperparameters(logger=False)  # the loggers get train.py's user-facing hparams instead
        self.automatic_optimization = False  # see the module docstring
        self.net = build_net(model, sizes, activation, output, init, population, seed)
        N = self.members = population
        # Running sums per member, kept in checkpoints: a resumed epoch ends as if never stopped.
        self.train_loss, self.val_loss, self.test_loss = MemberMean(N), MemberMean(N), MemberMean(N)
        self.train_acc, self.val_acc, self.test_acc = MemberMean(N), MemberMean(N), MemberMean(N)
        self.val_acc_best, self.ensemble_acc = MemberMax(N), MemberMean(1)
        self.register_buffer("alive", torch.ones(N, dtype=torch.bool), persistent=False)
        self.diverged_at: list[int | None] = [None] * N  # the step at which each member diverged
        self.member_values: dict[str, Tensor] = {}  # the last epoch's and test's values per member
        self._frozen: list[Tensor] | None = None  # the weights retired members are held at
        self._best: list[Tensor] | None = None  # a population's weights, each member's at its best val/acc
        self._direct, self._step_interval = False, False

    def alive_mean(self, values: Tensor) -> Tensor:
        """The mean of per-member values (..., N) over the members still training; NaN when none is."""
        alive = self.alive.to(values.device)
        if not alive.any():
            return values.new_full(values.shape[:-1], float("nan")).float()
        return values[..., alive].mean(-1).float()

    def forward(self, x: Tensor) -> Tensor:
        """z^L for a batch of images; `predict_proba` gives a^L."""
        return self.net(x)

    def _evaluate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Every member on the same batch: costs (N,), fraction correct (N,), z^L (N, B, n_L)."""
        x, y = batch
        z = self.net(x)  # (B, n_L) or (N, B, n_L)
        C = self.net.loss(z, y, self.hparams.cost).reshape(self.members)
        z = z.reshape(self.members, len(y), -1)
        correct = (z.argmax(dim=-1) == y).float().mean(-1)  # the decision: argmax of the output
        return C, correct, z

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
        for xb, yb in zip(x, y):  # (B, n_0), (B,); a population's (N, B, n_0), (N, B)
            if self._direct:
                C, z = self.net.backprop(xb, yb, cost)  # gradients in .grad
            else:
                z = self.net(xb)
                C = self.net.loss(z, yb, cost)
                self.manual_backward(C.sum())  # the members' costs add up: each gets its own gradient
            opt.step()  # the on_before_optimizer_step hooks (callbacks', then ours: clipping), the update
            opt.zero_grad()
            if self._frozen is not None:
                self._hold_retired()
            if self._step_interval:
                self._step_schedulers("step")
            losses.append(C.detach())
            outputs.append(z.detach())
        if not losses:
            return {}
        k, N = len(losses), self.members
        C = torch.stack(losses).reshape(k, N)  # one cost per step and member
        correct = torch.stack(outputs).argmax(dim=-1).reshape(k, N, -1) == y[:k].reshape(k, N, -1)  # (k, N, B)
        self.train_loss.update(C)
        self.train_acc.update(correct.float().mean(-1), correct.shape[-1])
        self._log_step_losses(self.alive_mean(C), s0)
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
        """Clipping, after the callbacks' hooks (they see the raw gradients, as under automatic optimization);
        a population's norms are each member's own."""
        clip_val, algorithm = self.hparams.clip_val, self.hparams.clip_algorithm
        if not clip_val:
            return
        if self.members == 1 or algorithm == "value":  # by value: elementwise, so per member already
            self.clip_gradients(optimizer, clip_val, algorithm)
        else:
            clip_member_norms([p.grad for p in self.net.parameters() if p.grad is not None], self.members, clip_val)

    def retire(self, first_bad: dict[int, int]) -> None:
        """Stop training the members {k: step} whose loss or gradient went non-finite at that step:
        from now on their weights are held where they are; the other members go on."""
        for k, step in first_bad.items():
            self.alive[k] = False
            self.diverged_at[k] = step
        self._frozen = [p.detach().clone() for p in self.net.parameters()]

    def _hold_retired(self) -> None:
        dead = ~self.alive
        with torch.no_grad():
            for p, frozen in zip(self.net.parameters(), self._frozen):
                p[dead] = frozen[dead]

    def _keep_best(self, acc: Tensor) -> None:
        """A population keeps each member's weights of its best validation epoch (what a run of that
        member alone tests: its best checkpoint), since its checkpoints follow the mean."""
        if self.members == 1:
            return
        params = [p.detach() for p in self.net.parameters()]
        if self._best is None:
            self._best = [p.clone() for p in params]
            return
        better = (acc.to(self.val_acc_best.best.device) > self.val_acc_best.best).to(params[0].device)  # (N,)
        for best, p in zip(self._best, params):
            best[better] = p[better]

    def use_best_weights(self) -> None:
        """Every member back to the weights of its own best validation epoch (a population only)."""
        if self._best is not None:
            with torch.no_grad():
                for p, best in zip(self.net.parameters(), self._best):
                    p.copy_(best)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["members"] = {
            "alive": self.alive.cpu(),
            "diverged_at": list(self.diverged_at),
            "frozen": self._frozen,
            "best": self._best,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Retired members stay retired: a resumed run holds them, testing an older best checkpoint
        does not bring back members that diverged after it."""
        state = checkpoint.get("members")
        if state is None:
            return
        self.alive &= state["alive"].to(self.alive.device)
        self.diverged_at = [a if a is not None else b for a, b in zip(self.diverged_at, state["diverged_at"])]
        if state["frozen"] is not None and self._frozen is None:
            self._frozen = [t.to(self.alive.device) for t in state["frozen"]]
        if state.get("best") is not None and self._best is None:
            self._best = [t.to(self.alive.device) for t in state["best"]]

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

    def _log_members(self, **metrics: Tensor) -> None:
        """Each (N,) value logged as the mean over the members still training, and kept per member."""
        for name, values in metrics.items():
            self.member_values[name] = values
            self.log(name, self.alive_mean(values), prog_bar=name in ("val/loss", "val/acc"))

    def on_train_epoch_end(self) -> None:
        if self.train_loss.update_called:
            self._log_members(**{"train/loss_epoch": self.train_loss.values(), "train/acc": self.train_acc.values()})
        self.train_loss.reset()
        self.train_acc.reset()
        self._log_at_global_step()
        self._step_schedulers("epoch")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        C, correct, _ = self._evaluate(batch)
        self.val_loss.update(C, len(batch[1]))
        self.val_acc.update(correct, len(batch[1]))

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.values()
        self._log_members(**{"val/loss": self.val_loss.values(), "val/acc": acc})
        self._log_at_global_step()
        if not self.trainer.sanity_checking:
            self._keep_best(acc)
            self.val_acc_best.update(acc)
            self._log_members(**{"val/acc_best": self.val_acc_best.values()})
        self.val_loss.reset()
        self.val_acc.reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        C, correct, z = self._evaluate(batch)
        y = batch[1]
        self.test_loss.update(C, len(y))
        self.test_acc.update(correct, len(y))
        if self.members > 1 and self.alive.any():  # the ensemble: the members' probabilities averaged
            p = activations.output(z[self.alive], self.hparams.output).mean(0)  # (B, n_L)
            self.ensemble_acc.update((p.argmax(dim=-1) == y).float().mean(), len(y))

    def on_test_epoch_end(self) -> None:
        self._log_members(**{"test/loss": self.test_loss.values(), "test/acc": self.test_acc.values()})
        if self.members > 1:
            self.log("ensemble/test_acc", self.ensemble_acc.values()[0].float())
        self._log_at_global_step()
        for metric in (self.test_loss, self.test_acc, self.ensemble_acc):
            metric.reset()

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """a^L: (B, n_L), or (N, B, n_L) for a population."""
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

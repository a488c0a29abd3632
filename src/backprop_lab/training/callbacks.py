"""Lightning callbacks for the console and for safety: epoch history, divergence, graceful interrupts."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from backprop_lab.errors import Diverged

log = logging.getLogger("backprop_lab")


class EpochHistory(L.Callback):
    """Collects the epoch metrics for metrics.json and sweep plots (a population's: the means over its
    members still training, and each member's val/acc as `val/acc_members`); with `echo`, logs one line per epoch:

    `epoch 3/10  train/loss 0.41  train/acc 0.88  val/loss 0.38  val/acc 0.90 (best 0.91)  2.1s`
    """

    KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self._t0 = time.perf_counter()
        self.history: dict[str, list[float]] = {"epoch": [], **{k: [] for k in self.KEYS}}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics  # validation ran before this hook; one host sync per epoch
        # The module logs its epoch training metrics after the callbacks' hook, so read them at the source.
        train = {
            "train/loss": getattr(pl_module, "train_loss", None),
            "train/acc": getattr(pl_module, "train_acc", None),
        }
        values = {
            k: round(pl_module.alive_mean(metric.values()).item(), 6)
            for k, metric in train.items()
            if metric is not None and metric.update_called
        }
        values.update({k: round(m[k].item(), 6) for k in ("val/loss", "val/acc") if k in m})
        self.history["epoch"].append(trainer.current_epoch + 1)
        for k in self.KEYS:
            self.history[k].append(values.get(k, float("nan")))
        member_acc = getattr(pl_module, "member_values", {}).get("val/acc")
        if member_acc is not None and len(member_acc) > 1:  # a population: each member's curve, for error bands
            self.history.setdefault("val/acc_members", []).append([round(v, 6) for v in member_acc.tolist()])
        if self.echo:
            best = f" (best {m['val/acc_best'].item():.4f})" if "val/acc_best" in m else ""
            log.info(
                "epoch %d/%d  %s%s  %.1fs",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                "  ".join(f"{k} {v:.4f}" for k, v in values.items()),
                best,
                time.perf_counter() - self._t0,
            )

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = state_dict["history"]


class DivergenceGuard(L.Callback):
    """Stops training at the first step whose loss or gradient is NaN or infinite, or whose loss is
    `loss_factor` times its first value; in a population, retires each member that does so and
    stops only when none is left.

    Bounded activations and the stable costs keep a wildly unstable run finite (sigmoid with
    lr=1000 swings at a loss of ~1,000 instead of ~2), hence the factor. It reads the per-step,
    per-member losses that `LitMLP.training_step` returns for its block and the gradient norms it
    records in `on_before_optimizer_step` (before the update that would spread a NaN into the
    weights). The check stays on the device and is read back every `check_every_n_steps` steps
    (every block on CPU, where reading is free), so a GPU run has no per-step host synchronisation;
    the step reported is always the first bad one. Checkpoints are never written after the last
    member is gone.
    """

    def __init__(self, last_ckpt_path: str, check_every_n_steps: int = 50, loss_factor: float | None = 100.0) -> None:
        self.last_ckpt_path = Path(last_ckpt_path)
        self.check_every_n_steps = max(1, check_every_n_steps)
        self.loss_factor = loss_factor

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        N, device = pl_module.members, pl_module.device
        self._first_bad = torch.full((N,), -1, device=device)  # global step of each member's first bad step
        self._bad_loss = torch.zeros(N, device=device)
        self._bad_grad = torch.zeros(N, dtype=torch.bool, device=device)
        self._limit: torch.Tensor | None = None  # (N,)
        self._norms: list[torch.Tensor] = []  # per-parameter, per-member gradient norms of this block's steps
        self._last_check = trainer.global_step
        self._reported: set[int] = set()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        N = pl_module.members
        for group in optimizer.param_groups:
            grads = (p.grad for p in group["params"] if p.grad is not None)
            self._norms.extend(torch.linalg.vector_norm(g.reshape(N, -1), dim=1) for g in grads)  # (N,) each

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        norms, self._norms = self._norms, []
        out = outputs if isinstance(outputs, dict) else {"loss": outputs}
        if out.get("loss") is None:
            return
        N = pl_module.members
        loss = out["loss"].detach().float().reshape(-1, N)  # (k, N): one per step of the block and member
        k = len(loss)
        first = out.get("first_step", trainer.global_step - k)
        if self._limit is None:
            inf = torch.full_like(loss[0], float("inf"))
            self._limit = loss[0].abs() * self.loss_factor if self.loss_factor else inf
        bad = ~torch.isfinite(loss) | (loss.abs() > self._limit)  # (k, N)
        bad_grad = torch.zeros_like(bad)
        if norms and len(norms) % k == 0:
            bad_grad = ~torch.isfinite(torch.stack(norms).view(k, -1, N)).all(dim=1)  # (k, N)
            bad = bad | bad_grad
        bad &= pl_module.alive  # a retired member is not found again
        i = torch.argmax(bad.to(torch.uint8), dim=0, keepdim=True)  # (1, N): each member's first bad step
        new = bad.any(dim=0) & (self._first_bad < 0)
        self._first_bad = torch.where(new, i[0] + first, self._first_bad)
        self._bad_loss = torch.where(new, loss.gather(0, i)[0], self._bad_loss)
        self._bad_grad = torch.where(new, bad_grad.gather(0, i)[0], self._bad_grad)
        if pl_module.device.type == "cpu" or trainer.global_step - self._last_check >= self.check_every_n_steps:
            self._last_check = trainer.global_step
            self.check(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer, pl_module)  # never write spoiled weights

    def _what(self, k: int) -> str:
        loss = float(self._bad_loss[k])
        if not math.isfinite(loss):
            return f"the loss became {loss}"
        if bool(self._bad_grad[k]):
            return "a gradient became NaN or infinite"
        return f"the loss exploded to {loss:.4g} (over {self.loss_factor:g}x its first value)"

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(self, "_first_bad"):
            return
        first_bad = self._first_bad.tolist()
        new = {k: step for k, step in enumerate(first_bad) if step >= 0 and k not in self._reported}
        if not new:
            return
        self._reported |= set(new)
        N = pl_module.members
        if N > 1:
            seed = pl_module.hparams.seed
            for k, step in new.items():
                log.warning(
                    "member %d (seed %d) diverged: %s at step %d; it is held there, the others go on",
                    k,
                    seed + k,
                    self._what(k),
                    step,
                )
            pl_module.retire(new)
            if pl_module.alive.any():
                return
        else:
            pl_module.diverged_at[0] = first_bad[0]  # metrics.json's member entry says so too
        k, step = (0, first_bad[0]) if N == 1 else min(new.items(), key=lambda item: item[1])
        what = self._what(k) if N == 1 else f"the last of {N} members: {self._what(k)}"
        kept = (
            f"the last good checkpoint is {self.last_ckpt_path}"
            if self.last_ckpt_path.is_file()
            else "no checkpoint had been saved yet"
        )
        raise Diverged(
            f"training diverged: {what} at step {step} (epoch {trainer.current_epoch + 1}); {kept} "
            "(lower optimizer.lr, set trainer.gradient_clip_val=1.0, or try model.init=scaled)",
            status="diverged",
            step=step,
        )


class GracefulInterrupt(L.Callback):
    """Ctrl-C (SIGINT) or SIGTERM: finish the current training_step (a block of at most
    data.batches_per_block optimizer steps), save `ckpt_path`, stop.

    The Trainer's own SIGTERM handler already stops cleanly after the current training_step (it
    raises `SIGTERMException`, which reaches `on_exception`); our SIGINT handler hands Ctrl-C to that
    handler, so the checkpoint always holds whole steps and resuming continues exactly. A second
    Ctrl-C stops at once. (`trainer.should_stop` would not do: it ends the epoch, with validation and
    the epoch-end hooks, so a resumed run would skip the rest of that epoch.)
    """

    def __init__(self, ckpt_path: str) -> None:
        self.ckpt_path = ckpt_path
        self.signal_name: str | None = None
        self.saved_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.signal_name = "SIGINT"
        signal.signal(signal.SIGINT, self._previous)
        log.warning("Ctrl-C: stopping after this block of steps and saving a checkpoint (press again to quit at once)")
        on_sigterm = signal.getsignal(signal.SIGTERM)  # the Trainer's, installed when fit started
        if callable(on_sigterm):
            on_sigterm(signal.SIGTERM, frame)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException):
            self.signal_name = self.signal_name or "SIGTERM"
            trainer.save_checkpoint(self.ckpt_path)  # written to a temporary file, then renamed
            self.saved_step = trainer.global_step

    def _restore(self) -> None:
        if getattr(self, "_previous", None) is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

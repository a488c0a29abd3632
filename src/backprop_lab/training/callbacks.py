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
    """Collects the epoch metrics for metrics.json and sweep plots; with `echo`, logs one line per epoch:

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
            k: round(metric.compute().item(), 6)
            for k, metric in train.items()
            if metric is not None and metric.update_called
        }
        values.update({k: round(m[k].item(), 6) for k in ("val/loss", "val/acc") if k in m})
        self.history["epoch"].append(trainer.current_epoch + 1)
        for k in self.KEYS:
            self.history[k].append(values.get(k, float("nan")))
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
    `loss_factor` times its first value.

    Bounded activations and the stable costs keep a wildly unstable run finite (sigmoid with
    lr=1000 swings at a loss of ~1,000 instead of ~2), hence the factor. It reads the per-step
    losses that `LitMLP.training_step` returns for its block and the gradient norms it records in
    `on_before_optimizer_step` (before the update that would spread a NaN into the weights). The
    check stays on the device and is read back every `check_every_n_steps` steps (every block on
    CPU, where reading is free), so a GPU run has no per-step host synchronisation; the step
    reported is always the first bad one. Checkpoints are never written after it.
    """

    def __init__(self, last_ckpt_path: str, check_every_n_steps: int = 50, loss_factor: float | None = 100.0) -> None:
        self.last_ckpt_path = Path(last_ckpt_path)
        self.check_every_n_steps = max(1, check_every_n_steps)
        self.loss_factor = loss_factor

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_bad = torch.tensor(-1, device=pl_module.device)  # global step of the first bad loss or gradient
        self._bad_loss = torch.tensor(0.0, device=pl_module.device)
        self._bad_grad = torch.tensor(False, device=pl_module.device)
        self._limit: torch.Tensor | None = None
        self._norms: list[torch.Tensor] = []  # per-parameter gradient norms of the steps of this block
        self._last_check = trainer.global_step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        for group in optimizer.param_groups:
            self._norms.extend(torch.linalg.vector_norm(p.grad) for p in group["params"] if p.grad is not None)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        norms, self._norms = self._norms, []
        out = outputs if isinstance(outputs, dict) else {"loss": outputs}
        if out.get("loss") is None:
            return
        loss = out["loss"].detach().float().reshape(-1)  # (k,) one per step of the block
        k = len(loss)
        first = out.get("first_step", trainer.global_step - k)
        if self._limit is None:
            self._limit = (
                loss[0].abs() * self.loss_factor if self.loss_factor else torch.tensor(float("inf"), device=loss.device)
            )
        bad = ~torch.isfinite(loss) | (loss.abs() > self._limit)  # (k,)
        bad_grad = torch.zeros_like(bad)
        if norms and len(norms) % k == 0:
            bad_grad = ~torch.isfinite(torch.stack(norms).view(k, -1)).all(dim=1)  # (k,)
            bad = bad | bad_grad
        i = torch.argmax(bad.to(torch.uint8))  # the first bad step of the block (0 when none)
        new = bad.any() & (self._first_bad < 0)
        self._first_bad = torch.where(new, i + first, self._first_bad)
        self._bad_loss = torch.where(new, loss[i], self._bad_loss)
        self._bad_grad = torch.where(new, bad_grad[i], self._bad_grad)
        if pl_module.device.type == "cpu" or trainer.global_step - self._last_check >= self.check_every_n_steps:
            self._last_check = trainer.global_step
            self.check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer)  # never write spoiled weights

    def check(self, trainer: L.Trainer) -> None:
        step = int(getattr(self, "_first_bad", -1))
        if step < 0:
            return
        loss = float(self._bad_loss)
        if not math.isfinite(loss):
            what = f"the loss became {loss}"
        elif bool(self._bad_grad):
            what = "a gradient became NaN or infinite"
        else:
            what = f"the loss exploded to {loss:.4g} (over {self.loss_factor:g}x its first value)"
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

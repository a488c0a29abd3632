"""Small Lightning callbacks: the per-epoch history (and its one-line console summary)."""

from __future__ import annotations

import logging
import time

import lightning as L

log = logging.getLogger("backprop_lab")


class EpochHistory(L.Callback):
    """Collects the epoch metrics for metrics.json and sweep plots; with `echo`, logs one line per epoch:

    `epoch 3/10  train/loss 0.41  train/acc 0.88  val/loss 0.38  val/acc 0.90 (best 0.91)  2.1s`
    """

    KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.history: dict[str, list[float]] = {"epoch": [], **{k: [] for k in self.KEYS}}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics  # validation ran before this hook; one host sync per epoch
        # The module logs its epoch training metrics after the callbacks' hook, so read them at the source.
        train = {"train/loss": getattr(pl_module, "train_loss", None), "train/acc": getattr(pl_module, "train_acc", None)}
        values = {k: round(metric.compute().item(), 6) for k, metric in train.items() if metric is not None and metric.update_called}
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

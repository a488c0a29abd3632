"""TensorBoard inspection during training: per-layer gradient norms and histograms, pictures.

- `LayerGradients`: every N optimizer steps, ||delta^l|| and ||dC/dW^l|| per layer l = 1..L as
  scalars, and now and then histograms of W^l, b^l and their gradients. The cost is the batch
  mean, so dC/db^l = sum over the batch of delta^l: the lecture's "norm of delta^l" is ||b^l.grad||.
- `Pictures`: every N validation epochs and after testing, the rows of W^1 as 28x28 tiles (what
  each hidden unit responds to), a grid of misclassified test digits and the confusion matrix.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from backprop_lab.inspection.figures import (
    IMAGE_SIDE,
    confusion_figure,
    confusion_matrix,
    hidden_unit_tiles,
    layer_parameters,
    misclassified_figure,
    predictions,
)


def _tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the first TensorBoardLogger, or None (other loggers, no logger)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


HISTOGRAM_BINS = 64


class LayerGradients(L.Callback):
    """Per-layer gradient norms as scalars, and weight/gradient histograms, at fixed step intervals.

    Runs in `on_before_optimizer_step`, where gradients are complete (accumulated, all-reduced)
    and unscaled (AMP). Scalars go to every logger with `step=trainer.global_step` directly, so
    `log_every_n_steps` cannot drop them; histograms need a TensorBoardLogger. Norms are computed
    in one `torch.stack` and copied to the host once per logging step; other steps cost nothing.
    Scalars: `delta_norm/layer{l}` (||dC/db^l||), `dW_norm/layer{l}` (||dC/dW^l||).
    Histograms: `weights/W{l}`, `weights/b{l}`, `grads/W{l}`, `grads/b{l}`. 0 disables either.
    """

    def __init__(self, every_n_steps: int = 50, histogram_every_n_steps: int = 500) -> None:
        if every_n_steps < 0 or histogram_every_n_steps < 0:
            raise ValueError("every_n_steps and histogram_every_n_steps must be >= 0 (0 disables)")
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps

    @staticmethod
    def _due(step: int, every: int) -> bool:
        return every > 0 and step % every == 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        step = trainer.global_step
        scalars = self._due(step, self.every_n_steps) and bool(trainer.loggers)
        histograms = self._due(step, self.histogram_every_n_steps)
        if not (scalars or histograms) or not trainer.is_global_zero:
            return
        net = getattr(pl_module, "net", pl_module)
        layers = layer_parameters(net)
        if scalars:
            self._log_norms(trainer, layers, step, getattr(net, "members", None) or 1)
        if histograms and (writer := _tensorboard(trainer)) is not None:
            # 64 equal bins: TensorBoard re-bins for display anyway; its default exponential buckets
            # cost 5x the time (15 vs 3 ms per set for 784-30-10 on this project's CPU)
            for l, (W, b) in enumerate(layers, start=1):
                for name, p in ((f"W{l}", W), (f"b{l}", b)):
                    writer.add_histogram(f"weights/{name}", p.detach().float(), step, bins=HISTOGRAM_BINS)
                    if p.grad is not None:
                        writer.add_histogram(f"grads/{name}", p.grad.detach().float(), step, bins=HISTOGRAM_BINS)

    @staticmethod
    def _log_norms(trainer: L.Trainer, layers: list[tuple[Tensor, Tensor]], step: int, members: int = 1) -> None:
        """Each norm per member, averaged over a population's members."""
        tags, grads = [], []
        for l, (W, b) in enumerate(layers, start=1):
            for tag, p in ((f"delta_norm/layer{l}", b), (f"dW_norm/layer{l}", W)):
                if p.grad is not None:  # frozen or unused parameters have none
                    tags.append(tag)
                    grads.append(p.grad.detach())
        if not grads:
            return
        per_member = [torch.linalg.vector_norm(g.float().reshape(members, -1), dim=1).mean() for g in grads]
        norms = torch.stack(per_member).tolist()  # one sync
        metrics = dict(zip(tags, norms))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


class Pictures(L.Callback):
    """Learned features, misclassified test digits and the confusion matrix, as TensorBoard images.

    Drawn at the end of every `every_n_epochs`-th validation epoch (never in the sanity check) and
    once at the end of testing (0: never, for runs nobody looks at), at `step=trainer.global_step`,
    rank zero only, and only with a TensorBoardLogger. Tags: `features/hidden_units` (rows of W^1 as
    28x28 tiles, up to `max_units`, when the input is 784 pixels), `test/misclassified` (up to
    `n_misclassified` digits) and `test/confusion_matrix`; the last two evaluate
    `trainer.datamodule.test_x/test_y` (skipped when the datamodule has none).
    """

    def __init__(self, every_n_epochs: int = 1, n_misclassified: int = 64, max_units: int = 100) -> None:
        if every_n_epochs < 0:
            raise ValueError("every_n_epochs must be >= 0 (0 disables)")
        self.every_n_epochs = every_n_epochs
        self.n_misclassified = n_misclassified
        self.max_units = max_units

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_epochs == 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs:
            self.draw(trainer, pl_module)

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write all three pictures now (whatever the schedule)."""
        writer = _tensorboard(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        net = getattr(pl_module, "net", pl_module)
        if getattr(net, "members", None):  # a population: its first member's pictures
            net = net.member(0)
        step = trainer.global_step
        if net.sizes[0] == IMAGE_SIDE * IMAGE_SIDE and self.max_units > 0:
            W1 = layer_parameters(net)[0][0]
            writer.add_image("features/hidden_units", hidden_unit_tiles(W1, self.max_units), step)
        dm = trainer.datamodule
        x, y = getattr(dm, "test_x", None), getattr(dm, "test_y", None)
        if x is None or y is None or len(y) == 0:
            return
        pred, y = predictions(net, x), y.cpu()
        classes = getattr(dm, "classes", None)
        if self.n_misclassified > 0 and math.isqrt(x[0].numel()) ** 2 == x[0].numel():
            fig = misclassified_figure(x, pred, y, classes, self.n_misclassified)
            writer.add_figure("test/misclassified", fig, step)
        cm = confusion_matrix(pred, y, net.sizes[-1])
        writer.add_figure("test/confusion_matrix", confusion_figure(cm, classes), step)


class MemberCurves(L.Callback):
    """A population's members as TensorBoard runs of their own, `<log_dir>/members/seed=<s>`, beside the
    run's own curves (the mean over the members still training): TensorBoard overlays them all. Nothing is
    written when TensorBoard is not among the loggers.

    Every epoch: each member's train/loss_epoch, train/acc, val/loss, val/acc and val/acc_best; after
    testing: its test/loss and test/acc, all at the global step, as `LitMLP` keeps them per member.
    """

    KEYS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc")

    def __init__(self, log_dir: str, seeds: list[int]) -> None:
        self.log_dir, self.seeds = log_dir, seeds
        self._writers: list | None = None

    def _write(self, trainer: L.Trainer, values: dict[str, Tensor]) -> None:
        if not trainer.is_global_zero or _tensorboard(trainer) is None:  # TensorBoard is not among the loggers
            return
        if self._writers is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writers = [SummaryWriter(f"{self.log_dir}/members/seed={s}") for s in self.seeds]
        rows = {key: values[key].tolist() for key in self.KEYS if key in values}
        for k, member in enumerate(self._writers):
            for key, column in rows.items():
                member.add_scalar(key, column[k], trainer.global_step)
            member.flush()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = dict(pl_module.member_values)  # this epoch's validation; the module logs training after this hook
        if pl_module.train_loss.update_called:
            values.update(
                {"train/loss_epoch": pl_module.train_loss.values(), "train/acc": pl_module.train_acc.values()}
            )
        self._write(trainer, values)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, {k: v for k, v in pl_module.member_values.items() if k.startswith("test/")})

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for writer in self._writers or []:
            writer.close()
        self._writers = None

"""The `logger=` and `callbacks=` groups built, and every run's hyperparameters in its loggers.

Every run reaches TensorBoard's HPARAMS tab, whatever its end: the hyperparameters are logged before
training with the final metrics declared (as NaN), and the final values are logged at the end, also
when the run diverged, was interrupted or failed. Diverged runs are what the exploding-gradients
experiment is about.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import hydra.utils
import lightning as L
from hydra.errors import InstantiationException
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from backprop_lab.errors import ConfigError, one_line

# hp/<key> in HPARAMS: metrics.json's values, and the fraction of the population's members that diverged
FINAL = ("val/acc_best", "test/acc", "test/loss", "epochs", "diverged")
EXTRAS = {"mlflow": "pip install 'backprop-lab[mlflow]'"}  # what a logger's missing package needs


def instantiate_group(group: str, nodes: Mapping[str, Any] | None) -> list[Any]:
    """One object per named entry of a `logger=` or `callbacks=` node (an entry set to null is left out)."""
    built = []
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        try:
            built.append(hydra.utils.instantiate(node))
        except InstantiationException as e:
            cause = e.__cause__ or e
            fix = f"check the {group}.{name}.* values, or leave it out with ~{group}.{name}"
            if isinstance(cause, ImportError) and name in EXTRAS:
                fix = EXTRAS[name]
            raise ConfigError(f"{group}.{name} cannot be built: {one_line(cause)} ({fix})") from e
    return built


@contextlib.contextmanager
def recorded(trainer: L.Trainer, hparams: dict[str, Any], metrics: dict[str, Any]) -> Iterator[None]:
    """Around a run: its hyperparameters logged on entry, and on exit, however it exits, the final values
    of `metrics` (as the run has filled them in) logged and the loggers closed with its status."""
    if trainer.is_global_zero:
        start(trainer.loggers, hparams)
    try:
        yield
    finally:
        if trainer.is_global_zero:
            status = metrics.get("status", "running")
            finish(trainer.loggers, metrics, trainer.global_step, end_status(status))


def start(loggers: list[Logger], hparams: dict[str, Any]) -> None:
    """The hyperparameters before training; TensorBoard also gets the final metrics declared (as NaN)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, {hp_key(k): math.nan for k in FINAL})
        else:
            logger.log_hyperparams(hparams)


def finish(loggers: list[Logger], metrics: dict[str, Any], step: int, status: str) -> None:
    """Log the final metrics (NaN where the run never got them) and close the loggers with the
    status Lightning's loggers know: success, failed, or (MLflow) KILLED for an interrupted run."""
    members = metrics.get("members") or []
    diverged = sum(str(m.get("status", "")).startswith("diverged") for m in members) / len(members) if members else None
    final = {hp_key(k): _number(diverged if k == "diverged" else metrics.get(k)) for k in FINAL}
    for logger in loggers:
        logger.log_metrics(final, step=step)
        logger.finalize(status)


def hp_key(key: str) -> str:
    return "hp/" + key.replace("/", "_")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def end_status(status: str) -> str:
    """metrics.json's status as a logger's finalize() takes it."""
    if status == "completed":
        return "success"
    if status == "interrupted":
        return "KILLED"  # MLflow's run status; TensorBoard and CSV only flush
    return "failed"  # diverged, pruned, failed, or still "running" when an exception ended it

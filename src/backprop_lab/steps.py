"""Several optimizer steps inside one Lightning `training_step` (manual optimization), done right.

`LightningOptimizer.step()` passes through the strategy and the precision plugin and calls
`on_before_optimizer_step` on every callback, overridden or not: tens of microseconds, more than a
784-30-10 step's arithmetic. On one device without a GradScaler those layers add nothing, so
`lean_step` does exactly what they would (count the step, call the hooks that exist, step the
torch optimizer) and nothing else. Everywhere else (DDP, 16-bit with a GradScaler, other
precision plugins) `LitMLP` uses Lightning's own path. This is the one file that touches
Lightning internals (`_on_before_step`/`_on_after_step` of the LightningOptimizer, the loop's
`_batches_that_stepped`); tests/test_steps.py checks the step counts and logger steps they give.
"""

from __future__ import annotations

from typing import Callable

import lightning as L
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy

Hook = Callable[..., None]


def can_run_lean(trainer: L.Trainer) -> bool:
    """One device, and a precision plugin whose optimizer step is the plain one (no GradScaler)."""
    plugin = trainer.precision_plugin
    return (
        type(trainer.strategy) is SingleDeviceStrategy
        and type(plugin) in (Precision, MixedPrecision)
        and getattr(plugin, "scaler", None) is None
    )


def before_step_hooks(trainer: L.Trainer, module: L.LightningModule) -> list[Hook]:
    """The `on_before_optimizer_step` hooks Lightning would call, in its order, minus the no-ops."""
    hooks: list[Hook] = [
        (lambda opt, cb=cb: cb.on_before_optimizer_step(trainer, module, opt))
        for cb in trainer.callbacks
        if type(cb).on_before_optimizer_step is not L.Callback.on_before_optimizer_step
    ]
    hooks.append(module.on_before_optimizer_step)
    return hooks


def lean_step(opt: LightningOptimizer, hooks: list[Hook]) -> None:
    """`opt.step()` for `can_run_lean` trainers: the same counting and hooks, without the layers."""
    opt._on_before_step()  # Lightning's manual-optimization loop counts the step here ...
    for hook in hooks:
        hook(opt.optimizer)
    opt.optimizer.step()
    opt._on_after_step()  # ... and here: trainer.global_step += 1


def count_steps_for_loggers(trainer: L.Trainer, steps: int) -> None:
    """Lightning advances its loggers' step by one per `training_step`; make it one per optimizer
    step, so that epoch metrics, the learning rate and our per-step scalars share one x-axis."""
    trainer.fit_loop.epoch_loop._batches_that_stepped += steps - 1

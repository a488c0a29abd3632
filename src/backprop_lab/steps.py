"""Several optimizer steps inside one Lightning `training_step` (manual optimization), done right.

`LightningOptimizer.step()` passes through the strategy and the precision plugin and calls
`on_before_optimizer_step` on every callback, overridden or not: tens of microseconds, more than a
784-30-10 step's arithmetic. On one device without a GradScaler those layers add nothing, so
`lean_step` does exactly what they would (count the step, call the hooks that exist, step the
torch optimizer) and nothing else. Everywhere else (DDP, 16-bit with a GradScaler, other
precision plugins) `LitMLP` uses Lightning's own path. The torch optimizer's own `step()` and
`zero_grad()` have the same kind of layer (a profiler range and hook lookups, ~40 us of a ~180 us
step): `Stepper` skips it while it would do nothing. This is the one file that touches framework
internals (`_on_before_step`/`_on_after_step` of the LightningOptimizer, the loop's
`_batches_that_stepped`, torch's step wrapper); tests/test_steps.py checks what they give.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
import torch.optim.optimizer as torch_optimizer
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


class Stepper:
    """`optimizer.step()` then `optimizer.zero_grad()`, without torch's wrappers while they would
    only open a profiler range: no step hooks (the optimizer's or global), no profiler running, and
    no other replacement of `optimizer.step` than an LR scheduler's call counter (whose flag is set
    here, as its wrapper would). `zero_grad` then becomes what it does by default, every `.grad` set
    to None. Made per block, so a hook or profiler added between blocks takes the full path from
    the next block on."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        wrapped = type(optimizer).step
        inner = getattr(wrapped, "__wrapped__", None) if getattr(wrapped, "hooked", False) else None
        hooks = (optimizer._optimizer_step_pre_hooks, optimizer._optimizer_step_post_hooks,
                 torch_optimizer._global_optimizer_pre_hooks, torch_optimizer._global_optimizer_post_hooks)
        replaced = vars(optimizer).get("step")  # torch's LR schedulers put a call counter here
        self._counted = replaced is not None and getattr(replaced, "_wrapped_by_lr_sched", False)
        self.plain = (inner is not None and not any(hooks) and not torch.autograd.profiler._is_profiler_enabled
                      and (replaced is None or self._counted)
                      and type(optimizer).zero_grad is torch.optim.Optimizer.zero_grad)
        self._step: Callable[[], Any] = (lambda: inner(optimizer)) if self.plain else optimizer.step
        self._params = [p for g in optimizer.param_groups for p in g["params"]] if self.plain else []

    def __call__(self) -> None:
        self._step()
        if not self.plain:
            self.optimizer.zero_grad()
            return
        if self._counted:
            self.optimizer._opt_called = True  # what the LR scheduler's wrapper records
        for p in self._params:
            p.grad = None


def lean_step(opt: LightningOptimizer, hooks: list[Hook], stepper: Stepper) -> None:
    """`opt.step(); opt.zero_grad()` for `can_run_lean` trainers: the same counting and hooks, without the layers."""
    opt._on_before_step()  # Lightning's manual-optimization loop counts the step here ...
    for hook in hooks:
        hook(opt.optimizer)
    stepper()
    opt._on_after_step()  # ... and here: trainer.global_step += 1


def count_steps_for_loggers(trainer: L.Trainer, steps: int) -> None:
    """Lightning advances its loggers' step by one per `training_step`; make it one per optimizer
    step, so that epoch metrics, the learning rate and our per-step scalars share one x-axis."""
    trainer.fit_loop.epoch_loop._batches_that_stepped += steps - 1

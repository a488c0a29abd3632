"""One training step, ManualMLP vs ReferenceMLP (`step_pair`), and the bytes autograd saves for
backward in one forward (`saved_bytes`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bench.data import Data
from bench.settings import COST, LR, MODELS, Budget
from bench.timing import Pair, calibrate, interleave_all, steps_timer


def make_model(kind: str, sizes: Sequence[int], device: torch.device | str = "cpu", seed: int = 0) -> nn.Module:
    """ManualMLP or ReferenceMLP: sigmoid hidden, softmax output; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return MODELS[kind](list(sizes), "sigmoid", "softmax").to(device)


def make_step(model: nn.Module, lr: float = LR, autograd: bool = False) -> Callable[[Tensor, Tensor], Tensor]:
    """One training step as `LitMLP` runs it on one device: `model.backprop` (forward, cost, backward:
    the hand-written pass without a graph for ManualMLP, autograd for ReferenceMLP), then
    torch.optim.SGD's step and zero_grad. `autograd=True`: `loss(model(x)).backward()` instead (for
    ManualMLP, the autograd Function path, as under DDP)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def direct(x: Tensor, y: Tensor) -> Tensor:
        C, _ = model.backprop(x, y, COST)
        opt.step()
        opt.zero_grad()
        return C

    def through_autograd(x: Tensor, y: Tensor) -> Tensor:
        C = model.loss(model(x), y, COST)
        C.backward()
        opt.step()
        opt.zero_grad()
        return C

    return through_autograd if autograd else direct


def step_pair(
    sizes: Sequence[int], batch_size: int, data: Data, budget: Budget, device="cpu"
) -> tuple[Pair, int, list[float]]:
    """Seconds per training step, manual vs reference, interleaved; returns the pair, the steps per
    repeat, and the manual model's autograd-Function path timed in the same rounds."""
    batches = data.batches(batch_size, budget.pool, device)
    steps = {k: make_step(make_model(k, sizes, device)) for k in MODELS}
    steps["manual_function"] = make_step(make_model("manual", sizes, device), autograd=True)
    for k in steps:  # warm each up (allocator, kernels, lazy state) before calibrating
        for x, y in batches:
            steps[k](x, y)
    n = calibrate(steps["manual"], batches, device, budget.step_repeat_s, budget.max_steps, budget.min_steps)
    cap = 4 * budget.step_repeat_s if budget.step_repeat_s > 0 else math.inf
    times = interleave_all(
        {k: steps_timer(f, batches, n, device, cap) for k, f in steps.items()}, budget.repeats, budget.warmup
    )
    return Pair("manual", "reference", times["manual"], times["reference"]), n, times["manual_function"]


def saved_bytes(model: nn.Module, x: Tensor, y: Tensor, cost: str = COST) -> dict[str, int]:
    """What autograd keeps for backward in one forward + cost, from `saved_tensors_hooks`.

    Each packed tensor is counted by its storage's `nbytes()`:
      naive                 the plain sum over every packed tensor (a storage saved twice counts twice)
      dedup                 each storage once (by data_ptr): the memory actually held
      dedup_excl_params     dedup without the parameters' storages (weights exist anyway: not extra)
      dedup_activations     dedup_excl_params without the input batch x and the labels y either
      naive_excl_params     naive without the parameters' storages (each activation as often as it is saved)
    x and y must own their storages (a slice of the whole data set would count the data set).
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    inputs = {t.untyped_storage().data_ptr() for t in (x, y)}
    packed: list[tuple[int, int]] = []

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        packed.append((s.data_ptr(), s.nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        C = model.loss(model(x), y, cost)
    del C
    unique = dict(packed)
    return {
        "n_packed": len(packed),
        "n_storages": len(unique),
        "naive": sum(n for _, n in packed),
        "dedup": sum(unique.values()),
        "dedup_excl_params": sum(n for p, n in unique.items() if p not in params),
        "dedup_activations": sum(n for p, n in unique.items() if p not in params and p not in inputs),
        "naive_excl_params": sum(n for p, n in packed if p not in params),
    }

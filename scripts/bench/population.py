"""A population of N networks trained in one pass vs one network (`population_pair`): the step
`LitMLP` runs for `population=N` (ManualMLP.stack: the delta equations with a member dimension, one
SGD step for all members) against the single network's step, on the same kind of batches."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from backprop_lab.core.models import ManualMLP
from bench.data import Data
from bench.settings import Budget
from bench.step import make_model, make_step
from bench.timing import Pair, calibrate, interleave_all, steps_timer


def population_pair(
    sizes: Sequence[int], batch_size: int, members: int, data: Data, budget: Budget, device: str = "cpu"
) -> tuple[Pair, Pair, int]:
    """Seconds per step of a population of `members` (each member on its own mini-batch) and of one
    network, interleaved. Returns (per member-step: population / N vs one network, the whole
    population's step vs one network's, steps per repeat)."""
    batches = data.batches(batch_size, max(budget.pool, members), device)
    pool = len(batches)
    stacked = [  # member k takes the pool's batch i + k: N different mini-batches per step
        tuple(torch.stack([batches[(i + k) % pool][j] for k in range(members)]) for j in (0, 1))
        for i in range(budget.pool)
    ]
    one = make_step(make_model("manual", sizes, device))
    many = make_step(ManualMLP.stack([make_model("manual", sizes, device, seed=k) for k in range(members)]))
    for _ in range(2):  # warm up (allocator, kernels) before calibrating
        for x, y in stacked:
            many(x, y)
        for x, y in batches:
            one(x, y)
    n = calibrate(many, stacked, device, budget.step_repeat_s, budget.max_steps, budget.min_steps)
    cap = 4 * budget.step_repeat_s if budget.step_repeat_s > 0 else math.inf
    timers = {
        "population": steps_timer(many, stacked, n, device, cap),
        "single": steps_timer(one, batches, n, device, cap),
    }
    times = interleave_all(timers, budget.repeats, budget.warmup)
    per_member = Pair("population_per_member", "single", [t / members for t in times["population"]], times["single"])
    return per_member, Pair("population", "single", times["population"], times["single"]), n

"""What a population (N networks trained at once, seeds seed..seed+N-1) needs around the math: its
members built from their seeds, per-member metrics, per-member gradient clipping, and the summary
statistics every reported number carries (mean, std, the half-width of a t-based 95% interval).

A single network is a population of one here: every metric has a member dimension of 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from backprop_lab.core.models import MODELS
from backprop_lab.stats import summary


def build_net(
    kind: str,
    sizes: Sequence[int],
    activation: str,
    output: str,
    init: str,
    population: int = 1,
    seed: int | None = None,
) -> nn.Module:
    """One network, or a population whose member k has exactly the initial weights a single run with
    seed + k builds (train() seeds, reads the data without torch's RNG, then builds the network)."""
    model = MODELS[kind]
    if population == 1:
        return model(sizes, activation, output, init)
    if seed is None:
        raise ValueError("a population needs a seed: member k starts from seed + k")
    nets = []
    for k in range(population):
        torch.manual_seed(seed + k)
        nets.append(model(sizes, activation, output, init))
    return model.stack(nets)


class MemberMean(Metric):
    """A running mean per member, (N,): sum(value * weight) / sum(weight) over every update.

    `update(value, weight)` takes values (..., N): the leading dimensions (steps of a block) are
    summed. The sums are float64, summed across processes under DDP, and kept in checkpoints.
    """

    full_state_update = False

    def __init__(self, members: int) -> None:
        super().__init__()
        self.members = members
        self.add_state("total", torch.zeros(members, dtype=torch.float64), dist_reduce_fx="sum", persistent=True)
        self.add_state("weight", torch.zeros(members, dtype=torch.float64), dist_reduce_fx="sum", persistent=True)

    def update(self, value: Tensor, weight: float | Tensor = 1.0) -> None:
        value = value.detach().to(torch.float64).reshape(-1, self.members)  # (steps, N)
        weight = torch.as_tensor(weight, dtype=torch.float64, device=value.device).expand_as(value)
        self.total += (value * weight).sum(0)
        self.weight += weight.sum(0)

    def compute(self) -> Tensor:
        return self.total / self.weight  # (N,)

    def values(self) -> Tensor:
        """compute() as (N,) always (torchmetrics squeezes a one-element result to a scalar)."""
        return self.compute().reshape(self.members)


class MemberMax(Metric):
    """The largest value seen per member, (N,) (val/acc_best of each member)."""

    full_state_update = False

    def __init__(self, members: int) -> None:
        super().__init__()
        self.members = members
        self.add_state(
            "best", torch.full((members,), -math.inf, dtype=torch.float64), dist_reduce_fx="max", persistent=True
        )

    def update(self, value: Tensor) -> None:
        self.best = torch.maximum(self.best, value.detach().to(torch.float64))

    def compute(self) -> Tensor:
        return self.best

    def values(self) -> Tensor:
        """compute() as (N,) always."""
        return self.compute().reshape(self.members)


def member_norms(grads: Sequence[Tensor], members: int) -> Tensor:
    """Each member's gradient norm over all its parameters, (N,) (one network: (1,))."""
    per_param = torch.stack([torch.linalg.vector_norm(g.reshape(members, -1), dim=1) for g in grads])  # (P, N)
    return torch.linalg.vector_norm(per_param, dim=0)


def clip_member_norms(grads: Sequence[Tensor], members: int, max_norm: float) -> None:
    """Scale each member's gradients to a total norm of at most max_norm, as clip_grad_norm_ does for one
    network: a population is clipped member by member, never by one norm over all of them."""
    scale = (max_norm / (member_norms(grads, members) + 1e-6)).clamp(max=1.0)  # (N,)
    for g in grads:
        g.mul_(scale.reshape(members, *[1] * (g.dim() - 1)) if members > 1 else scale)


SUMMARIZED = ("test/acc", "test/loss", "val/acc_best")


def _value(t: Tensor, k: int) -> float | None:
    v = float(t[k])
    return round(v, 6) if math.isfinite(v) else None


def report(values: dict[str, Tensor], seed: int, diverged_at: Sequence[int | None]) -> dict:
    """metrics.json's population part: `population`, one entry per member (seed, status and its
    SUMMARIZED values), and for each SUMMARIZED key the mean, `_std` and `_ci95` over the members
    that completed (the mean under the key itself)."""
    members = []
    for k, step in enumerate(diverged_at):
        status = "completed" if step is None else f"diverged at step {step}"
        members.append(
            {"seed": seed + k, "status": status, **{key: _value(values[key], k) for key in SUMMARIZED if key in values}}
        )
    out: dict = {"population": len(members), "members": members}
    for key in SUMMARIZED:
        if key in values:
            s = summary([m[key] for m in members if m["status"] == "completed"])
            out.update({key: s["mean"], f"{key}_std": s["std"], f"{key}_ci95": s["ci95"]})
            out.update({k: round(v, 6) for k in (key, f"{key}_std", f"{key}_ci95") if (v := out[k]) is not None})
    return out

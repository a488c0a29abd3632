"""Costs C(a^L, y), averaged over the n inputs of a mini-batch, and the base case of backpropagation.

Both models return z^L; the cost applies the output activation itself, which keeps
log-softmax and log-sigmoid numerically stable for saturated outputs.

    mse            C = (1/n) sum_x ||y(x) - a^L(x)||^2                        (y one-hot)
    cross_entropy  softmax output: C = -(1/n) sum_x ln a^L_y(x)                (log-likelihood)
                   sigmoid output: C = -(1/n) sum_x sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]

Base case, delta^L = dC/dz^L = dC/da^L * f_out'(z^L):
    mse            dC/da^L = (2/n)(a^L - y), then the output activation's derivative (`output_vjp`)
    cross_entropy  delta^L = (a^L - y) / n for both softmax and sigmoid outputs: f_out' cancels
                   the 1/a (and 1/(1-a)) of dC/da^L exactly, so the fused form is used.

`base_case` computes C and delta^L together, by hand: `ManualCost` wraps it for autograd (its
backward only hands out the delta^L of the forward), `ManualMLP.backprop` calls it directly.
`reference_cost` is the same C in plain torch ops, differentiated by autograd.

Populations: z^L (N, B, n_L) and y (N, B) (or a y (B,) shared by all members) give one cost per
member, C (N,), and delta^L (N, B, n_L); the sums run over each member's own inputs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from backprop_lab.core import activations

COSTS = ("mse", "cross_entropy")


def check(cost: str, output: str) -> None:
    """Reject unknown names and combinations the math does not define, before any work is done."""
    activations.check_output(output)
    if cost not in COSTS:
        raise ValueError(f"unknown loss {cost!r} (choose one of: {', '.join(COSTS)})")
    if cost == "cross_entropy" and output == "identity":
        raise ValueError(
            "loss=cross_entropy needs probabilities but the output activation is identity "
            "(use model.output=softmax or model.output=sigmoid, or loss=mse)"
        )


@functools.lru_cache(maxsize=16)
def _identity(n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.eye(n_out, dtype=dtype, device=device)


def one_hot(y: Tensor, n_out: int, dtype: torch.dtype) -> Tensor:
    """Y with Y[i, y_i] = 1: the desired output y(x) of each input as a vector (rows of the identity)."""
    return _identity(n_out, dtype, y.device).index_select(0, y.flatten()).view(*y.shape, n_out)  # (B, n_L)


def base_case(z: Tensor, y: Tensor, cost: str, output: str) -> tuple[Tensor, Tensor]:
    """(C, delta^L): the mean cost over the n rows of z^L, and delta^L = dC/dz^L, both by hand
    (one C per member for a population)."""
    n = z.shape[-2]
    y = y.expand(z.shape[:-1])  # (B,) or (N, B): a shared y serves every member
    Y = one_hot(y, z.shape[-1], z.dtype)  # (B, n_L)
    if cost == "mse":
        a = activations.output(z, output)  # (B, n_L) a^L
        C = (Y - a).pow(2).sum((-2, -1)) / n  # (1/n) sum_x ||y(x) - a^L(x)||^2  [eq:mse]
        dC_da = 2 * (a - Y) / n  # (B, n_L) dC/da^L  [eq:mse-dC-da]
        delta = activations.output_vjp(dC_da, a, output)  # (B, n_L) * f_out'(z^L)  [eq:BP1]
    elif output == "softmax":
        log_a = torch.log_softmax(z, dim=-1)  # (B, n_L) ln a^L, stable for saturated outputs
        C = -log_a.gather(-1, y.unsqueeze(-1)).sum((-2, -1)) / n  # -(1/n) sum_x ln a^L_y(x)  [eq:ce-softmax]
        delta = (log_a.exp() - Y) / n  # (B, n_L) fused: dC/da^L * f_out'(z^L) = (a^L - y)/n  [eq:BP1-ce]
    else:  # sigmoid cross-entropy: -[y ln s(z) + (1-y) ln(1-s(z))] = softplus(z) - y z
        C = (F.softplus(z) - Y * z).sum((-2, -1)) / n  # -(1/n) sum [y ln a + (1-y) ln(1-a)]  [eq:ce-sigmoid]
        delta = (torch.sigmoid(z) - Y) / n  # (B, n_L) fused, as for softmax
    return C, delta


class ManualCost(torch.autograd.Function):
    """C from z^L; its backward hands out delta^L, computed (and saved) in the forward without autograd."""

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, cost: str, output: str) -> Tensor:
        C, delta = base_case(z, y, cost, output)
        ctx.save_for_backward(delta)  # (B, n_L): all the backward needs
        return C

    @staticmethod
    @once_differentiable
    def backward(ctx, dC: Tensor):
        (delta,) = ctx.saved_tensors
        return dC.reshape(*dC.shape, 1, 1) * delta, None, None, None  # each member's dC scales its delta


def manual_cost(z: Tensor, y: Tensor, cost: str, output: str) -> Tensor:
    check(cost, output)
    return ManualCost.apply(z, y, cost, output)


def reference_cost(z: Tensor, y: Tensor, cost: str, output: str) -> Tensor:
    """The same C in standard torch ops, for autograd."""
    check(cost, output)
    n = z.shape[0]
    if cost == "mse":
        a = activations.output(z, output)
        return F.mse_loss(a, one_hot(y, z.shape[1], a.dtype), reduction="sum") / n
    if output == "softmax":
        return F.cross_entropy(z, y)
    return F.binary_cross_entropy_with_logits(z, one_hot(y, z.shape[1], z.dtype), reduction="sum") / n

"""Activation functions f and their derivatives f', by name.

The backward pass never needs z^l again: every activation here has a derivative
that is a function of its own output a = f(z), so the forward saves a^l only.
`times_df(g, a)` = g * f'(z) is the induction step's elementwise product.

    sigmoid   f(z) = 1 / (1 + e^-z)       f' = a (1 - a)
    tanh      f(z) = tanh z               f' = 1 - a^2
    relu      f(z) = max(z, 0)            f' = 1 if a > 0 else 0   (PyTorch's convention at z = 0)
    identity  f(z) = z                    f' = 1
    softmax   a_k = e^z_k / sum_j e^z_j   (a Jacobian, not an elementwise f': see `softmax_vjp`)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Activation:
    name: str
    f: Callable[[Tensor], Tensor]  # z -> a
    df: Callable[[Tensor], Tensor]  # a -> f'(z), computed from the output a = f(z)
    module: Callable[[], nn.Module]  # the equivalent torch.nn module, for ReferenceMLP
    fused: Callable[[Tensor, Tensor], Tensor] | None = None  # (g, a) -> g * df(a) in one kernel

    def times_df(self, g: Tensor, a: Tensor) -> Tensor:
        """g * f'(z) from a = f(z): the elementwise factor of the induction step."""
        return self.fused(g, a) if self.fused is not None else g * self.df(a)


def _relu_df(a: Tensor) -> Tensor:
    return (a > 0).to(a.dtype)  # f' = 1 if z > 0 else 0  [eq:relu-prime]


HIDDEN: dict[str, Activation] = {
    "sigmoid": Activation(
        "sigmoid",
        torch.sigmoid,
        lambda a: a * (1 - a),  # sigma' = sigma (1 - sigma)  [eq:sigmoid-prime]
        nn.Sigmoid,
        torch.ops.aten.sigmoid_backward,
    ),
    "tanh": Activation(
        "tanh",
        torch.tanh,
        lambda a: 1 - a * a,  # tanh' = 1 - tanh^2  [eq:tanh-prime]
        nn.Tanh,
        torch.ops.aten.tanh_backward,
    ),
    "relu": Activation(
        "relu",
        torch.relu,
        _relu_df,
        nn.ReLU,
        lambda g, a: torch.ops.aten.threshold_backward(g, a, 0),
    ),
}
# `fused`: ATen's elementwise kernels for exactly g * df(a) (one pass instead of three; the
# tests check them against df), which matter when a small network's step is a few microseconds.

OUTPUTS = ("sigmoid", "softmax", "identity")


def hidden(name: str) -> Activation:
    """The hidden-layer activation called `name`, or a ValueError that lists the choices."""
    if name not in HIDDEN:
        raise ValueError(f"unknown activation {name!r} (choose one of: {', '.join(HIDDEN)})")
    return HIDDEN[name]


def check_output(name: str) -> str:
    if name not in OUTPUTS:
        raise ValueError(f"unknown output activation {name!r} (choose one of: {', '.join(OUTPUTS)})")
    return name


def output(z: Tensor, name: str) -> Tensor:
    """a^L = f_out(z^L): the network's output activations, e.g. class probabilities."""
    if name == "softmax":
        return torch.softmax(z, dim=-1)
    if name == "sigmoid":
        return torch.sigmoid(z)
    check_output(name)
    return z


def output_vjp(g: Tensor, a: Tensor, name: str) -> Tensor:
    """delta = (da/dz)^T g for the output activation: the base case's `dC/da^L * f_out'(z^L)`.

    Elementwise outputs multiply by f'; softmax's Jacobian diag(a) - a a^T gives
    a * (g - <g, a>) per row.
    """
    if name == "softmax":
        return a * (g - (g * a).sum(dim=-1, keepdim=True))  # (B, n_L)  [eq:softmax-vjp]
    if name == "sigmoid":
        return g * a * (1 - a)  # (B, n_L)
    return g

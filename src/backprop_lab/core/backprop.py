"""Backpropagation through a fully connected network, written out as in the lecture.

Notation (layer l = 1..L, mini-batch of B inputs stored as rows, so vectors are row vectors):

    forward      z^l = W^l a^(l-1) + b^l        z = a_prev @ W.T + b         (B, n_l)
                 a^l = f(z^l),  a^0 = x          the output layer returns z^L; the cost applies f_out
    base case    delta^L = dC/da^L * f_out'(z^L) (costs.py: it arrives here as the gradient of z^L)
    induction    delta^l = ((W^(l+1))^T delta^(l+1)) * f'(z^l)
                                                 delta = (delta @ W) * f'(a)     (B, n_l)
    gradients    dC/dW^l_kj = delta^l_k a^(l-1)_j    dW = delta.T @ a_prev       (n_l, n_(l-1))
                 dC/db^l_k  = delta^l_k               db = delta.sum(0)          (n_l,)
                 (summed over the batch; the 1/n of the mean cost is already inside delta^L)

Populations: every tensor may carry a leading member dimension N (W^l (N, n_l, n_(l-1)), b^l
(N, n_l), a^l (N, B, n_l)): N independent networks, each on its own mini-batch, in one pass of
batched matmuls. The same lines run for both (`.mT` is the transpose of the last two dimensions,
sums run over the batch dimension -2); only z^l = W^l a + b picks its kernel (`affine`). A shared
input x (B, n_0) feeds every member.

`forward` and `backward` are the two passes as plain functions, with no autograd inside. The
`Backprop` Function plugs them into autograd (so optimizers, DDP's all-reduce and clipping see
ordinary gradients); `models.ManualMLP.backprop` calls them directly for a whole training step.
The forward keeps only the activations a^0..a^(L-1); f'(z^l) is recomputed from a^l
(activations.py), and W^1 is needed only for a gradient of the input x.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from backprop_lab.core import activations


def without_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """A context that turns autocast off while it is on: the textbook math runs in the inputs' dtype
    (float32 under mixed precision), forward and backward alike, as torch.amp.custom_fwd/custom_bwd would."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def affine(a: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """a @ W^T + b in one fused kernel: one network (W (n_out, n_in)) or a population (W (N, n_out, n_in),
    a (N, B, n_in) or a shared (B, n_in))."""
    if W.dim() == 2:
        return torch.addmm(b, a, W.t())  # (B, n_out)
    if a.dim() == 2:
        a = a.expand(W.shape[0], *a.shape)  # the same inputs for every member, without a copy
    return torch.baddbmm(b.unsqueeze(-2), a, W.mT)  # (N, B, n_out)


def forward(x: Tensor, Ws: Sequence[Tensor], bs: Sequence[Tensor], activation: str) -> tuple[Tensor, list[Tensor]]:
    """z^L and the activations [a^0, ..., a^(L-1)] that the backward pass needs."""
    f = activations.hidden(activation).f
    L = len(Ws)
    a = x  # (B, n_0) a^0, or (N, B, n_0)
    saved = [a]
    for l in range(L):
        z = affine(a, Ws[l], bs[l])  # (B, n_l) z^l = W^l a^(l-1) + b^l  [eq:z]
        if l < L - 1:
            a = f(z)  # (B, n_l) a^l = f(z^l)  [eq:a]
            saved.append(a)
    return z, saved  # (B, n_L) z^L


def backward(
    delta: Tensor,
    a: Sequence[Tensor],
    Ws: Sequence[Tensor | None],
    activation: str,
    needs: Sequence[bool] | None = None,
    input_grad: bool = False,
    release: bool = False,
) -> tuple[list[Tensor | None], Tensor | None]:
    """From delta^L = dC/dz^L: ([dC/dW^1, dC/db^1, ..., dC/dW^L, dC/db^L], dC/dx or None).

    `a[l]` is a^l (l = 0..L-1), `Ws[l]` is W^(l+1) (W^1 may be None unless `input_grad`);
    `needs[2l]`/`needs[2l+1]` say whether dC/dW^(l+1)/dC/db^(l+1) is wanted (default: all).
    `release=True` empties the list `a` as the recursion passes each a^l, so that memory can go
    back before the next layer's gradients are made (as autograd frees what each node saved).
    """
    act = activations.hidden(activation)
    L = len(a)
    grads: list[Tensor | None] = [None] * (2 * L)
    dx = None
    for l in reversed(range(L)):  # code layer l is the lecture's layer l+1
        if needs is None or needs[2 * l]:
            grads[2 * l] = delta.mT @ a[l]  # (n_l+1, n_l) dC/dW = delta a^T  [eq:BP4]
        if needs is None or needs[2 * l + 1]:
            grads[2 * l + 1] = delta.sum(-2)  # (n_l+1,) dC/db = delta  [eq:BP3]
        if l > 0:
            delta = act.times_df(delta @ Ws[l], a[l])  # (B, n_l) delta^l = (W^(l+1))^T delta^(l+1) * f'(z^l)  [eq:BP2]
        elif input_grad:
            dx = delta @ Ws[0]  # (B, n_0) dC/dx = (W^1)^T delta^1  [eq:dC-dx]
            if dx.dim() > a[0].dim():  # a shared input: every member's cost depends on it
                dx = dx.sum(0)
        if release:
            a[l] = None  # type: ignore[index]
    return grads, dx


class Backprop(torch.autograd.Function):
    """z^L = MLP(x; W^1, b^1, ..., W^L, b^L) with the hand-written backward.

    Inputs must share one floating dtype; `ManualMLP.forward` casts them to float32 under autocast.
    """

    @staticmethod
    def forward(ctx, x: Tensor, activation: str, *params: Tensor) -> Tensor:
        Ws, bs = params[0::2], params[1::2]
        z, saved = forward(x, Ws, bs, activation)
        ctx.input_grad = ctx.needs_input_grad[0]
        ctx.save_for_backward(*saved, Ws[0] if ctx.input_grad else None, *Ws[1:])
        ctx.activation = activation
        return z  # (B, n_L) z^L

    @staticmethod
    @once_differentiable
    def backward(ctx, delta: Tensor):
        # delta arrives as dC/dz^L = delta^L (the base case, computed by the cost)
        saved = ctx.saved_tensors
        L = len(saved) // 2
        with without_autocast(delta.device.type):  # backward() may be called inside an autocast region
            grads, dx = backward(delta, saved[:L], saved[L:], ctx.activation, ctx.needs_input_grad[2:], ctx.input_grad)
        return dx, None, *grads

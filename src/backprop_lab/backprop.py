"""Backpropagation through a fully connected network, written out as in the lecture.

Notation (layer l = 1..L, mini-batch of B inputs stored as rows, so vectors are row vectors):

    forward      z^l = W^l a^(l-1) + b^l        z = a_prev @ W.T + b         (B, n_l)
                 a^l = f(z^l),  a^0 = x          the output layer returns z^L; the cost applies f_out
    base case    delta^L = dC/da^L * f_out'(z^L) (in costs.ManualCost: it arrives here as grad of z^L)
    induction    delta^l = ((W^(l+1))^T delta^(l+1)) * f'(z^l)
                                                 delta = (delta @ W) * f'(a)     (B, n_l)
    gradients    dC/dW^l_kj = delta^l_k a^(l-1)_j    dW = delta.T @ a_prev       (n_l, n_(l-1))
                 dC/db^l_k  = delta^l_k               db = delta.sum(0)          (n_l,)
                 (summed over the batch; the 1/n of the mean cost is already inside delta^L)

The forward saves only the activations a^0..a^(L-1) (and the weights, which are inputs and
cost no memory); f'(z^l) is recomputed from a^l (see activations.py). The backward runs with no
autograd inside and returns a gradient only for inputs that need one.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.amp import custom_bwd, custom_fwd
from torch.autograd.function import once_differentiable

from backprop_lab import activations


class Backprop(torch.autograd.Function):
    """z^L = MLP(x; W^1, b^1, ..., W^L, b^L) with the hand-written backward."""

    @staticmethod
    @custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x: Tensor, activation: str, *params: Tensor) -> Tensor:
        f = activations.hidden(activation).f
        Ws, bs = params[0::2], params[1::2]
        L = len(Ws)
        a = x  # (B, n_0) a^0
        saved = [a]
        for l in range(L):
            z = torch.addmm(bs[l], a, Ws[l].t())  # (B, n_l) z^l = W^l a^(l-1) + b^l
            if l < L - 1:
                a = f(z)  # (B, n_l) a^l = f(z^l)
                saved.append(a)
        ctx.save_for_backward(*saved, *Ws)
        ctx.activation = activation
        return z  # (B, n_L) z^L

    @staticmethod
    @once_differentiable
    @custom_bwd(device_type="cuda")
    def backward(ctx, delta: Tensor):
        # delta arrives as dC/dz^L = delta^L (the base case, computed by the cost)
        df = activations.hidden(ctx.activation).df
        saved = ctx.saved_tensors
        L = len(saved) // 2
        a, Ws = saved[:L], saved[L:]  # a[l] = a^l for l = 0..L-1; Ws[l] = W^(l+1)
        needs = ctx.needs_input_grad[2:]  # (W^1, b^1, W^2, b^2, ...)
        grads: list[Tensor | None] = [None] * (2 * L)
        dx = None
        for l in reversed(range(L)):  # code layer l is the lecture's layer l+1
            if needs[2 * l]:
                grads[2 * l] = delta.t() @ a[l]  # (n_l+1, n_l) dC/dW = delta a^T
            if needs[2 * l + 1]:
                grads[2 * l + 1] = delta.sum(0)  # (n_l+1,) dC/db = delta
            if l > 0:
                delta = (delta @ Ws[l]) * df(a[l])  # (B, n_l) delta^l = (W^(l+1))^T delta^(l+1) * f'(z^l)
            elif ctx.needs_input_grad[0]:
                dx = delta @ Ws[0]  # (B, n_0) dC/dx = (W^1)^T delta^1
        return dx, None, *grads

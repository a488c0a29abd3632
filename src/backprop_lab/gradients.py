"""Nielsen's "speed of learning" of each layer: ||delta^l|| = ||dC/db^l|| of the mean cost over fixed inputs.

NNDL ch. 5 measures, for a network at initialisation and during training, the norm of the
gradient of the cost averaged over the first 1,000 training images with respect to each hidden
layer's biases. Since dC/db^l = delta^l (averaged over the inputs), it says how fast layer l
learns; in deep sigmoid nets it shrinks layer by layer towards the input (vanishing gradients),
and in deep nets with large weights it grows (exploding gradients).

The gradients come from the network's own backward (the hand-written backprop for ManualMLP),
through `torch.autograd.grad`, so the parameters' `.grad` fields are left untouched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backprop_lab.visuals import layer_parameters

N_IMAGES = 1000  # NNDL ch. 5: "the first 1,000 training images"


def delta_norms(net: nn.Module, x: Tensor, y: Tensor, cost: str) -> list[float]:
    """[||dC/db^1||, ..., ||dC/db^L||] for the mean cost C over the rows of x; the net's mode is kept.

    The hidden layers are the first L-1 entries: those are the numbers NNDL ch. 5 reports.
    """
    biases = [b for _, b in layer_parameters(net)]
    p = biases[0]
    was_training = net.training
    net.eval()  # no layer here behaves differently, but measurements should never depend on it
    try:
        with torch.enable_grad():
            C = net.loss(net(x.to(p.device, p.dtype)), y.to(p.device), cost)
            grads = torch.autograd.grad(C, biases)
    finally:
        net.train(was_training)
    return [float(torch.linalg.vector_norm(g)) for g in grads]


def first_images(datamodule, n: int = N_IMAGES) -> tuple[Tensor, Tensor]:
    """The first n training inputs and labels of a set-up in-memory data module (fewer if it has fewer)."""
    return datamodule.train_x[:n], datamodule.train_y[:n]

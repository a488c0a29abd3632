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

import json
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn

from backprop_lab.inspection.figures import evaluating, layer_parameters

N_IMAGES = 1000  # NNDL ch. 5: "the first 1,000 training images"


def delta_norms(net: nn.Module, x: Tensor, y: Tensor, cost: str) -> list[float]:
    """[||dC/db^1||, ..., ||dC/db^L||] for the mean cost C over the rows of x (a population: the mean of its
    members' norms); the net's mode is kept.

    The hidden layers are the first L-1 entries: those are the numbers NNDL ch. 5 reports.
    """
    biases = [b for _, b in layer_parameters(net)]
    p = biases[0]
    with evaluating(net, grad=True):  # no layer here behaves differently, but measurements never depend on it
        C = net.loss(net(x.to(p.device, p.dtype)), y.to(p.device), cost)
        grads = torch.autograd.grad(C.sum(), biases)  # a population's members add up: each its own gradient
    N = getattr(net, "members", None) or 1
    return [float(torch.linalg.vector_norm(g.reshape(N, -1), dim=1).mean()) for g in grads]


def first_images(datamodule, n: int = N_IMAGES) -> tuple[Tensor, Tensor]:
    """The first n training inputs and labels of a set-up in-memory data module (fewer if it has fewer)."""
    return datamodule.train_x[:n], datamodule.train_y[:n]


def hidden_mean(norms: list[list[float]]) -> list[float]:
    """Per hidden layer, the mean over several networks of their `delta_norms` (output layer dropped)."""
    return [sum(column) / len(column) for column in zip(*(n[:-1] for n in norms))]


class DeltaNormsPerEpoch(L.Callback):
    """delta_norms of the first 1,000 training images at the start of training and after every epoch,
    rewritten to `<default_root_dir>/delta_norms.json` ({"delta_norms": [[l=1..L], ...]}) each time."""

    def __init__(self, n_images: int = N_IMAGES) -> None:
        self.n_images, self.norms = n_images, []

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        x, y = first_images(trainer.datamodule, self.n_images)
        self.norms.append(delta_norms(pl_module.net, x, y, pl_module.hparams.cost))
        path = Path(trainer.default_root_dir) / "delta_norms.json"
        path.write_text(json.dumps({"delta_norms": self.norms}) + "\n")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0 and trainer.global_step == 0:  # not when resuming
            self.measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.measure(trainer, pl_module)

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
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from backprop_lab.training import build_module
from backprop_lab.visuals import layer_parameters

N_IMAGES = 1000  # NNDL ch. 5: "the first 1,000 training images"
# NNDL ch. 5's hidden-layer norms at initialisation for [784, 30 x k, 10] sigmoid nets, by k.
PUBLISHED = {2: [0.0657, 0.309], 3: [0.0118, 0.0600, 0.283], 4: [0.00298, 0.0171, 0.0695, 0.285]}


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


def hidden_mean(norms: list[list[float]]) -> list[float]:
    """Per hidden layer, the mean over several networks of their `delta_norms` (output layer dropped)."""
    return [sum(column) / len(column) for column in zip(*(n[:-1] for n in norms))]


def at_init(cfg: DictConfig, x: Tensor, y: Tensor, seeds: int = 1) -> list[list[float]]:
    """delta_norms of the networks cfg builds with seeds cfg.seed, cfg.seed+1, ...; seed cfg.seed is
    the very network train(cfg) starts from (it seeds, loads data without torch's RNG, then builds)."""
    out = []
    for k in range(seeds):
        L.seed_everything(cfg.seed + k, verbose=False)
        out.append(delta_norms(build_module(cfg).net, x, y, cfg.loss))
    return out


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


def tracking_trainer(**kwargs: Any) -> L.Trainer:
    """A Lightning Trainer with DeltaNormsPerEpoch added: `trainer._target_=backprop_lab.gradients.tracking_trainer`."""
    return L.Trainer(**{**kwargs, "callbacks": [*kwargs.get("callbacks", []), DeltaNormsPerEpoch()]})


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


def table_at_init(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per run (`variant`, `at_init` norms of several nets), the mean hidden-layer norms, the
    published ones for sigmoid nets, and last / first hidden layer."""
    rows = ["| net | ‖delta^l‖ at init, l = 1.. (mean) | published | last / first |", "|---|---|---|---|"]
    for m in runs:
        mean = hidden_mean(m["at_init"])
        book = PUBLISHED.get(len(mean)) if "sigmoid" in m["variant"] else None
        rows.append(f"| `{m['variant']}` | {fmt(mean)} | {fmt(book) if book else '-'} | {mean[-1] / mean[0]:.3g}"
                    f"{f' (published {book[-1] / book[0]:.3g})' if book else ''} |")
    return rows


def plot_at_init(ax, runs: list[dict[str, Any]]) -> None:
    """Mean hidden-layer norms against l per run (relu dashed), published values as crosses."""
    for m in runs:
        mean, relu = hidden_mean(m["at_init"]), "relu" in m["variant"]
        k = len(mean)
        plot_by_layer(ax, mean, None if relu else PUBLISHED.get(k), f"C{k - 1}", f"{'relu' if relu else 'sigmoid'}, "
                      f"{k} hidden", ls="--" if relu else "-", alpha=0.5 if relu else 1)
    ax.legend(fontsize=7, ncol=2)


def plot_by_layer(ax, norms: list[float], published: list[float] | None = None, color: str | None = None,
                  label: str = "", **style: Any) -> None:
    """One net's norms against the layer number l = 1.., published values as crosses, log scale."""
    ax.plot(range(1, len(norms) + 1), norms, marker="o", color=color, label=label, **style)
    if published:
        ax.plot(range(1, len(published) + 1), published, "x", ms=9, mew=2, color=color, label=f"published, {label}")
    ax.set(yscale="log", xlabel="layer l", ylabel="‖delta^l‖ = ‖dC/db^l‖", xticks=range(1, len(norms) + 1))


def plot_by_epoch(ax, norms: list[list[float]], title: str) -> None:
    """Each hidden layer's norm against the epoch (0: initialisation), log scale."""
    for l, series in enumerate(zip(*(n[:-1] for n in norms)), start=1):
        ax.plot(range(len(series)), series, marker="o", ms=3, label=f"layer {l}")
    ax.set(yscale="log", xlabel="epoch (0: initialisation)", ylabel="‖delta^l‖", title=title)
    ax.legend(fontsize=8)

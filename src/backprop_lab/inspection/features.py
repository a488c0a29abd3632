"""What a trained MLP's hidden units learned (scripts/visualize.py): weight tiles and the digits that
excite each unit most. Figures use matplotlib's object-oriented `Figure` API (Agg; no pyplot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from backprop_lab.core import activations
from backprop_lab.inspection.figures import hidden_unit_tiles, layer_parameters
from backprop_lab.inspection.images import SIDE


def hidden_activations(module: torch.nn.Module, x: Tensor) -> Tensor:
    """a^1 (N, n_1) for inputs x (N, 784): the first layer's activations (the output's if no hidden layer)."""
    net = getattr(module, "net", module)
    W, b = layer_parameters(net)[0]
    with torch.no_grad():
        z = x.reshape(len(x), -1).to(W.device, W.dtype) @ W.T + b
        return (
            activations.hidden(net.activation).f(z) if len(net.sizes) > 2 else activations.output(z, net.output)
        ).cpu()


def hidden_units_figure(module: torch.nn.Module, max_units: int = 100) -> Figure:
    """Rows of W^1 as 28x28 tiles: the pattern each hidden unit responds to ("hidden layers extract features")."""
    W = layer_parameters(getattr(module, "net", module))[0][0]
    grid = hidden_unit_tiles(W, max_units)[0]
    fig = Figure(figsize=(7, 7.4))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.imshow(grid.numpy(), cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    shown = min(max_units, W.shape[0])
    fig.suptitle(
        f"incoming weights W^1 of {shown} of {W.shape[0]} hidden units\n"
        "(each tile scaled to its own range; light = positive)"
    )
    return fig


def top_activations_figure(module: torch.nn.Module, x: Tensor, n_units: int = 16, k: int = 8) -> Figure:
    """One row per hidden unit (the first n_units): its weight tile, then the k digits of x exciting it most.

    Drawn as one mosaic under one Axes (far cheaper than an Axes per digit), a^1_k under each digit.
    """
    a = hidden_activations(module, x)  # (N, n_1)
    W = layer_parameters(getattr(module, "net", module))[0][0]
    n_units, k = min(n_units, a.shape[1]), min(k, len(x))
    best = a[:, :n_units].topk(k, dim=0)  # values, indices: (k, n_units)
    digits = x.reshape(len(x), SIDE, SIDE).float().cpu().numpy()
    cell, gap = SIDE + 2, 6  # 1-pixel margins; a gap between the weight tile and the digits
    mosaic = np.full((n_units * cell, (k + 1) * cell + gap), np.nan)  # NaN: blank
    for u in range(n_units):
        top = u * cell + 1
        mosaic[top : top + SIDE, 1 : 1 + SIDE] = hidden_unit_tiles(W[u : u + 1], 1, pad=0)[0].numpy()
        for j in range(k):
            left = (j + 1) * cell + gap + 1
            mosaic[top : top + SIDE, left : left + SIDE] = digits[best.indices[j, u]]
    width, height = mosaic.shape[1] * 0.6 / cell + 0.7, mosaic.shape[0] * 0.6 / cell + 0.5  # inches
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0.7 / width, 0, 1 - 0.7 / width, 1 - 0.5 / height))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    for u in range(n_units):
        ax.text(-2, u * cell + cell / 2, f"unit {u}", ha="right", va="center", fontsize=7)
        for j in range(k):
            ax.text(
                (j + 1.5) * cell + gap,
                (u + 1) * cell - 1,
                f"{float(best.values[j, u]):.2f}",
                ha="center",
                va="bottom",
                fontsize=5,
                color="yellow",
            )
    fig.suptitle(f"weights of unit k, then the {k} of {len(x)} test digits with the largest a^1_k", fontsize=9)
    return fig


def dataset_digits(data: str = "mnist_subset") -> Tensor:
    """The test split's inputs (N, 784) float32 in [0, 1], from the project's data module for `data`.

    Full MNIST / Fashion-MNIST are read from <project>/data as train.py keeps them, never downloaded.
    """
    from backprop_lab import data as dm_
    from backprop_lab.paths import project_root

    local = {"data_dir": str(Path(project_root()) / "data"), "download": False}
    dm = {
        "mnist_subset": lambda: dm_.MNISTSubsetDataModule(batch_size=100),
        "mnist": lambda: dm_.MNISTDataModule(batch_size=100, strict=True, **local),
        "fashion_mnist": lambda: dm_.FashionMNISTDataModule(batch_size=100, **local),
    }[data]()
    dm.setup("test")
    return dm.test_x.cpu()


def figures_dir(ckpt_path: str | Path) -> Path:
    """<run>/figures for a checkpoint in <run>/checkpoints/, else a figures/ folder beside the checkpoint."""
    parent = Path(ckpt_path).expanduser().resolve().parent
    return (parent.parent if parent.name == "checkpoints" else parent) / "figures"


def write_feature_figures(module: torch.nn.Module, x: Tensor, out: str | Path) -> list[Path]:
    """hidden_units.png and top_activations.png in `out` (created); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "hidden_units.png", out / "top_activations.png"]
    hidden_units_figure(module).savefig(paths[0], dpi=120)
    top_activations_figure(module, x).savefig(paths[1], dpi=150)
    return paths

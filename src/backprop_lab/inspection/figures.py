"""Pictures of a network and its mistakes, as pure functions (the TensorBoard callbacks in
tensorboard.py, the scripts and the report draw with them): learned features, misclassified digits,
the confusion matrix.

Figures use matplotlib's object-oriented `Figure` API (rendered by Agg; no pyplot, no GUI backend).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

IMAGE_SIDE = 28  # MNIST: inputs are 28x28 images flattened to 784 features
EVAL_BATCH = 10_000


def layer_parameters(net: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """[(W^1, b^1), ..., (W^L, b^L)] from the shared `"{2*(l-1)}.weight"/.bias` names."""
    params = dict(net.named_parameters())
    L_ = len(net.sizes) - 1
    return [(params[f"{2 * (l - 1)}.weight"], params[f"{2 * (l - 1)}.bias"]) for l in range(1, L_ + 1)]


@contextlib.contextmanager
def evaluating(module: nn.Module, grad: bool = False) -> Iterator[nn.Module]:
    """The module in eval mode (and without autograd unless `grad`), its mode restored afterwards:
    measurements never depend on, nor change, whether it was training."""
    was_training = module.training
    module.eval()
    try:
        with torch.set_grad_enabled(grad):
            yield module
    finally:
        module.train(was_training)


def predictions(module: nn.Module, x: Tensor, batch_size: int = EVAL_BATCH) -> Tensor:
    """argmax of z^L for every row of x, on the CPU (N,) int64; x may live on any device: batches
    are moved to the module's device and dtype one at a time."""
    p = next(module.parameters())
    with evaluating(module):
        preds = [
            module(x[i : i + batch_size].to(p.device, p.dtype)).argmax(dim=1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def confusion_matrix(pred: Tensor, y: Tensor, n: int) -> Tensor:
    """(n, n) int64 counts, row = true class, column = predicted class."""
    pred, y = pred.flatten().long().cpu(), y.flatten().long().cpu()
    return torch.bincount(y * n + pred, minlength=n * n).reshape(n, n)


def hidden_unit_tiles(W: Tensor, max_units: int = 100, pad: int = 1, pad_value: float = 1.0) -> Tensor:
    """The first rows of W (units, side*side) as side x side tiles in a near-square grid.

    Returns a (1, H, W) float image (CHW) with H = rows*side + (rows+1)*pad, likewise W.
    Each tile is scaled to its own [min, max] -> [0, 1]: a unit's weights are compared with each
    other, not with other units' (a constant row becomes 0). Empty cells and borders are pad_value.
    """
    W = W.detach().float().cpu()
    side = math.isqrt(W.shape[1])
    if side * side != W.shape[1]:
        raise ValueError(f"rows of W must be square images, got {W.shape[1]} inputs")
    tiles = W[:max_units].reshape(-1, side, side)
    k = len(tiles)
    lo = tiles.amin(dim=(1, 2), keepdim=True)
    hi = tiles.amax(dim=(1, 2), keepdim=True)
    tiles = (tiles - lo) / (hi - lo).clamp_min(1e-12)
    ncols = max(1, math.ceil(math.sqrt(k)))
    nrows = max(1, math.ceil(k / ncols))
    step = side + pad
    grid = torch.full((nrows * step + pad, ncols * step + pad), pad_value)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        grid[pad + r * step : pad + r * step + side, pad + c * step : pad + c * step + side] = tile
    return grid.unsqueeze(0)


def _label(classes: Sequence[str] | None, k: int, max_len: int = 6) -> str:
    """Class name when there is a short one (fits a tile title), else the index."""
    if classes is not None and k < len(classes) and len(str(classes[k])) <= max_len:
        return str(classes[k])
    return str(k)


def misclassified_figure(
    x: Tensor,
    pred: Tensor,
    y: Tensor,
    classes: Sequence[str] | None = None,
    max_images: int = 64,
    ncols: int = 8,
) -> Figure:
    """Grid of the first `max_images` digits with pred != y, each titled `pred p / true t`.

    x is (N, side*side) or (N, ..., side, side); pred and y are (N,) on any device. The digits are
    pasted into one mosaic image under one Axes (each scaled to its own range), with the titles as
    text: far cheaper to draw than one Axes per digit.
    """
    wrong = (pred.cpu() != y.cpu()).nonzero().flatten()[:max_images]
    n = len(wrong)
    if n == 0:
        fig = Figure(figsize=(3, 1))
        fig.text(0.5, 0.5, "no misclassified digits", ha="center", va="center")
        return fig
    imgs = x[wrong.to(x.device)].detach().float().cpu().reshape(n, -1)
    side = math.isqrt(imgs.shape[1])
    if side * side != imgs.shape[1]:
        raise ValueError(f"inputs must be square images, got {imgs.shape[1]} features")
    lo, hi = imgs.amin(1, keepdim=True), imgs.amax(1, keepdim=True)
    imgs = ((imgs - lo) / (hi - lo).clamp_min(1e-12)).reshape(n, side, side)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    cell_w, cell_h = side + 2, side + 9  # a 1-pixel margin each side, a title band above each digit
    mosaic = torch.zeros(nrows * cell_h, ncols * cell_w)
    inch = 1.3 / cell_w  # figure inches per mosaic pixel
    fig = Figure(figsize=(ncols * cell_w * inch, nrows * cell_h * inch))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for k, i in enumerate(wrong.tolist()):
        r, c = divmod(k, ncols)
        top, left = r * cell_h + cell_h - side - 1, c * cell_w + 1
        mosaic[top : top + side, left : left + side] = imgs[k]
        title = f"pred {_label(classes, int(pred[i]))} / true {_label(classes, int(y[i]))}"
        ax.text(left + side / 2, top - 1.5, title, ha="center", va="bottom", fontsize=7)
    ax.imshow(mosaic.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    return fig


def confusion_figure(cm: Tensor, classes: Sequence[str] | None = None) -> Figure:
    """The confusion matrix as a heat map with the count in every cell; rows true, columns predicted."""
    cm = cm.cpu()
    n = cm.shape[0]
    names = [str(c) for c in classes] if classes is not None and len(classes) == n else [str(k) for k in range(n)]
    longest = max(map(len, names))
    # Fixed margins in inches (room for the tick labels) instead of tight_layout, which draws twice.
    cell, margin, top, right = 0.55, 0.5 + 0.075 * longest, 0.45, 0.2
    w, h = n * cell + margin + right, n * cell + margin + top
    fig = Figure(figsize=(w, h))
    fig.subplots_adjust(left=margin / w, right=1 - right / w, bottom=margin / h, top=1 - top / h)
    ax = fig.subplots()
    ax.imshow(cm.numpy(), cmap="Blues", aspect="auto")
    half = cm.max().item() / 2
    for t in range(n):
        for p in range(n):
            count = int(cm[t, p])
            ax.text(p, t, str(count), ha="center", va="center", fontsize=7, color="white" if count > half else "black")
    rotate = longest > 2
    ax.set_xticks(range(n), names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = cm.sum().item()
    ax.set_title(f"accuracy {cm.trace().item() / total:.4f} ({total} examples)" if total else "no examples")
    return fig

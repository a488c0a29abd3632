"""Classify users' digit images: one `Result` per file, unreadable files reported, not fatal.

Figures use matplotlib's object-oriented `Figure` API (Agg; no pyplot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from backprop_lab.errors import ConfigError
from backprop_lab.inspection.figures import evaluating
from backprop_lab.inspection.images import SIDE, ImageError, load_digit


@dataclass
class Result:
    """One file's outcome: its class and top-3 probabilities, or the error that stopped it."""

    path: str
    digit: int | None = None
    top3: list[tuple[int, float]] = field(default_factory=list)
    input: Tensor | None = None  # the preprocessed (28, 28) image
    error: str | None = None

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "digit": self.digit, "top3": [[d, round(p, 4)] for d, p in self.top3]}

    def line(self, classes: Sequence[str] | None = None) -> str:
        """`path: 7  (7 0.98, 1 0.01, 9 0.00)`, or `path: what (fix)` for a file that failed."""
        if self.error is not None:
            return f"{self.path}: {self.error}"
        name = (lambda k: classes[k]) if classes else str
        return f"{self.path}: {name(self.digit)}  ({', '.join(f'{name(d)} {p:.2f}' for d, p in self.top3)})"


def classify(module: torch.nn.Module, images: Tensor) -> Tensor:
    """a^L (N, classes) for images (N, 28, 28) in [0, 1]; eval mode and no grad, mode restored. A
    population's answer is its ensemble: the members' probabilities averaged."""
    net, p = getattr(module, "net", module), next(module.parameters())
    with evaluating(net):
        probs = net.predict_proba(images.reshape(len(images), -1).to(p.device, p.dtype)).float().cpu()
    return probs.mean(0) if probs.dim() == 3 else probs


def predict_files(module: torch.nn.Module, paths: Sequence[str | Path]) -> list[Result]:
    """A Result per path, in order; unreadable or blank files get their error and do not stop the rest."""
    results = []
    for path in paths:
        try:
            results.append(Result(str(path), input=load_digit(path)))
        except ImageError as e:
            results.append(Result(str(path), error=str(e)))
    good = [r for r in results if r.error is None]
    if good:
        probs = classify(module, torch.stack([r.input for r in good]))
        top = probs.topk(min(3, probs.shape[1]), dim=1)
        for r, values, indices in zip(good, top.values.tolist(), top.indices.tolist()):
            r.digit, r.top3 = indices[0], list(zip(indices, values))
    return results


def require_images(module: torch.nn.Module, ckpt_path: str | Path) -> torch.nn.Module:
    """The module, if it takes 28x28 images; a ConfigError naming the checkpoint otherwise."""
    n_in = module.hparams.sizes[0]
    if n_in != SIDE * SIDE:
        raise ConfigError(f"{ckpt_path} expects {n_in} inputs, not 28x28 images (pass an MNIST checkpoint)")
    return module


def predictions_figure(results: Sequence[Result], classes: Sequence[str] | None = None, ncols: int = 6) -> Figure:
    """The preprocessed 28x28 inputs as the network sees them, each titled with its file and prediction."""
    good = [r for r in results if r.error is None]
    ncols = max(1, min(ncols, len(good)))
    nrows = max(1, math.ceil(len(good) / ncols))
    fig = Figure(figsize=(1.8 * ncols, 2.1 * nrows))
    if not good:
        fig.text(0.5, 0.5, "no image could be classified", ha="center", va="center")
    for i, r in enumerate(good):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(r.input.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        name = classes[r.digit] if classes else str(r.digit)
        ax.set_title(f"{Path(r.path).name[:18]}\n{name} ({r.top3[0][1]:.2f})", fontsize=8)
    return fig

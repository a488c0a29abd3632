"""Users' own digit images in, predictions and feature pictures out (scripts/predict.py, visualize.py).

`preprocess` turns any photo or drawing of one digit into an MNIST-style input, because the MLP
only knows MNIST's conventions: light ink on black, the digit scaled to fit 20x20 (aspect kept,
antialiased) and placed in a 28x28 field with its centre of mass at the centre (14, 14).
Figures use matplotlib's object-oriented `Figure` API (Agg; no pyplot).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from backprop_lab import activations
from backprop_lab.config import ConfigError
from backprop_lab.visuals import hidden_unit_tiles, layer_parameters

SIDE, BOX = 28, 20  # MNIST: a 28x28 field, the digit scaled to fit a 20x20 box
WORK_SIDE, COARSE_SIDE = 1024, 64  # working resolution cap; resolution of the background estimate
MIN_CONTRAST = 0.1  # ink less than 10% of the grey range above the paper: nothing there
NOISE = 0.2  # after normalising the ink to [0, 1], weaker pixels are paper texture / JPEG noise
THIN, STROKE = 0.07, 0.10  # stroke width / digit height: thinner than THIN is widened to STROKE


class ImageError(ValueError):
    """A file that cannot become a digit; the message reads `<what> (<fix>)`."""


def read_image(path: str | Path) -> Image.Image:
    """The decoded image in `path`, or an ImageError saying why not (missing, empty, not an image, truncated)."""
    p = Path(path)
    if not p.exists():
        raise ImageError("no such file (check the path)")
    if p.is_dir():
        raise ImageError("is a directory (pass image files)")
    if p.stat().st_size == 0:
        raise ImageError("empty file, 0 bytes (save or export the image again)")
    try:
        image = Image.open(p)
        image.load()  # Image.open is lazy: truncated and corrupt data only show up here
    except UnidentifiedImageError:
        raise ImageError("not an image file (pass a PNG or JPEG)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"too large for a digit photo (scale it down below {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except PermissionError:
        raise ImageError("cannot be read: permission denied (check the file's permissions)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"truncated or corrupt image: {' '.join(str(e).split())[:120]} (save the image again)") from None
    return image


def _grey(image: Image.Image) -> np.ndarray:
    """Float (H, W) in [0, 1]; camera rotation applied, transparency flattened onto a contrasting colour."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        grey, alpha = np.asarray(rgba.convert("L"), np.float32), np.asarray(rgba.getchannel("A"), np.float32)
        ink = grey[alpha > 127]  # strokes drawn on a transparent canvas: put them on the opposite colour
        paper = 255 if ink.size == 0 or ink.mean() < 128 else 0
        image = Image.fromarray((grey * alpha / 255 + paper * (1 - alpha / 255)).astype(np.uint8))
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit PNGs: convert("L") would clip
        a = np.asarray(image, np.float32)
        a = a / (65535 if image.mode.startswith("I;16") or a.max() > 255 else 255)
    else:
        a = np.asarray(image.convert("L"), np.float32) / 255
    h, w = a.shape
    s = WORK_SIDE / max(h, w)  # a digit needs no more detail than this
    return _resize(a, max(1, round(h * s)), max(1, round(w * s)), Image.Resampling.BOX) if s < 1 else a


def _resize(a: np.ndarray, h: int, w: int, how: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """Antialiased resize of a float image (PIL widens the kernel when shrinking)."""
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((w, h), how))


def _rank_filter(a: np.ndarray, k: int, op: np.ufunc) -> np.ndarray:
    """Separable k x k min or max filter (op = np.fmin or np.fmax); windows end at the image's edges."""
    for axis in (0, 1):
        pad = [(k // 2, k // 2) if ax == axis else (0, 0) for ax in (0, 1)]
        padded = np.pad(a.astype(np.float32), pad, constant_values=np.nan)  # fmin/fmax skip NaN
        a = op.reduce(sliding_window_view(padded, k, axis=axis), axis=-1)
    return a


def _background(a: np.ndarray) -> np.ndarray:
    """The paper's level at every pixel (light ink on dark paper here): a plane, plus an opening.

    A plane fitted to the darker half of the pixels takes out a lighting gradient (exactly, up to
    the edges); a morphological opening (windows a quarter of the image wide) then follows the
    rest of the shading, e.g. shadows: strokes are thinner than its window, so it removes them.
    """
    h, w = a.shape
    s = min(1.0, COARSE_SIDE / max(h, w))
    coarse = _resize(a, max(1, round(h * s)), max(1, round(w * s)), Image.Resampling.BOX) if s < 1 else a
    ys, xs = np.mgrid[: coarse.shape[0], : coarse.shape[1]] / max(coarse.shape)
    A = np.stack([np.ones_like(ys), ys, xs], axis=-1)
    paper = coarse <= np.median(coarse)
    plane = A @ np.linalg.lstsq(A[paper], coarse[paper], rcond=None)[0]
    k = max(3, max(coarse.shape) // 4) | 1
    bg = plane + _rank_filter(_rank_filter(coarse - plane, k, np.fmin), k, np.fmax)
    return _resize(bg, h, w, Image.Resampling.BILINEAR) if s < 1 else bg  # bilinear and box: no ringing


def _span(a: np.ndarray, gap: int) -> tuple[int, int]:
    """First and last row of a's main run of inked rows (runs split by more than `gap` empty rows).

    The main run holds the most ink outside solid rows (inked across 90% of the image): a solid
    band apart from the rest is the edge of a table or of the sheet, not a stroke.
    """
    profile = a.sum(axis=1)
    weight = np.where((a > 0).mean(axis=1) > 0.9, 0, profile)
    idx = np.flatnonzero(profile)
    cuts = np.flatnonzero(np.diff(idx) > gap + 1)
    runs = list(zip(idx[np.r_[0, cuts + 1]], idx[np.r_[cuts, len(idx) - 1]]))
    return max(runs, key=lambda r: weight[r[0] : r[1] + 1].sum())


def _crop(a: np.ndarray) -> np.ndarray:
    """The bounding box of the ink, ignoring specks (dust, noise) separated from the digit by 5% of the image."""
    gap = max(2, max(a.shape) // 20)
    r0, r1 = _span(a, gap)
    c0, c1 = _span(a[r0 : r1 + 1].T, gap)
    a = a[r0 : r1 + 1, c0 : c1 + 1]
    r0, r1 = _span(a, gap)  # rows that held only specks outside these columns
    return a[r0 : r1 + 1]


def _thicken(crop: np.ndarray) -> np.ndarray:
    """Widen pen-thin strokes to MNIST's: about a tenth of the digit's size (only 5% of MNIST is under 0.07).

    Thin strokes shrink to faint hairlines at 20x20, which an MLP trained on MNIST misreads. The
    width is estimated as 2 * area / boundary length of the ink mask.
    """
    mask = crop >= 0.5
    edge = np.count_nonzero(mask & ~(_rank_filter(mask, 3, np.fmin) > 0))
    size = max(crop.shape)
    width = 2 * np.count_nonzero(mask) / max(edge, 1)
    if width >= THIN * size:
        return crop
    k = round((STROKE * size - width) / 2)  # grow each side by k pixels
    return _rank_filter(np.pad(crop, k), 2 * k + 1, np.fmax)


def preprocess(image: Image.Image) -> Tensor:
    """One digit image (any size, dark on light or light on dark) -> (28, 28) float32 in [0, 1], MNIST-style.

    Steps: grey; invert when the ink is darker than the paper (the paper is the median, the ink
    the farther tail); divide out the paper's level and drop faint noise; crop to the ink (specks
    and table edges apart from the digit left out); widen pen-thin strokes; scale to fit 20x20 keeping the aspect ratio; paste with the centre of mass
    at (14, 14), as MNIST did. Raises ImageError for an image with no ink.
    """
    a = _grey(image)
    lo, med, hi = np.percentile(a, [0.5, 50, 99.5])
    if med - lo > hi - med:  # dark ink on light paper: MNIST has light ink on black
        a = 1 - a
    bg = _background(a)
    ink = np.clip((a - bg) / np.maximum(1 - bg, 0.2), 0, None)  # dark ink: 1 - grey / paper (light varies)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise ImageError("no ink found: the image is blank or too faint (crop to the digit or increase the contrast)")
    ink /= peak
    ink[ink < NOISE] = 0
    crop = _thicken(_crop(ink))
    h, w = crop.shape
    s = BOX / max(h, w)
    h, w = max(1, min(BOX, round(h * s))), max(1, min(BOX, round(w * s)))
    digit = np.clip(_resize(crop, h, w), 0, 1)
    digit /= max(float(digit.max()), 1e-12)  # MNIST's strokes reach full intensity
    ys, xs = np.mgrid[:h, :w] * digit / digit.sum()  # centre of mass, then as close to (14, 14) as fits
    top, left = (min(max(round(SIDE / 2 - c.sum()), 0), SIDE - n) for c, n in ((ys, h), (xs, w)))
    out = np.zeros((SIDE, SIDE), np.float32)
    out[top : top + h, left : left + w] = digit
    return torch.from_numpy(out)


def load_digit(path: str | Path) -> Tensor:
    """read_image then preprocess: (28, 28) float32, or an ImageError."""
    return preprocess(read_image(path))


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
        """`path: 7  (7 0.98, 1 0.01, 9 0.00)`, or `error: path: what (fix)`."""
        if self.error is not None:
            return f"error: {self.path}: {self.error}"
        name = (lambda k: classes[k]) if classes else str
        return f"{self.path}: {name(self.digit)}  ({', '.join(f'{name(d)} {p:.2f}' for d, p in self.top3)})"


def classify(module: torch.nn.Module, images: Tensor) -> Tensor:
    """a^L (N, classes) for images (N, 28, 28) in [0, 1]; eval mode and no grad, mode restored."""
    net, p = getattr(module, "net", module), next(module.parameters())
    was_training = net.training
    try:
        with torch.no_grad():
            return net.eval().predict_proba(images.reshape(len(images), -1).to(p.device, p.dtype)).float().cpu()
    finally:
        net.train(was_training)


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


def load_model(ckpt_path: str | Path, model: str | None = None) -> torch.nn.Module:
    """evaluation.load_checkpoint, for 28x28 inputs; every failure is a one-line ConfigError."""
    from backprop_lab.evaluation import load_checkpoint

    try:
        module = load_checkpoint(ckpt_path, model)
    except Exception as e:  # noqa: BLE001 - e.g. a KeyError from torch's unpickler on a random file
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{ckpt_path} is not a readable checkpoint ({type(e).__name__}; pass a .ckpt file written by train.py)") from None
    if module.hparams.sizes[0] != SIDE * SIDE:
        raise ConfigError(f"{ckpt_path} expects {module.hparams.sizes[0]} inputs, not 28x28 images (pass an MNIST checkpoint)")
    return module


def class_names(ckpt_path: str | Path) -> list[str] | None:
    """Fashion-MNIST's class names when the checkpoint's run config says it trained on it, else None."""
    from backprop_lab.evaluation import run_config

    try:
        fashion = str(run_config(ckpt_path).data._target_).endswith("FashionMNISTDataModule")
    except Exception:  # noqa: BLE001 - no (or an odd) run config: plain class indices
        return None
    return list(__import__("torchvision").datasets.FashionMNIST.classes) if fashion else None


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


def hidden_activations(module: torch.nn.Module, x: Tensor) -> Tensor:
    """a^1 (N, n_1) for inputs x (N, 784): the first layer's activations (the output's if no hidden layer)."""
    net = getattr(module, "net", module)
    W, b = layer_parameters(net)[0]
    with torch.no_grad():
        z = x.reshape(len(x), -1).to(W.device, W.dtype) @ W.T + b
        return (activations.hidden(net.activation).f(z) if len(net.sizes) > 2 else activations.output(z, net.output)).cpu()


def hidden_units_figure(module: torch.nn.Module, max_units: int = 100) -> Figure:
    """Rows of W^1 as 28x28 tiles: the pattern each hidden unit responds to ("hidden layers extract features")."""
    W = layer_parameters(getattr(module, "net", module))[0][0]
    grid = hidden_unit_tiles(W, max_units)[0]
    fig = Figure(figsize=(7, 7.4))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.imshow(grid.numpy(), cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    shown = min(max_units, W.shape[0])
    fig.suptitle(f"incoming weights W^1 of {shown} of {W.shape[0]} hidden units\n(each tile scaled to its own range; light = positive)")
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
            ax.text((j + 1.5) * cell + gap, (u + 1) * cell - 1, f"{float(best.values[j, u]):.2f}",
                    ha="center", va="bottom", fontsize=5, color="yellow")
    fig.suptitle(f"weights of unit k, then the {k} of {len(x)} test digits with the largest a^1_k", fontsize=9)
    return fig


def dataset_digits(data: str = "mnist_subset") -> Tensor:
    """The test split's inputs (N, 784) float32 in [0, 1], from the project's data module for `data`.

    Full MNIST / Fashion-MNIST are read from <project>/data as train.py keeps them, never downloaded.
    """
    from backprop_lab import data as dm_
    from backprop_lab.config import project_root

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

"""Users' own digit images in, MNIST-style inputs out (scripts/predict.py).

`preprocess` turns any photo or drawing of one digit into an MNIST-style input, because the MLP
only knows MNIST's conventions: light ink on black, the digit scaled to fit 20x20 (aspect kept,
antialiased) and placed in a 28x28 field with its centre of mass at the centre (14, 14).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

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
        raise ImageError(
            f"truncated or corrupt image: {' '.join(str(e).split())[:120]} (save the image again)"
        ) from None
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
    and table edges apart from the digit left out); widen pen-thin strokes; scale to fit 20x20 keeping
    the aspect ratio; paste with the centre of mass
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

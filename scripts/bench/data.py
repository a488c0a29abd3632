"""The training images every comparison uses: full Fashion-MNIST through the project's own data
module when installed, else 60,000 synthetic images (`Data` says which)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Data:
    """Training images (N, 784) float32 in [0, 1] and labels (N,) int64, and what they are."""

    x: Tensor
    y: Tensor
    source: str
    synthetic: bool
    datamodule: Any = None  # the project's data module that holds them (None: synthetic)

    def batches(
        self, batch_size: int, n: int, device: torch.device | str = "cpu", seed: int = 0
    ) -> list[tuple[Tensor, Tensor]]:
        """n distinct random batches, gathered (copied) like InMemoryLoader does, on `device`."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            idx = torch.randint(0, len(self.x), (batch_size,), generator=g)
            out.append((self.x[idx].to(device), self.y[idx].to(device)))
        return out


def synthetic_images(n: int = 60_000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n random uint8 28x28 images and labels 0..9 (the fallback when Fashion-MNIST is missing)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def load_data(train_size: int | None = None) -> Data:
    """Full Fashion-MNIST (all 60,000 training images: val_size=0) when installed, else 60,000 synthetic ones.

    The project's own `FashionMNISTDataModule` reads it (no download is attempted); the same data
    module then serves the Lightning epochs, so every comparison sees the same tensors.
    """
    from backprop_lab.data import DataError, FashionMNISTDataModule, InMemoryDataModule

    try:
        dm = FashionMNISTDataModule(val_size=0, test_size=100, train_size=train_size, download=False)
        dm.setup("fit")
        what = (
            "the full Fashion-MNIST training set"
            if train_size is None
            else f"{len(dm.train_y)} Fashion-MNIST training images"
        )
        return Data(dm.train_x, dm.train_y, f"{dm.source}: {what}", False, dm)
    except DataError:
        pass

    class SyntheticDataModule(InMemoryDataModule):
        def _load(self):
            x, y = synthetic_images()
            return "synthetic", self.classes, self._holdout((x, y), (x[:100], y[:100]), 0)

    dm = SyntheticDataModule(val_size=0, train_size=train_size)
    dm.setup("fit")
    what = "synthetic: 60,000 random uint8 images, random labels (Fashion-MNIST not installed)"
    return Data(dm.train_x, dm.train_y, what if train_size is None else f"{what}, {len(dm.train_y)} of them", True, dm)

"""`InMemoryLoader`: mini-batches (or `Block`s of them) sliced from tensors already in memory.

No Dataset, no DataLoader, no per-sample work: each epoch's order is a permutation seeded by
(seed, epoch), split across DDP ranks, resumable mid-epoch. The data modules in `data.py` serve it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["Block", "InMemoryLoader"]


class Block(NamedTuple):
    """k consecutive mini-batches of B examples served as one item: x (k, B, ...), y (k, B).

    LitMLP.training_step runs one optimizer step per mini-batch, so Lightning's per-call work is
    paid once per block instead of once per step."""

    x: Tensor
    y: Tensor


class InMemoryLoader:
    """Mini-batches `(x[idx], y[idx])` of in-memory tensors, idx running through a fixed order.

    The order of epoch e is a permutation drawn from (seed, e) when `shuffle`, else 0..n-1: the
    same seed and epoch always give the same order. Under DDP rank r takes `order[r::world_size]`
    after trimming the order to a multiple of world_size: with `pad=False` (training) the last
    n % world_size examples of that epoch's order are dropped; with `pad=True` (evaluation) the
    order is extended by wrapping around, so every example is seen and all ranks run the same
    number of steps. It has `set_epoch` and `sampler` (itself), so Lightning's fit loop sets the
    epoch, and `state_dict`/`load_state_dict` for resuming in the middle of an epoch. Iterating
    again without `set_epoch` repeats the same order (like DistributedSampler).

    With `block=k` it yields `Block`s of k consecutive mini-batches (the same batches in the same
    order; a last partial batch comes alone), and its length counts blocks. Positions (`state_dict`,
    `skip_next`) always count mini-batches, so a run may resume with another block size.

    With `members=N` (a population) it serves N orders at once, member k's drawn from (seed + k, e),
    exactly the order a run with seed + k would see: batches (N, B, ...), blocks (k, N, B, ...).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = False,
        block: int | None = None,
        members: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1 or not 0 <= rank < world_size or seed < 0 or (block is not None and block < 1):
            raise ValueError(
                f"need batch_size >= 1, 0 <= rank < world_size, seed >= 0 and block >= 1, got batch_size="
                f"{batch_size}, rank={rank}, world_size={world_size}, seed={seed}, block={block}"
            )
        self.x, self.y = x, y  # (N, 784), (N,)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size, self.pad, self.block = rank, world_size, pad, block
        if members < 1:
            raise ValueError(f"need members >= 1, got {members}")
        self.members = members
        self.epoch = 0
        self._skip = 0  # batches to skip at the start of the next iteration (resume)
        self._yielded = 0  # batches handed out so far in this epoch

    batch_sampler = None  # Lightning reads it on eval loaders (to warn about shuffled val/test)

    @property
    def sampler(self) -> InMemoryLoader:
        """Itself, so that Lightning's `dataloader.sampler.set_epoch(epoch)` reaches `set_epoch`."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Use epoch `epoch`'s order from now on; a pending resume is kept only for that same epoch."""
        if epoch != self.epoch:
            self.epoch, self._skip, self._yielded = epoch, 0, 0

    @property
    def num_samples(self) -> int:
        """Examples this rank sees per epoch."""
        n, w = len(self.x), self.world_size
        return math.ceil(n / w) if self.pad else n // w

    def indices(self, epoch: int | None = None) -> Tensor:
        """This rank's example indices for `epoch` (default: the current one), in batch order."""
        epoch = self.epoch if epoch is None else epoch
        orders = [self._order(self.seed + k, epoch) for k in range(self.members)]
        order = np.stack(orders) if self.members > 1 else orders[0]
        return torch.from_numpy(order).to(self.x.device)  # (num_samples,) or (N, num_samples) int64

    def _order(self, seed: int, epoch: int) -> np.ndarray:
        n = len(self.x)
        order = np.random.default_rng([seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.world_size > 1:
            order = np.resize(order, self.num_samples * self.world_size)  # drop the tail or wrap around
            order = order[self.rank :: self.world_size]
        return order

    @property
    def num_batches(self) -> int:
        """Mini-batches per epoch on this rank."""
        ns = self.num_samples
        return ns // self.batch_size if self.drop_last else math.ceil(ns / self.batch_size)

    def __len__(self) -> int:
        """Items per epoch on this rank: mini-batches, or blocks with `block`."""
        if self.block is None:
            return self.num_batches
        full = self.num_samples // self.batch_size  # full mini-batches; a partial one is its own block
        return math.ceil(full / self.block) + (self.num_batches - full)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor] | Block]:
        idx = self.indices()
        start, self._skip = self._skip, 0
        bs, k = self.batch_size, self.block
        if k is None:
            for b in range(start, self.num_batches):
                sel = idx[..., b * bs : (b + 1) * bs]  # (B,), or (N, B) for a population
                self._yielded = b + 1
                yield self.x[sel], self.y[sel]  # (B, 784) float32, (B,) int64
            return
        full = self.num_samples // bs
        for b in range(start, full, k):
            n = min(k, full - b)  # mini-batches in this block
            sel = idx[..., b * bs : (b + n) * bs].unflatten(-1, (n, bs)).movedim(-2, 0)  # (n, B) or (n, N, B)
            self._yielded = b + n
            yield Block(self.x[sel], self.y[sel])  # (n, B, 784), (n, B)
        if self.num_batches > full and start <= full:  # the last, partial mini-batch
            sel = idx[..., full * bs :].unsqueeze(0)  # (1, r) or (1, N, r)
            self._yielded = full + 1
            yield Block(self.x[sel], self.y[sel])  # (1, r, 784), (1, r)

    def skip_next(self, k: int) -> None:
        """Make the next iteration start at batch k of the current epoch's order."""
        if not 0 <= k <= self.num_batches:
            raise ValueError(f"cannot skip {k} of {self.num_batches} batches")
        self._skip = self._yielded = k

    def state_dict(self) -> dict[str, int]:
        """Where this loader is: the epoch and how many of its batches were handed out."""
        return {"epoch": self.epoch, "batches_yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields the rest of epoch `state["epoch"]`, same order."""
        self.epoch = int(state["epoch"])
        self.skip_next(int(state["batches_yielded"]))

"""Checkpoints that a kill can never leave half-written.

Lightning's own writer saves through an fsspec transaction that, on a local disk, writes into the
system temporary folder and moves the file into place: a copy, not a rename, when /tmp is another
filesystem (a tmpfs, as on many Linux machines), so a SIGKILL during it leaves a truncated
`last.ckpt`. `AtomicCheckpointIO` writes beside the target and renames (`paths.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from backprop_lab.paths import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose save is a same-folder write, fsync and rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))

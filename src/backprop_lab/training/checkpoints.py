"""Checkpoints: written so that a kill never leaves half a file, read with one-line errors.

Lightning's own writer saves through an fsspec transaction that, on a local disk, writes into the
system temporary folder and moves the file into place: a copy, not a rename, when /tmp is another
filesystem (a tmpfs, as on many Linux machines), so a SIGKILL during it leaves a truncated
`last.ckpt`. `AtomicCheckpointIO` writes beside the target and renames (`paths.atomic_write`).

A checkpoint holds only primitive hyperparameters, so `load_checkpoint` rebuilds the LitMLP
without any config, into either network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from backprop_lab.errors import ConfigError, one_line
from backprop_lab.paths import atomic_write
from backprop_lab.training.module import LitMLP

FROM_TRAIN = "pass a .ckpt file written by train.py"


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose save is a same-folder write, fsync and rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))


def load_checkpoint(
    path: str | Path, model: str | None = None, map_location: str = "cpu", member: int | None = None
) -> LitMLP:
    """The LitMLP stored in `path`; `model=manual|reference` loads the weights into the other network;
    `member=k` takes member k of a population checkpoint out as a network of its own.

    Every way a file can be wrong (missing, not a checkpoint, another project's, another
    network's) is a ConfigError with a one-line message.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise ConfigError(f"checkpoint {path} {what} (give a run's checkpoints/last.ckpt or one of its best-*.ckpt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load fails in many ways on foreign bytes (UnpicklingError, KeyError, ...)
        raise ConfigError(f"{path} is not a readable checkpoint ({type(e).__name__}; {FROM_TRAIN})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ConfigError(f"{path} is not a backprop_lab checkpoint ({FROM_TRAIN})")
    hp = dict(ckpt["hyper_parameters"])
    if model is not None:
        hp["model"] = model
    if member is not None:
        return _member(path, ckpt, hp, member)
    try:
        module = LitMLP(**hp)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path} was not written by this project's LitMLP ({one_line(e)}; {FROM_TRAIN})") from None
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ConfigError(f"{path} does not match the network {hp.get('sizes')} ({one_line(e)})") from None
    module.on_load_checkpoint(ckpt)  # a population's retired members
    return module


def _member(path: Path, ckpt: dict, hp: dict, k: int) -> LitMLP:
    N = hp.get("population", 1)
    if N == 1:
        raise ConfigError(f"member={k} needs a population checkpoint ({path} holds a single network; drop member=)")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < N:
        raise ConfigError(f"member={k} is not a member of the population of {N} in {path} (use 0..{N - 1} or ensemble)")
    module = LitMLP(**{**hp, "population": 1})
    net = {name.removeprefix("net."): w[k] for name, w in ckpt["state_dict"].items() if name.startswith("net.")}
    module.net.load_state_dict(net)
    return module


def check_resume(path: str | Path, module: LitMLP) -> None:
    """Before resuming: the checkpoint must hold the network the config builds."""
    stored = load_checkpoint(path).hparams
    mine = module.hparams
    for key in ("sizes", "activation", "output", "cost", "population"):
        theirs, ours = stored.get(key, 1), mine.get(key, 1)  # checkpoints before populations held one network
        theirs, ours = (list(theirs), list(ours)) if key == "sizes" else (theirs, ours)
        if theirs != ours:
            raise ConfigError(
                f"{path} holds a {key}={stored[key]} network but the config gives {key}={mine[key]} "
                "(resume with the overrides the run was started with)"
            )


def run_config(ckpt_path: str | Path) -> DictConfig | None:
    """The composed config of the run that wrote this checkpoint, when it sits in its run folder."""
    cfg_file = Path(ckpt_path).expanduser().resolve().parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(cfg_file) if cfg_file.is_file() else None


def run_classes(ckpt_path: str | Path) -> list[str] | None:
    """Fashion-MNIST's class names when the checkpoint's run config says it trained on it, else None."""
    try:
        fashion = str(run_config(ckpt_path).data.get("_target_")).endswith("FashionMNISTDataModule")
    except Exception:
        return None
    if not fashion:
        return None
    from torchvision.datasets import FashionMNIST

    return list(FashionMNIST.classes)

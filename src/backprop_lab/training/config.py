"""The composed config: `compose` (as train.py composes it) and the checks run before any data is
touched or any file is written.

Every problem becomes a `ConfigError` whose message reads `<what is wrong> (<how to fix it>)`,
so the entry point can print it as one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from backprop_lab.core import activations, costs
from backprop_lab.core.models import INITS, MODELS
from backprop_lab.errors import ConfigError
from backprop_lab.paths import CONF_DIR


def compose(
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    config_name: str = "train",
    hydra_node: bool = False,
) -> DictConfig:
    """conf/<config_name>.yaml with these overrides, as `python train.py` composes it, writing into
    `output_dir` (Hydra sets the run folder only when it runs the job itself). `hydra_node` keeps the
    `hydra` node (e.g. to read an experiment's `hydra.sweeper.params`)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=hydra_node)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def _choice(value: Any, choices: Any, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value} is not an option ({key}= one of: {', '.join(choices)})")


def _positive_number(value: Any, key: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value} is not a number (set {key} to a positive number, e.g. {key}=0.1)") from None
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(f"{key}={value} must be positive and finite (e.g. {key}=0.1)")
    return x


def hidden_sizes(value: Any) -> list[int]:
    """model.hidden as a list of ints: [] means no hidden layer."""
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else [value]
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in items):
        raise ConfigError(f"model.hidden={items} must list positive layer sizes (e.g. model.hidden=[15] or [100,30])")
    return [int(n) for n in items]


def check(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that cannot work."""
    _choice(cfg.model.kind, MODELS, "model")
    hidden_sizes(cfg.model.hidden)
    _choice(cfg.activation, activations.HIDDEN, "activation")
    _choice(cfg.model.output, activations.OUTPUTS, "model.output")
    _choice(cfg.model.init, INITS, "model.init")
    _choice(cfg.loss, costs.COSTS, "loss")
    try:
        costs.check(cfg.loss, cfg.model.output)
    except ValueError as e:
        raise ConfigError(str(e)) from None

    opt = cfg.optimizer
    _positive_number(opt.lr, "optimizer.lr")
    if "momentum" in opt and not (0 <= float(opt.momentum) < 1):
        raise ConfigError(f"optimizer.momentum={opt.momentum} must be in [0, 1) (e.g. optimizer.momentum=0.9)")
    if float(opt.get("weight_decay", 0) or 0) < 0:
        raise ConfigError(f"optimizer.weight_decay={opt.weight_decay} must be >= 0 (0 turns L2 off)")

    bs = cfg.data.batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ConfigError(f"data.batch_size={bs} must be a whole number >= 1 (e.g. data.batch_size=10)")
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 0):
        raise ConfigError(f"trainer.max_epochs={epochs} must be a whole number >= 0 (e.g. trainer.max_epochs=10)")
    clip = cfg.trainer.get("gradient_clip_val")
    if clip is not None and clip != 0:
        _positive_number(clip, "trainer.gradient_clip_val")
    for key, group in (("logger", "logger=tensorboard|csv|mlflow|many"), ("callbacks", "callbacks=delta_norms")):
        if key in cfg.trainer:
            raise ConfigError(f"trainer.{key} is not read (choose them with the {key}= group: {group})")
    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU "
            "(use trainer=cpu, or trainer.accelerator=auto to take a GPU when there is one)"
        )
    if cfg.seed is not None and not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed} must be a whole number (e.g. seed=42)")
    population = cfg.get("population", 1)
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ConfigError(f"population={population} must be a whole number >= 1 (e.g. population=10)")
    if population > 1 and cfg.seed is None:
        raise ConfigError("population>1 needs a seed: member k starts from seed + k (e.g. seed=42)")
    scheduler = cfg.get("scheduler") or {}
    if population > 1 and str(scheduler.get("_target_", "")).endswith("ReduceLROnPlateau"):
        raise ConfigError(
            "scheduler=plateau follows one val/loss, so with population>1 it would tie the members' learning "
            "rates together (use scheduler=step or scheduler=cosine, or population=1)"
        )


def check_batch_size(batch_size: int, n_train: int) -> None:
    """Once the data is known: a batch larger than the training split is a mistake, not a tiny epoch."""
    if batch_size > n_train:
        raise ConfigError(
            f"data.batch_size={batch_size} is larger than the training split ({n_train} examples) "
            f"(use data.batch_size<={n_train})"
        )

"""The composed config: `compose` (as train.py composes it) and the checks run before any data is
touched or any file is written.

Every problem becomes a `ConfigError` whose message reads `<what is wrong> (<how to fix it>)`,
so the entry point can print it as one line.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra.utils
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


def _whole(value: Any, key: str, minimum: int, example: str, maximum: int | None = None, none: bool = False) -> None:
    """value must be an int in [minimum, maximum] (or null when `none`)."""
    if value is None and none:
        return
    bad = isinstance(value, bool) or not isinstance(value, int) or value < minimum
    if bad or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        allowed = " or null" if none else ""
        raise ConfigError(f"{key}={value} must be a whole number {bound}{allowed} (e.g. {key}={example})")


def _flag(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value} must be true or false")


def _arguments(target: type) -> list[str] | None:
    """The keyword arguments `target(...)` takes, following **kwargs up its classes; None if it takes any."""
    names: list[str] = []
    for klass in target.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _known_keys(node: Any, key: str, ignore: Sequence[str] = ()) -> None:
    """Every key of a `_target_` node is an argument of its class (else building it fails mid-run)."""
    try:
        target = hydra.utils.get_class(str(node["_target_"]))
    except Exception:  # not a class: Hydra's own error says so when it is built
        return
    allowed = _arguments(target)
    if allowed is None:
        return
    for name in node:
        if not str(name).startswith("_") and name not in allowed and name not in ignore:
            options = ", ".join(a for a in allowed if a not in ("params", "optimizer"))
            raise ConfigError(f"{key}.{name} is not an argument of {target.__name__} ({key}.* are: {options})")


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

    from backprop_lab.training.module import SCHEDULER_KEYS  # Lightning's keys beside the scheduler's own

    for key, ignore in (("optimizer", ()), ("scheduler", SCHEDULER_KEYS), ("data", ())):
        node = cfg.get(key)
        if node and "_target_" in node:
            _known_keys(node, key, ignore)
    opt = cfg.optimizer
    _positive_number(opt.lr, "optimizer.lr")
    if "momentum" in opt and not (0 <= float(opt.momentum) < 1):
        raise ConfigError(f"optimizer.momentum={opt.momentum} must be in [0, 1) (e.g. optimizer.momentum=0.9)")
    decay = opt.get("weight_decay") or 0
    if decay != 0 and not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay > 0):
        raise ConfigError(f"optimizer.weight_decay={decay} must be a number >= 0 (0 turns L2 off, e.g. 0.0001)")

    data = cfg.data
    for key, example in (("train_size", "1000"), ("val_size", "500"), ("test_size", "500")):
        if key in data:
            _whole(data[key], f"data.{key}", 0, example, none=True)
    if "batches_per_block" in data:
        _whole(data.batches_per_block, "data.batches_per_block", 1, "100", none=True)
    if "split_seed" in data:
        _whole(data.split_seed, "data.split_seed", 0, "42", 2**32 - 1)
    if "drop_last" in data:
        _flag(data.drop_last, "data.drop_last")

    _whole(cfg.data.batch_size, "data.batch_size", 1, "10")
    _whole(cfg.trainer.get("max_epochs"), "trainer.max_epochs", 0, "10", none=True)
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
    _whole(cfg.seed, "seed", 0, "42", 2**32 - 1, none=True)
    _flag(cfg.get("test", True), "test")
    for key, example in (("grad_every_n_steps", "50"), ("histogram_every_n_steps", "2000")):
        _whole(cfg.log.get(key, 0), f"log.{key}", 0, example)
    _whole(cfg.log.get("pictures_every_n_epochs", 0), "log.pictures_every_n_epochs", 0, "1")
    _whole(cfg.get("cpu_threads"), "cpu_threads", 1, "1", none=True)
    metric = cfg.get("optimized_metric", "val/acc_best")
    if not str(metric).startswith(("val/", "test/", "train/", "ensemble/")):
        raise ConfigError(
            f"optimized_metric={metric} is not a metric a run reports (e.g. val/acc_best, test/acc or val/loss)"
        )
    factor = cfg.get("divergence_factor")
    if factor is not None and not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 1):
        raise ConfigError(
            f"divergence_factor={factor} must be a number > 1: how many times its first value the loss may grow "
            "(e.g. divergence_factor=100; null: stop on NaN or inf only)"
        )
    population = cfg.get("population", 1)
    _whole(population, "population", 1, "10")
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
    if n_train == 0:
        raise ConfigError("the training split is empty (set data.train_size to at least data.batch_size, or null)")
    if batch_size > n_train:
        raise ConfigError(
            f"data.batch_size={batch_size} is larger than the training split ({n_train} examples) "
            f"(use data.batch_size<={n_train})"
        )

"""evaluate(cfg) -> metrics: a checkpoint on a test split, with clear errors for wrong files.

By default the data config is the one the checkpoint's run was trained with (read from the run
folder's .hydra/config.yaml), so the test accuracy training reported is reproduced exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from backprop_lab.errors import ConfigError, one_line
from backprop_lab.lit_module import LitMLP

log = logging.getLogger("backprop_lab")


def load_checkpoint(path: str | Path, model: str | None = None, map_location: str = "cpu") -> LitMLP:
    """The LitMLP stored in `path`; `model=manual|reference` loads the weights into the other network."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist (pass ckpt_path=<run>/checkpoints/last.ckpt or a best-*.ckpt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load fails in many ways on foreign bytes (UnpicklingError, KeyError, IndexError, ...)
        raise ConfigError(f"{path} is not a readable checkpoint ({type(e).__name__}; pass a .ckpt file written by train.py)") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ConfigError(f"{path} is not a backprop_lab checkpoint (pass a .ckpt file written by train.py)")
    hp = dict(ckpt["hyper_parameters"])
    if model is not None:
        hp["model"] = model
    try:
        module = LitMLP(**hp)
    except TypeError as e:
        raise ConfigError(f"{path} was not written by this project's LitMLP ({e})") from None
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ConfigError(f"{path} does not match the network {hp.get('sizes')} ({one_line(e)})") from None
    return module


def run_config(ckpt_path: str | Path) -> DictConfig | None:
    """The composed config of the run that wrote this checkpoint, when it sits in its run folder."""
    cfg_file = Path(ckpt_path).expanduser().resolve().parent.parent / ".hydra" / "config.yaml"
    return OmegaConf.load(cfg_file) if cfg_file.is_file() else None


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("no checkpoint given (scripts/evaluate.py ckpt_path=outputs/runs/<stamp>/checkpoints/last.ckpt)")
    module = load_checkpoint(cfg.ckpt_path, cfg.get("model"))
    data_cfg = cfg.get("data")
    if data_cfg is None:
        trained = run_config(cfg.ckpt_path)
        if trained is None:
            raise ConfigError(f"no run config next to {cfg.ckpt_path} to tell which data it used (add data=mnist, data=fashion_mnist or data=mnist_subset)")
        data_cfg = trained.data  # its interpolations (seed, paths) resolve against the trained run's config
    datamodule = hydra.utils.instantiate(data_cfg)
    sizes = module.hparams.sizes
    trainer = L.Trainer(accelerator=cfg.get("accelerator", "auto"), devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    datamodule.prepare_data()
    datamodule.setup("test")
    if datamodule.n_features != sizes[0] or datamodule.n_classes != sizes[-1]:
        raise ConfigError(f"the checkpoint expects {sizes[0]} inputs and {sizes[-1]} classes, the data has {datamodule.n_features} and {datamodule.n_classes}")
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    metrics = {"test/acc": round(results["test/acc"], 6), "test/loss": round(results["test/loss"], 6), "data_source": datamodule.source, "ckpt_path": str(cfg.ckpt_path)}
    log.info("evaluate: %s", metrics)
    return metrics


def check_resume(path: str | Path, module: LitMLP) -> None:
    """Before resuming: the checkpoint must hold the network the config builds."""
    stored = load_checkpoint(path).hparams
    mine = module.hparams
    for key in ("sizes", "activation", "output", "cost"):
        theirs, ours = (list(stored[key]), list(mine[key])) if key == "sizes" else (stored[key], mine[key])
        if theirs != ours:
            raise ConfigError(
                f"{path} holds a {key}={stored[key]} network but the config gives {key}={mine[key]} "
                "(resume with the overrides the run was started with)"
            )

"""evaluate(cfg) -> metrics: a checkpoint on a test split, with clear errors for wrong files.

By default the data config is the one the checkpoint's run was trained with (read from the run
folder's .hydra/config.yaml), so the test accuracy training reported is reproduced exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra.utils
import lightning as L
from omegaconf import DictConfig, OmegaConf

from backprop_lab.errors import ConfigError
from backprop_lab.training.checkpoints import load_checkpoint, run_config
from backprop_lab.training.members import report

log = logging.getLogger("backprop_lab")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError(
            "no checkpoint given (scripts/evaluate.py ckpt_path=outputs/runs/<stamp>/checkpoints/last.ckpt)"
        )
    member = cfg.get("member")
    if member is not None and member != "ensemble" and not isinstance(member, int):
        raise ConfigError(f"member={member} must be a member's index or ensemble (e.g. member=0)")
    module = load_checkpoint(cfg.ckpt_path, cfg.get("model"), member=None if member == "ensemble" else member)
    if member == "ensemble" and module.members == 1:
        raise ConfigError(f"member=ensemble needs a population checkpoint ({cfg.ckpt_path} holds a single network)")
    data_cfg = cfg.get("data")
    if data_cfg is None:
        trained = run_config(cfg.ckpt_path)
        if trained is None:
            raise ConfigError(
                f"no run config next to {cfg.ckpt_path} to tell which data it used "
                "(add data=mnist, data=fashion_mnist or data=mnist_subset)"
            )
        data_cfg = trained.data  # its interpolations (seed, paths) resolve against the trained run's config
    datamodule = hydra.utils.instantiate(data_cfg)
    sizes = module.hparams.sizes
    trainer = L.Trainer(
        accelerator=cfg.get("accelerator", "auto"),
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    datamodule.prepare_data()
    datamodule.setup("test")
    if datamodule.n_features != sizes[0] or datamodule.n_classes != sizes[-1]:
        raise ConfigError(
            f"the checkpoint expects {sizes[0]} inputs and {sizes[-1]} classes, "
            f"the data has {datamodule.n_features} and {datamodule.n_classes}"
        )
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    metrics = {
        "test/acc": round(results["test/acc"], 6),
        "test/loss": round(results["test/loss"], 6),
        "data_source": datamodule.source,
        "ckpt_path": str(cfg.ckpt_path),
    }
    if module.members > 1:  # the means over completed members, their intervals, each member, the ensemble
        metrics.update(report(module.member_values, module.hparams.seed, module.diverged_at))
        metrics["ensemble/test_acc"] = round(results["ensemble/test_acc"], 6)
        if member == "ensemble":  # the members' probabilities averaged: the population as one classifier
            metrics["test/acc"] = metrics["ensemble/test_acc"]
    log.info("evaluate: %s", metrics)
    return metrics

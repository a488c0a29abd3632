"""train(cfg) -> metrics: the one function behind train.py, sweeps and the tests.

Only this module reads the Hydra config; everything it builds takes plain arguments.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra.utils
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from backprop_lab import provenance
from backprop_lab.errors import ConfigError, Interrupted, TrainingStopped
from backprop_lab.inspection.tensorboard import LayerGradients, MemberCurves, Pictures
from backprop_lab.paths import remove_partial_writes, write_metrics
from backprop_lab.training import config, members, search
from backprop_lab.training import loggers as run_log
from backprop_lab.training.callbacks import DivergenceGuard, EpochHistory, GracefulInterrupt
from backprop_lab.training.checkpoints import AtomicCheckpointIO, check_resume, load_checkpoint
from backprop_lab.training.cli import is_multirun
from backprop_lab.training.module import LitMLP

log = logging.getLogger("backprop_lab")
CLIP_KEYS = ("gradient_clip_val", "gradient_clip_algorithm")


def build_module(cfg: DictConfig, n_features: int = 784, n_classes: int = 10) -> LitMLP:
    """The LightningModule from the config's primitive values."""
    return LitMLP(
        sizes=[n_features, *config.hidden_sizes(cfg.model.hidden), n_classes],
        model=cfg.model.kind,
        activation=cfg.activation,
        output=cfg.model.output,
        cost=cfg.loss,
        init=cfg.model.init,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else None,
        clip_val=cfg.trainer.get("gradient_clip_val") or None,
        clip_algorithm=cfg.trainer.get("gradient_clip_algorithm") or "norm",
        population=cfg.population,
        seed=cfg.seed,
    )


def resume_path(ckpt_path: str | None, out: Path) -> str | None:
    """`ckpt_path=last` resumes this run folder's last.ckpt when there is one (a requeued cluster job),
    else starts afresh."""
    if ckpt_path == "last":
        last = out / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return ckpt_path


def build_trainer(cfg: DictConfig, out: Path) -> tuple[L.Trainer, ModelCheckpoint, EpochHistory, GracefulInterrupt]:
    quiet = is_multirun()
    checkpoint = ModelCheckpoint(  # the best epoch by validation accuracy, used for the test
        dirpath=out / "checkpoints",
        filename="best-epoch{epoch:03d}",
        auto_insert_metric_name=False,
        monitor="val/acc",
        mode="max",
        enable_version_counter=False,
    )
    last = ModelCheckpoint(  # every epoch; save_last=True alone rewrites it only when the best changes
        dirpath=out / "checkpoints",
        filename="last",
        enable_version_counter=False,  # one last.ckpt per run, also after resuming from an interrupt
    )
    history = EpochHistory(echo=not quiet)
    last_path = str(out / "checkpoints" / "last.ckpt")
    interrupt = GracefulInterrupt(last_path)
    callbacks: list[L.Callback] = [
        DivergenceGuard(last_path, cfg.log.grad_every_n_steps, cfg.divergence_factor),  # first: never save NaN weights
        checkpoint,
        last,
        history,
        interrupt,
        LayerGradients(cfg.log.grad_every_n_steps, cfg.log.histogram_every_n_steps),
        Pictures(cfg.log.pictures_every_n_epochs),
    ]
    if cfg.population > 1:
        callbacks.append(MemberCurves(str(out), [cfg.seed + k for k in range(cfg.population)]))
    # a search's trial: report each epoch, stop when pruned
    callbacks.extend(search.callbacks(cfg.get("search"), cfg.optimized_metric))
    callbacks.extend(run_log.instantiate_group("callbacks", cfg.get("callbacks")))
    loggers = run_log.instantiate_group("logger", cfg.get("logger"))
    trainer_kwargs: dict[str, Any] = {
        "default_root_dir": str(out),
        "logger": loggers or False,
        "callbacks": callbacks,
        "plugins": [AtomicCheckpointIO()],
    }
    if quiet:
        trainer_kwargs.update(enable_progress_bar=False, enable_model_summary=False)
    elif cfg.trainer.get("enable_progress_bar", True):
        if sys.stderr.isatty():  # a bar redrawn at every step costs more than a small MLP's step
            callbacks.append(TQDMProgressBar(refresh_rate=cfg.log.progress_every_n_steps))
        else:  # logs and pipes get the one-line epoch summaries only
            trainer_kwargs["enable_progress_bar"] = False
    # Clipping is the module's job under manual optimization (build_module passes it on).
    trainer_cfg = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in CLIP_KEYS}
    try:
        trainer = hydra.utils.instantiate(trainer_cfg, **trainer_kwargs)
    except InstantiationException as e:  # Lightning's own checks: devices, strategy, precision, unknown keys
        raise ConfigError(
            f"the trainer cannot be built: {e.__cause__ or e} (check the trainer.* overrides: "
            "accelerator, devices, strategy, precision)"
        ) from e  # BACKPROP_LAB_VERBOSE=1 shows e
    return trainer, checkpoint, history, interrupt


# What a user sets, by group, as HPARAMS shows them; internals (data/batches_per_block, data/device, ...) stay out.
HPARAMS = {
    "model": ("kind", "hidden", "output", "init"),
    "data": ("batch_size", "train_size", "val_size", "test_size", "limit_train"),
    "trainer": ("max_epochs", "precision", "gradient_clip_val"),
}


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The user-facing hyperparameters, flattened to `group/key` for TensorBoard's HPARAMS tab and the
    other loggers: the model's shape, the optimizer and scheduler (class and values), the data's name,
    batch size and sizes, the cost, activation, seed, population and epochs."""
    c = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {k: c.get(k) for k in ("activation", "loss", "seed", "population")}
    for group, keys in HPARAMS.items():
        flat.update({f"{group}/{k}": c[group][k] for k in keys if k in (c.get(group) or {})})
    flat["data/name"] = str(c["data"]["_target_"]).rsplit(".", 1)[-1].removesuffix("DataModule")
    for group in ("optimizer", "scheduler"):
        node = c.get(group) or {}
        flat[f"{group}/name"] = str(node.get("_target_", "none")).rsplit(".", 1)[-1]
        flat.update({f"{group}/{k}": v for k, v in node.items() if not k.startswith("_") and k != "interval"})
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items() if v is not None}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test with the best checkpoint, write metrics.json into the run folder, return the metrics."""
    config.check(cfg)
    out = Path(cfg.paths.output_dir)
    for stale in remove_partial_writes(out / "checkpoints"):
        log.warning("removed %s, left by a process killed while saving a checkpoint", stale)
    ckpt_path = resume_path(cfg.get("ckpt_path"), out)
    if ckpt_path:
        load_checkpoint(ckpt_path)  # a missing or foreign file fails before any data is read
    elif (out / "checkpoints" / "last.ckpt").is_file():  # a new run here would replace that run's files
        raise ConfigError(
            f"{out} already holds a run (checkpoints/last.ckpt): resume it with ckpt_path=last, "
            "or start a new run in another folder"
        )
    if cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    config.check_batch_size(cfg.data.batch_size, datamodule.sizes["train"])
    module = build_module(cfg, datamodule.n_features, datamodule.n_classes)
    if ckpt_path:
        check_resume(ckpt_path, module)
    trainer, checkpoint, history, interrupt = build_trainer(cfg, out)

    metrics: dict[str, Any] = {"status": "running", "data_source": datamodule.source, "data_sizes": datamodule.sizes}
    metrics["provenance"] = provenance.collect(datamodule.source, datamodule.files, trainer.strategy.root_device)
    with run_log.recorded(trainer, hparams(cfg), metrics):  # in HPARAMS with its final values, whatever its end
        t0 = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except (TrainingStopped, SIGTERMException) as e:
            stop = e if isinstance(e, TrainingStopped) else _interrupted(interrupt)
            metrics.update(status=stop.status, error=str(stop), stopped_at_step=stop.step, epochs=trainer.current_epoch)
            metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
            metrics["history"] = history.history
            metrics.update(members.report(module.member_values, cfg.seed, module.diverged_at))
            reached = [m["val/acc_best"] for m in metrics["members"] if m.get("val/acc_best") is not None]
            if metrics.get("val/acc_best") is None and reached:  # none completed: the best they reached, for sweeps
                metrics["val/acc_best"] = round(sum(reached) / len(reached), 6)
            if trainer.is_global_zero:
                write_metrics(out, metrics)
            raise stop from None
        metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
        metrics["epochs"] = trainer.current_epoch
        metrics.update(_scalars(trainer, ("val/acc", "val/loss")))
        metrics["history"] = copy.deepcopy(history.history)  # testing the best checkpoint restores its older copy
        if cfg.get("test", True):
            best = checkpoint.best_model_path or None
            if cfg.population > 1:  # each member at its own best epoch, as a run of it alone would test it
                module.use_best_weights()
                trainer.test(module, datamodule=datamodule, verbose=False)
            else:
                trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
            metrics["best_ckpt"] = best
            metrics.update(_scalars(trainer, ("ensemble/test_acc",)))
        metrics.update(members.report(module.member_values, cfg.seed, module.diverged_at))
        if metrics["status"] == "running":
            metrics["status"] = "completed"
        if trainer.is_global_zero:
            write_metrics(out, metrics)
    if trainer.is_global_zero:
        log.info("metrics: %s", json.dumps({k: v for k, v in metrics.items() if k not in ("data_sizes", "history")}))
    return metrics


def _interrupted(interrupt: GracefulInterrupt) -> Interrupted:
    """The one-line message after Ctrl-C or SIGTERM: where the checkpoint is and how to resume."""
    overrides = []
    if HydraConfig.initialized():
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
    program = Path(sys.argv[0]).name
    program = "python train.py" if program in ("train.py", "") else program  # or the console script
    command = " ".join([program, *overrides, f"ckpt_path={interrupt.ckpt_path}"])
    if any(o.lstrip("+").startswith("search.") for o in overrides):  # a trial: its search runs it again
        command = "the same -m hparams_search=optuna command, which runs this trial again"
    step = interrupt.saved_step if interrupt.saved_step is not None else -1
    return Interrupted(
        f"interrupted by {interrupt.signal_name} at step {step}: saved {interrupt.ckpt_path} (resume with: {command})",
        step,
        interrupt.signal_name or "SIGTERM",
    )


def _scalars(trainer: L.Trainer, keys: tuple[str, ...]) -> dict[str, float]:
    m = trainer.callback_metrics
    return {k: round(float(m[k]), 6) for k in keys if k in m}

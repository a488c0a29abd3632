"""A job's side of an Optuna search (`python train.py -m hparams_search=optuna`): it reports its metric to its
trial after every validation, and stops with `Pruned` when the study's pruner says the trial is not worth
finishing. The sweeper (src/hydra_plugins/backprop_lab_optuna_sweeper) gives each job `search.storage`,
`search.study` and `search.trial`; a run without them has nothing to report to.

Also what the entry point returns to any sweeper: `objective`, always a float.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from backprop_lab.errors import ConfigError, Pruned

log = logging.getLogger("backprop_lab")


def objective(metrics: dict[str, Any], metric: str, output_dir: str | Path) -> float:
    """The value of `metric` (the config's optimized_metric), as a float for a sweeper: from the run's metrics,
    or, for a run that stopped early (diverged, pruned), from the metrics.json it wrote into output_dir; NaN when
    there is none (a failed run, whose metrics.json may hold an earlier run's values)."""
    value = metrics.get(metric)
    if value is None:
        try:
            written = json.loads((Path(output_dir) / "metrics.json").read_text())
            if not str(written.get("status", "failed")).startswith("failed"):
                value = written.get(metric)
        except (OSError, ValueError, AttributeError):
            pass
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number else math.nan


def callbacks(search: Mapping[str, Any] | None, metric: str) -> list[L.Callback]:
    """[ReportToTrial] for a job of a search (the config's `search` node: storage, study, trial), else []."""
    if not search:
        return []
    missing = [k for k in ("storage", "study", "trial") if search.get(k) is None]
    if missing:
        raise ConfigError(
            f"search.{missing[0]} is not set: the search.* keys come from hparams_search=optuna's sweeper "
            "(python train.py -m hparams_search=optuna); drop them to train without a search"
        )
    return [ReportToTrial(str(search["storage"]), str(search["study"]), int(search["trial"]), metric)]


class ReportToTrial(L.Callback):
    """After each validation, `trial.report(value of metric, epoch)`, then `Pruned` if `trial.should_prune()`.

    The trial is the study's own (optuna.trial.Trial on the study's storage), and the pruner is the one the
    sweeper stored with the study, so the decision is the one Optuna would make inside `study.optimize`.
    """

    def __init__(self, storage: str, study: str, trial: int, metric: str) -> None:
        self.storage, self.study_name, self.number, self.metric = storage, study, trial, metric
        self.trial: Any = None
        self.reported: set[int] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero and self.trial is None:
            self.trial = load_trial(self.storage, self.study_name, self.number)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        prune = False
        value = trainer.callback_metrics.get(self.metric)
        if trainer.is_global_zero and self.trial is not None and value is not None and epoch not in self.reported:
            self.reported.add(epoch)  # one value per epoch (validation may run more often)
            from optuna.exceptions import UpdateFinishedTrialError

            try:
                self.trial.report(round(float(value), 6), epoch)  # as metrics.json rounds it
                prune = self.trial.should_prune()
            except UpdateFinishedTrialError:  # the search was stopped, which ended the trial: train on, unreported
                log.warning("trial %d was ended by its search; this run goes on without reporting", self.number)
                self.trial = None
        if trainer.strategy.broadcast(prune):
            shown = f"{float(value):.4f}" if value is not None else "?"
            raise Pruned(
                f"trial {self.number} pruned after epoch {epoch}: {self.metric}={shown} is not "
                "promising next to the study's other trials at this epoch (the pruner is hydra.sweeper.pruner; "
                "hydra/sweeper/pruner=none keeps every trial)",
                step=trainer.global_step,
            )


def open_storage(url: str, create: bool = True) -> Any:
    """A study's database (optuna.storages.RDBStorage), for the sweeper and its jobs alike; SQLite waits for a
    lock held by a parallel job instead of failing at once."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=not create)


def load_trial(storage_url: str, study_name: str, number: int) -> Any:
    """Trial `number` of the study, with the pruner the sweeper stored in it; None (with a warning) for a trial
    that has already finished (a job run again by hand), so that the run trains without reporting."""
    import optuna
    from hydra.utils import instantiate

    try:
        storage = open_storage(storage_url, create=False)
        study_id = storage.get_study_id_from_name(study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    except Exception as e:  # no such database, study or trial
        raise ConfigError(
            f"search.trial={number}: no such trial of study {study_name} in {storage_url} "
            f"({' '.join(str(e).split())}); "
            "the search.* keys come from hparams_search=optuna's sweeper: drop them to train without a search"
        ) from e
    state = storage.get_trial(trial_id).state
    if state.is_finished():
        log.warning(
            "trial %d of study %s has finished (%s): this run does not report to it", number, study_name, state.name
        )
        return None
    pruner_cfg = storage.get_study_user_attrs(study_id).get("pruner")
    pruner = instantiate(pruner_cfg) if pruner_cfg else optuna.pruners.NopPruner()
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler(), pruner=pruner
    )
    return optuna.trial.Trial(study, trial_id)

"""The sweeper's configuration, registered with Hydra's ConfigStore as hydra/sweeper=optuna, with its
samplers (hydra/sweeper/sampler=tpe|random) and pruners (hydra/sweeper/pruner=median|threshold|hyperband|none).

Sampler and pruner are plain `_target_` nodes that the sweeper builds itself (`_recursive_: false`), so that a
bad one is reported as one line naming the option to fix.
"""

# No `from __future__ import annotations` here: Hydra runs this module before it is in sys.modules, where
# dataclasses look string annotations up.
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SAMPLERS = {
    # Random trials first (n_startup_trials), then trials drawn where a model of the results expects the best.
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 5},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
}
PRUNERS = {
    # Stop a trial whose metric at an epoch is worse than the median of earlier trials at that epoch; steps are
    # epochs (1, 2, ...): none is pruned before epoch n_warmup_steps, nor before n_startup_trials trials finished.
    "median": {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 3,
        "n_warmup_steps": 2,
        "interval_steps": 1,
    },
    # Stop a trial whose metric leaves [lower, upper].
    "threshold": {"_target_": "optuna.pruners.ThresholdPruner", "lower": None, "upper": None, "n_warmup_steps": 0},
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
    "none": {"_target_": "optuna.pruners.NopPruner"},
}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.backprop_lab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds sampler and pruner, with one-line errors
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: str = "maximize"  # of the job's return value (optimized_metric): maximize | minimize
    storage: Optional[str] = None  # e.g. sqlite:///${hydra.sweep.dir}/optuna.db (required: jobs and resumes read it)
    study_name: str = "search"
    n_trials: int = 20  # trials of the study in all, those of earlier runs included
    n_jobs: int = 1  # trials asked and launched per batch (run in parallel by a parallel launcher)
    params: Optional[dict[str, Any]] = None  # key: Hydra sweep syntax, e.g. `optimizer.lr: tag(log, interval(1e-4, 1))`


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="backprop_lab_optuna_sweeper")
for name, node in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="backprop_lab_optuna_sweeper")
for name, node in PRUNERS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="backprop_lab_optuna_sweeper")

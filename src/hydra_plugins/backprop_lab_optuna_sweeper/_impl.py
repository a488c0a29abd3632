"""The search behind hydra/sweeper=optuna: an Optuna study in a storage (SQLite by default), its trials asked
in batches, launched through Hydra's launcher and told back as COMPLETE, PRUNED or FAIL.

- It resumes: the same command finds the same storage and study name, and `n_trials` counts the study's
  trials in all, so a resumed search runs only what is left. Trials that a stopped search left RUNNING are
  marked FAIL with the user attribute `interrupted`, not counted, and queued to run again with their values.
- Each job gets `++search.storage=`, `++search.study=` and `++search.trial=`: it reports its epochs to its
  trial and stops when the study's pruner says so (backprop_lab.training.search reads them).
- A job's outcome comes from its return value (the optimized metric, always a float) and the `status` in
  its metrics.json: pruned -> PRUNED; a finite value, completed or diverged -> COMPLETE; else FAIL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.types import Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, Trial, TrialState

from backprop_lab.errors import one_line, unwritable
from backprop_lab.paths import set_status, write_metrics
from backprop_lab.training.cli import hydra_message
from backprop_lab.training.search import open_storage

from ._space import SearchError, Space, flatten, search_space

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted"  # user attribute of a trial a stopped search left running: run again, not counted
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
DIRECTIONS = ("maximize", "minimize")


def quoted(text: str) -> str:
    """`text` as a value in Hydra's override syntax: in quotes where it can be, else with Hydra's escapes."""
    return f"'{text}'" if not any(c in text for c in "'\\") else Transformer.str(text)


def storage_url(storage: str | None) -> str:
    """The storage URL with an absolute SQLite path (jobs open it too), its folder created."""
    if not storage:
        raise SearchError(
            "hydra.sweeper.storage is not set: a search keeps its study in a database "
            "(e.g. hydra.sweeper.storage=sqlite:///outputs/search/NAME/optuna.db)"
        )
    prefix = "sqlite:///"
    if storage.startswith(prefix) and storage != f"{prefix}:memory:":
        path = Path(storage[len(prefix) :]).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"{prefix}{path}"
    return storage


def counted(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count towards n_trials: finished ones, except those a stopped search interrupted."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED) if not t.user_attrs.get(INTERRUPTED)]


def requeue(study: optuna.Study, storage: optuna.storages.RDBStorage, trial: Trial | FrozenTrial) -> None:
    """Mark a running trial of a stopped search FAIL (interrupted) and queue its values to run again; its job
    folder's metrics.json says `interrupted`, so that the sweep summary does not take it for a crash."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
    storage.set_trial_user_attr(trial_id, "status", "interrupted (queued to run again)")
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
    folder = Path(str(trial.user_attrs.get("job_dir", "")))
    if trial.user_attrs.get("job_dir") and folder.is_dir():
        try:
            set_status(folder, INTERRUPTED, unless_ended=True)
        except (OSError, ValueError) as e:
            log.warning("could not mark %s as interrupted: %s", folder, one_line(e))


def job_dir(result: JobReturn) -> Path | None:
    folder = OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir") if result.hydra_cfg else None
    return Path(folder) if folder else None


def outcome(result: JobReturn) -> tuple[TrialState, float | None, str]:
    """(state, value, status) of a finished job, from its return value and its metrics.json `status`."""
    if result.status != JobStatus.COMPLETED:
        try:
            result.return_value  # noqa: B018  (raises the job's exception)
            message = "no result"
        except Exception as e:
            message = one_line(e)
        return TrialState.FAIL, None, f"failed: {message}"
    status = None
    folder = job_dir(result)
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        status = " ".join(str(json.loads((folder / "metrics.json").read_text())["status"]).split())
    returned = result.return_value
    value = float(returned) if isinstance(returned, (int, float)) and not isinstance(returned, bool) else math.nan
    if status == "pruned":
        return TrialState.PRUNED, None, status
    if math.isfinite(value) and not (status or "").startswith("failed"):
        return TrialState.COMPLETE, value, status or "completed"
    if status is None or status == "completed":
        status = f"{status or 'the job'}, but returned {returned!r}: is optimized_metric among its metrics?"
    return TrialState.FAIL, None, status


@contextlib.contextmanager
def exclusive(folder: Path, url: str, study_name: str) -> Iterator[None]:
    """One search at a time per study: a second one would take the first one's running trials for trials of
    a stopped search. The lock lies beside an SQLite database (a study is its storage and its name), else in
    the sweep folder."""
    import fcntl

    sqlite = "sqlite:///"
    where = Path(url[len(sqlite) :]).parent if url.startswith(sqlite) and url != f"{sqlite}:memory:" else folder
    with open(where / f".{study_name}.search.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SearchError(
                f"another search of the study {study_name} is running ({url}): wait for it to end, or give this "
                "one its own hydra.sweeper.study_name (or hydra.sweeper.storage)"
            ) from None
        yield


class OptunaSearch(Sweeper):
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        params: Any = None,
    ) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params = flatten(OmegaConf.to_container(params) if isinstance(params, DictConfig) else params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _build(self, what: str, node: Any, **changes: Any) -> Any:
        """The sampler or pruner from its `_target_` node, or a one-line error naming the option."""
        if node is None:
            return None
        base = {"sampler": optuna.samplers.BaseSampler, "pruner": optuna.pruners.BasePruner}[what]
        settings = {**OmegaConf.to_container(node, resolve=True), **changes}
        target = settings.get("_target_")
        try:
            built = instantiate(settings)
        except Exception as e:
            raise SearchError(
                f"hydra.sweeper.{what} ({target}) cannot be built: {one_line(e.__cause__ or e)} "
                f"(pick one with hydra/sweeper/{what}=..., see conf/hparams_search/optuna.yaml)"
            ) from e
        if not isinstance(built, base):
            raise SearchError(f"hydra.sweeper.{what}._target_={target} is no Optuna {what}")
        return built

    def _open_study(self, url: str) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
        storage = open_storage(url)
        pruner = self._build("pruner", self.pruner_cfg)
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            sampler=self._build("sampler", self.sampler_cfg),
            pruner=pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise SearchError(
                f"the study {self.study_name} in {url} was created to {study.direction.name.lower()}: "
                f"hydra.sweeper.direction={self.direction} needs a new hydra.sweeper.study_name"
            )
        seed = OmegaConf.select(self.sampler_cfg, "seed") if self.sampler_cfg is not None else None
        if seed is not None and study.trials:  # a resumed study: new draws, not the first run's again
            study.sampler = self._build("sampler", self.sampler_cfg, seed=int(seed) + len(study.trials))
        # The jobs build the same pruner from here (backprop_lab.training.search).
        study.set_user_attr(
            "pruner", OmegaConf.to_container(self.pruner_cfg, resolve=True) if self.pruner_cfg else None
        )
        return study, storage

    def _check_settings(self) -> None:
        """One-line errors for settings that cannot work (raised here, not in __init__, which Hydra wraps)."""
        if self.direction not in DIRECTIONS:
            raise SearchError(f"hydra.sweeper.direction={self.direction} is not an option (one of: maximize, minimize)")
        if self.n_trials < 0 or self.n_jobs < 1:
            raise SearchError(
                f"hydra.sweeper.n_trials={self.n_trials} and n_jobs={self.n_jobs}: n_trials must be at least 0, "
                "n_jobs at least 1"
            )
        for line in self.config.hydra.overrides.hydra:
            key = line.split("=", 1)[0].lstrip("+")
            prefix = "hydra.sweeper.params."
            if key.startswith(prefix) and "." in key[len(prefix) :]:
                entry = key[len(prefix) :]
                raise SearchError(
                    f"{line}: Hydra splits this key at its dots, so it cannot name the entry {entry} of "
                    f"hydra.sweeper.params (and could replace another); change the search space with a sweep of "
                    f"the key itself instead, e.g. '{entry}=choice(a,b)' or '{entry}=tag(log, interval(lo,hi))'"
                )

    def compose(self, overrides: list[str]) -> DictConfig:
        """The config a job with these overrides gets (Hydra's own composition, as the launcher runs it)."""
        return self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=overrides)

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        self._check_settings()
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        space = search_space(lines, self.config, self.compose)
        if not space.distributions:
            raise SearchError(
                "the search space is empty: set hydra.sweeper.params (see conf/hparams_search/optuna.yaml)"
            )
        url = storage_url(self.storage)
        folder = Path(str(self.config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        returns: list[list[JobReturn]] = []
        with exclusive(folder, url, self.study_name):
            OmegaConf.save(self.config, folder / "multirun.yaml")
            study, storage = self._open_study(url)
            self._resume(study, storage, space)
            while (left := self.n_trials - len(counted(study))) > 0:
                batch = [study.ask(space.distributions) for _ in range(min(self.n_jobs, left))]
                returns.append(self._run(study, storage, batch, space, url))
            self._report(study, folder, url, space)
        return returns

    def _resume(self, study: optuna.Study, storage: optuna.storages.RDBStorage, space: Space) -> None:
        used = {}  # the distribution each key had in the study's trials
        for trial in study.get_trials(deepcopy=False):
            used.update(trial.distributions)
        for key, new in space.distributions.items():
            try:
                if key in used:
                    optuna.distributions.check_distribution_compatibility(used[key], new)
            except ValueError as e:
                raise SearchError(
                    f"the search space entry {key} is not the one the study {self.study_name} searched before "
                    f"({used[key]} -> {new}: {one_line(e)}): keep it, or start a new study with "
                    "hydra.sweeper.study_name=NEW"
                ) from e
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in stale:
            requeue(study, storage, trial)
        if stale:
            numbers = ", ".join(str(t.number) for t in stale)
            log.warning("trial(s) %s, left running by a stopped search: marked failed, queued to run again", numbers)
        done = len(counted(study))
        if done:
            log.info("resuming study %s: %d of %d trials done", self.study_name, done, self.n_trials)
        previous = study.user_attrs.get("fixed_overrides")
        fixed = sorted(space.fixed.values())
        if previous is not None and previous != fixed:
            log.warning(
                "the study %s ran with the overrides %s, this search with %s: its trials are compared as if alike",
                self.study_name,
                " ".join(previous) or "(none)",
                " ".join(fixed) or "(none)",
            )
        study.set_user_attr("fixed_overrides", fixed)

    def _run(
        self, study: optuna.Study, storage: optuna.storages.RDBStorage, batch: list[Trial], space: Space, url: str
    ) -> list[JobReturn]:
        """Launch one batch of trials and tell the study how each ended."""
        jobs, trials = [], []
        for trial in batch:
            overrides = space.overrides(trial.params) + [
                f"++search.storage={quoted(url)}",
                f"++search.study={Transformer.str(self.study_name)}",
                f"++search.trial={trial.number}",
            ]
            try:  # a value that does not compose (a missing option, a wrong type) fails its trial, not the search
                job = self.compose(overrides)
            except Exception as e:
                status = f"failed: {hydra_message(e)}"
                self._tell(study, trial, TrialState.FAIL, None, status, self._record(overrides, space, status))
                continue
            with contextlib.suppress(Exception):  # where the job will write (resolved as Hydra resolves it)
                trial.set_user_attr("job_dir", str(Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir)))
            jobs.append(overrides)
            trials.append(trial)
        if not jobs:
            return []
        try:
            results = list(self.launcher.launch(jobs, initial_job_idx=trials[0].number))
        except OSError as e:  # a job folder that cannot be written: these trials failed (counted), the search stops
            for trial in trials:
                self._tell(study, trial, TrialState.FAIL, None, f"failed: {unwritable(e) or one_line(e)}", None)
            raise
        except BaseException:  # Ctrl-C, SIGTERM: the next run of the same command runs these again
            for trial in trials:
                requeue(study, storage, trial)
            raise
        for trial, result in zip(trials, results):
            self._tell(study, trial, *outcome(result), job_dir(result))
        return results

    def _record(self, overrides: list[str], space: Space, status: str) -> Path | None:
        """A job folder for a trial that never ran (its values do not compose), holding its overrides and its
        status, so that the sweep summary lists it; None if even its folder's name cannot be composed."""
        try:
            job = self.compose([*space.fixed.values(), *(o for o in overrides if o.startswith("++search."))])
            folder = Path(job.hydra.sweep.dir) / str(job.hydra.sweep.subdir)
            (folder / ".hydra").mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
            write_metrics(folder, {"status": status})
            return folder
        except Exception as e:
            log.warning("no job folder for a trial that did not compose: %s", one_line(e))
            return None

    def _tell(
        self, study: optuna.Study, trial: Trial, state: TrialState, value: float | None, status: str, job: Path | None
    ) -> None:
        trial.set_user_attr("status", status)
        if job is not None:
            trial.set_user_attr("job_dir", str(job))
        study.tell(trial, value, state=state)
        shown = f" {value:.6g}" if value is not None else ""
        params = " ".join(f"{k}={v}" for k, v in trial.params.items())
        log.info("trial %d %s%s: %s (%s)", trial.number, state.name, shown, status, params)

    def _report(self, study: optuna.Study, folder: Path, url: str, space: Space) -> None:
        """The study's state in the log, and its best trial in optimization_results.yaml."""
        trials = counted(study)
        states = Counter(t.state.name.lower() for t in trials)
        log.info(
            "study %s in %s: %d trials (%s)",
            self.study_name,
            url,
            len(trials),
            ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none",
        )
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            return
        best = study.best_trial
        result = {
            "study_name": self.study_name,
            "storage": url,
            "direction": self.direction,
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in best.params.items()},
            "best_overrides": [o for o in space.overrides(best.params) if not o.startswith("hparams_search=")],
            "best_job_dir": best.user_attrs.get("job_dir"),
        }
        OmegaConf.save(OmegaConf.create(result), folder / "optimization_results.yaml")
        log.info("best: trial %d, value %.6g: %s", best.number, best.value, " ".join(result["best_overrides"]))

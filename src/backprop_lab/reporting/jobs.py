"""A Hydra multirun read back: its job folders, each job's overrides, status, members and history,
and the jobs grouped into configurations (jobs that differ only in `seed`; a population job adds each
completed member as a seed of its own), with mean, std and the 95% interval per group.

A sweep dir holds one folder per job (named by its overrides, possibly nested when a value
contains `/`), each with `.hydra/overrides.yaml` and, if the job got far enough, `metrics.json`.
Every function here tolerates broken jobs: a crash, a failed run or unreadable JSON becomes a
status line instead of an exception, so one bad job never hides the others.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COMPLETED = "completed"
NO_METRICS = "no metrics.json (crashed?)"
SEED = "seed"
SEARCH = "search."  # an Optuna trial's link to its study (search.storage, .study, .trial): no hyperparameter
METRICS = ("test/acc", "val/acc_best", "test/loss")  # summarised per group: mean, std, ci95
# One row per job (collect()); the summary's rows are groups, with the columns of summary_columns().
JOB_COLUMNS = (
    "job",
    "overrides",
    "status",
    "population",
    "test/acc",
    "val/acc_best",
    "epochs",
    "train_seconds",
    "data_source",
)


def _stat_columns() -> tuple[str, ...]:
    cols: list[str] = []
    for metric in METRICS:
        name = metric.replace("/", "_")
        cols += [f"{name}_mean", f"{name}_std", f"{name}_ci95"]
        if metric == "test/acc":
            cols.append("n")
    return (*cols, "jobs", "failed", "epochs", "train_seconds", "data_source")


# summary.csv: one column per swept key, then these.
STAT_COLUMNS = _stat_columns()


def finite(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric or NaN values (broken jobs write anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _one_line(text: Any) -> str:
    """Status strings go into table cells, so newlines and runs of blanks collapse to one space."""
    return " ".join(str(text).split())


def seed_stats(values: list[float | None]) -> dict[str, Any]:
    """mean, std, ci95 (t-based half-width) and n of the finite values (backprop_lab.stats.summary,
    imported here: Hydra instantiates this module's callback before every run, and scipy takes a moment)."""
    from backprop_lab.stats import summary

    return summary(values)


def find_job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every job folder under `sweep_dir`: those holding `.hydra/overrides.yaml` or `metrics.json`.

    Searched recursively because override values with `/` nest job folders. A metrics.json inside
    a job that has `.hydra` (some logger's own file) is not a job of its own.
    """
    root = Path(sweep_dir)
    jobs = {p.parent.parent for p in root.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    bare = {p.parent for p in root.rglob("metrics.json") if ".hydra" not in p.relative_to(root).parts}
    jobs |= {d for d in bare - jobs if not any(j in d.parents for j in jobs)}
    return sorted(jobs)


def _read_overrides(job_dir: Path, job: str) -> list[str]:
    """The job's overrides; rebuilt from the folder name (Hydra's override_dirname) if
    overrides.yaml is missing or broken, and `job=<folder>` if the name is no list of overrides."""
    try:
        items = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        items = None
    if isinstance(items, list):
        return [str(item) for item in items]
    parts = re.split(r",(?=[^,=]+=)", job)
    return parts if all("=" in p for p in parts) else [f"job={job}"]


def _key_value(override: str) -> tuple[str, str]:
    """`+a.b=1` -> (`a.b`, `1`); an override without `=` (`~key`) is its own key and value."""
    key, sep, value = override.partition("=")
    return (key.lstrip("+"), value) if sep else (override, override)


@dataclass
class Job:
    """One job folder as read: its overrides, status, members (seeds) and epoch history."""

    job: str
    overrides: list[str]
    status: str = COMPLETED
    members: list[dict[str, Any]] = field(default_factory=list)  # seed, status and the METRICS values
    history: dict[str, Any] | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the job's own test/acc, epochs, ...

    @property
    def params(self) -> dict[str, str]:
        return {k: v for k, v in map(_key_value, self.overrides) if not k.startswith(SEARCH)}

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def row(self) -> dict[str, Any]:
        """The job's row for collect(): JOB_COLUMNS."""
        row = dict.fromkeys(JOB_COLUMNS)
        row.update(self.values)
        row.update(job=self.job, overrides=" ".join(self.overrides), status=self.status)
        row["population"] = len(self.members) or None
        return row

    def seeds(self) -> list[dict[str, Any]]:
        """The members that count as seeds of the group: those that completed, in a job that completed."""
        return [m for m in self.members if m["status"] == COMPLETED] if self.completed else []

    def failed(self) -> int:
        """Seeds that did not complete: every member of a failed job (at least one), else the diverged members."""
        if not self.completed:
            return max(1, len(self.members))
        return sum(m["status"] != COMPLETED for m in self.members)


def _seed(value: Any) -> int | str | None:
    """A member's seed as an int where it is one (`3`, `3.0`, the override's `"3"`), else as written."""
    number = finite(value)
    if number is not None and number == int(number):
        return int(number)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None if value is None else str(value)


def _members(metrics: dict[str, Any], status: str, seed: Any) -> list[dict[str, Any]]:
    """The population's members from metrics.json; without a `members` list (an older file), the job
    itself is the one member, with its own status and values."""
    found = metrics.get("members")
    if not isinstance(found, list) or not found:
        return [{"seed": _seed(seed), "status": status, **{k: finite(metrics.get(k)) for k in METRICS}}]
    members = []
    for k, m in enumerate(found):
        if not isinstance(m, dict):
            members.append({"seed": None, "status": f"unreadable member entry #{k}", **dict.fromkeys(METRICS)})
            continue
        members.append(
            {
                "seed": _seed(m.get("seed")),
                "status": _one_line(m.get("status", "unknown (no status)")),
                **{key: finite(m.get(key)) for key in METRICS},
            }
        )
    return members


def read_job(job_dir: Path, sweep_dir: Path) -> Job:
    """One job folder; never raises for what a broken job leaves behind."""
    name = job_dir.relative_to(sweep_dir).as_posix()
    job = Job(name, _read_overrides(job_dir, name))
    path = job_dir / "metrics.json"
    if not path.exists():
        job.status = NO_METRICS
        job.members = _members({}, job.status, job.params.get(SEED))
        return job
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"expected a JSON object, got {type(metrics).__name__}")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        job.status = _one_line(f"unreadable metrics.json: {e}")
        job.members = _members({}, job.status, job.params.get(SEED))
        return job
    status, error = metrics.get("status", "unknown (no status in metrics.json)"), metrics.get("error")
    if error and ":" not in str(status):  # train() writes "diverged" and the error line beside it
        status = f"{status}: {error}"
    job.status = _one_line(status)
    job.members = _members(metrics, job.status, job.params.get(SEED))
    epochs = finite(metrics.get("epochs"))
    source = metrics.get("data_source")
    job.values = {
        "test/acc": finite(metrics.get("test/acc")),
        "val/acc_best": finite(metrics.get("val/acc_best")),
        "epochs": int(epochs) if epochs is not None else None,
        "train_seconds": finite(metrics.get("train_seconds")),
        "data_source": str(source) if source is not None else None,
    }
    history = metrics.get("history")
    job.history = history if isinstance(history, dict) else None
    return job


def _desc(value: float | None) -> float:
    return -value if value is not None else math.inf


def _job_rank(job: Job) -> tuple:
    """Completed before everything else, then test acc, then best val acc (missing counts as worst)."""
    return (not job.completed, _desc(job.values.get("test/acc")), _desc(job.values.get("val/acc_best")), job.job)


def read_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job of the sweep, best first (see collect)."""
    root = Path(sweep_dir)
    return sorted((read_job(d, root) for d in find_job_dirs(root)), key=_job_rank)


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job (keys: JOB_COLUMNS), best first by test/acc then val/acc_best; failed jobs last."""
    return [job.row() for job in read_jobs(sweep_dir)]


@dataclass
class Group:
    """Jobs that differ only in `seed`: their statistics over every completed seed (member)."""

    params: dict[str, str]  # the overrides other than seed
    jobs: list[Job]
    stats: dict[str, dict[str, Any]] = field(init=False)  # METRICS -> mean, std, ci95, n
    n: int = field(init=False)  # completed seeds: completed members of completed jobs
    failed: int = field(init=False)  # seeds that did not complete (see Job.failed)

    def __post_init__(self) -> None:
        seeds = [m for job in self.jobs for m in job.seeds()]
        self.stats = {metric: seed_stats([m[metric] for m in seeds]) for metric in METRICS}
        self.n = len(seeds)
        self.failed = sum(job.failed() for job in self.jobs)

    def row(self, swept: list[str]) -> dict[str, Any]:
        """The group's csv row: its value of each swept key (None: not overridden), then STAT_COLUMNS."""
        row: dict[str, Any] = {_column(key): self.params.get(key) for key in swept}
        for metric in METRICS:
            name = metric.replace("/", "_")
            stat = self.stats[metric]
            row.update({f"{name}_{k}": None if stat[k] is None else round(stat[k], 6) for k in ("mean", "std", "ci95")})
        done = [job for job in self.jobs if job.completed]
        epochs = [e for job in done if (e := job.values.get("epochs")) is not None]
        seconds = [s for job in done if (s := job.values.get("train_seconds")) is not None]
        sources = sorted({s for job in self.jobs if (s := job.values.get("data_source"))})
        row.update(
            n=self.n,
            jobs=len(self.jobs),
            failed=self.failed,
            epochs=max(epochs) if epochs else None,
            train_seconds=round(sum(seconds) / len(seconds), 3) if seconds else None,
            data_source=" ".join(sources) or None,
        )
        return row

    def label(self, swept: list[str]) -> str:
        """`key=value ...` over the swept keys (`all jobs` when nothing is swept but the seed)."""
        return " ".join(f"{k}={self.params[k]}" for k in swept if k in self.params) or "all jobs"

    def rank_key(self) -> tuple:
        """Groups with a completed seed first, then mean test acc, then mean best val acc."""
        test, val = self.stats["test/acc"]["mean"], self.stats["val/acc_best"]["mean"]
        return (self.n == 0, _desc(test), _desc(val), sorted(self.params.items()))


def _column(key: str) -> str:
    """A swept key's csv column; renamed if it would clash with a statistics column."""
    return f"{key} (override)" if key in STAT_COLUMNS else key


@dataclass
class Summary:
    """A sweep read and grouped: the groups best first, the swept keys, the shared overrides."""

    jobs: list[Job]
    groups: list[Group]
    swept: list[str]  # keys other than seed whose values differ between groups (columns)
    constant: list[str]  # overrides every job shares (stated once)

    def rows(self) -> list[dict[str, Any]]:
        return [g.row(self.swept) for g in self.groups]

    def columns(self) -> list[str]:
        return [_column(k) for k in self.swept] + list(STAT_COLUMNS)

    def failures(self) -> list[tuple[str, str]]:
        """(where, status) for every job that did not complete and every member that diverged in one that did."""
        out = []
        for group in self.groups:
            for job in sorted(group.jobs, key=lambda j: j.job):
                if not job.completed:
                    out.append((f"`{job.job}`", job.status))
                    continue
                for m in job.members:
                    if m["status"] != COMPLETED:
                        out.append((f"`{job.job}` seed {m['seed'] if m['seed'] is not None else '?'}", m["status"]))
        return out


def summarize(sweep_dir: str | Path) -> Summary:
    """Read every job of the sweep and group those that differ only in `seed`."""
    jobs = read_jobs(sweep_dir)
    order: dict[str, None] = {}  # every key, in the order the overrides name them
    for job in jobs:
        order.update(dict.fromkeys(job.params))
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        params = job.params
        groups.setdefault(tuple(sorted((k, v) for k, v in params.items() if k != SEED)), []).append(job)
    ranked = sorted((Group(dict(key), members) for key, members in groups.items()), key=Group.rank_key)
    swept, constant = [], []
    for key in order:
        values = [job.params.get(key) for job in jobs]
        if len(set(values)) == 1:  # the same in every job (seed included: then it is no spread)
            constant.append(next(o for o in jobs[0].overrides if _key_value(o)[0] == key))
        elif key != SEED:
            swept.append(key)
    return Summary(jobs, ranked, swept, constant)

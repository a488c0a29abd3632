"""Summaries of a Hydra multirun: one ranked table (csv + markdown) and one plot per sweep.

A sweep dir holds one folder per job (named by its overrides, possibly nested when a value
contains `/`), each with `.hydra/overrides.yaml` and, if the job got far enough, `metrics.json`.

Jobs that differ only in `seed` form one group, and a group is one row: mean ± std (n) of its
seeds, where a population job (N networks, seeds seed..seed+N-1) adds each completed member as a
seed of its own. The table has one column per swept key (the overrides whose values differ between
groups); the overrides every job shares are stated once above it.

Every function here tolerates broken jobs: a crash, a failed run or unreadable JSON becomes a
status line (in the failures list, and counted in its group's row) instead of an exception, so
one bad job never hides the others.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from backprop_lab.errors import fail

log = logging.getLogger(__name__)

COMPLETED = "completed"
NO_METRICS = "no metrics.json (crashed?)"
SEED = "seed"
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
MANY_CURVES = 6  # above this the legend moves below the axes


def _num(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric or NaN values (broken jobs write anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _one_line(text: Any) -> str:
    """Status strings go into table cells, so newlines and runs of blanks collapse to one space."""
    return " ".join(str(text).split())


def _stats(values: list[float | None]) -> dict[str, Any]:
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
        return dict(_key_value(o) for o in self.overrides)

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
    number = _num(value)
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
        return [{"seed": _seed(seed), "status": status, **{k: _num(metrics.get(k)) for k in METRICS}}]
    members = []
    for k, m in enumerate(found):
        if not isinstance(m, dict):
            members.append({"seed": None, "status": f"unreadable member entry #{k}", **dict.fromkeys(METRICS)})
            continue
        members.append(
            {
                "seed": _seed(m.get("seed")),
                "status": _one_line(m.get("status", "unknown (no status)")),
                **{key: _num(m.get(key)) for key in METRICS},
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
    job.status = _one_line(metrics.get("status", "unknown (no status in metrics.json)"))
    job.members = _members(metrics, job.status, job.params.get(SEED))
    epochs = _num(metrics.get("epochs"))
    source = metrics.get("data_source")
    job.values = {
        "test/acc": _num(metrics.get("test/acc")),
        "val/acc_best": _num(metrics.get("val/acc_best")),
        "epochs": int(epochs) if epochs is not None else None,
        "train_seconds": _num(metrics.get("train_seconds")),
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
        self.stats = {metric: _stats([m[metric] for m in seeds]) for metric in METRICS}
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


def _pct(stat: dict[str, Any]) -> str:
    """`91.23 ± 0.45 (3)` in %: mean ± std (n); without the std for one value; `-` for none."""
    if stat["mean"] is None:
        return "-"
    spread = f" ± {100 * stat['std']:.2f}" if stat["std"] is not None else ""
    return f"{100 * stat['mean']:.2f}{spread} ({stat['n']})"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|") if value not in (None, "") else "-"


def markdown_table(summary: Summary, sweep_dir: str | Path) -> str:
    """The ranked markdown table, headed by the sweep dir, the job counts and the shared overrides;
    the failures below it."""
    jobs = summary.jobs
    done = sum(job.completed for job in jobs)
    groups = len(summary.groups)
    lines = [
        f"Sweep `{sweep_dir}`: {len(jobs)} jobs, {done} completed, {len(jobs) - done} failed; "
        f"{groups} group{'s' * (groups != 1)} (jobs that differ only in `seed` are one group).",
        "",
    ]
    if summary.constant:
        lines += ["Every job: " + " ".join(f"`{o}`" for o in summary.constant), ""]
    keys = summary.swept or ["group"]
    lines += [
        "| rank | "
        + " | ".join(_cell(k) for k in keys)
        + " | test acc (%) | 95% CI | best val acc (%) | epochs | jobs | failed | time/job (s) |",
        "|---:|" + "---|" * len(keys) + "---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, (group, row) in enumerate(zip(summary.groups, summary.rows()), 1):
        ci95 = group.stats["test/acc"]["ci95"]
        seconds = row["train_seconds"]
        values = [group.params.get(k) for k in summary.swept] if summary.swept else ["all jobs"]
        cells = [
            str(i) if group.n else "-",
            *(_cell(v) for v in values),
            _pct(group.stats["test/acc"]),
            f"± {100 * ci95:.2f}" if ci95 is not None else "-",
            _pct(group.stats["val/acc_best"]),
            _cell(row["epochs"]),
            str(row["jobs"]),
            str(row["failed"]),
            f"{seconds:.1f}" if seconds is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Accuracies: mean ± std over the group's completed seeds (n in brackets; each member of a population "
        "counts as a seed); 95% CI: the t-based half-width for the mean; failed: seeds (jobs or population "
        "members) that did not complete.",
    ]
    failures = summary.failures()
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- {where}: {status}" for where, status in failures]
    return "\n".join(lines) + "\n"


def _epochs(history: dict[str, Any], length: int) -> list[float | None]:
    epochs = history.get("epoch")
    if not isinstance(epochs, list) or len(epochs) != length:
        return list(range(1, length + 1))
    return [_num(e) for e in epochs]


def _job_curves(job: Job) -> list[dict[float, float]]:
    """{epoch: val acc %} for each completed seed of a completed job: its population's members from
    `val/acc_members`, else the job's own `val/acc`; empty if the history is absent or malformed."""
    history = job.history
    if not job.completed or not history:
        return []
    per_member = history.get("val/acc_members")
    if isinstance(per_member, list) and per_member and all(isinstance(r, list) for r in per_member):
        width = max(len(r) for r in per_member)
        keep = range(width)
        if len(job.members) == width:  # the columns are the members: keep the completed ones
            keep = [k for k, m in enumerate(job.members) if m["status"] == COMPLETED]
        rows = list(zip(_epochs(history, len(per_member)), per_member))
        curves = [
            {e: 100 * a for e, r in rows if e is not None and k < len(r) and (a := _num(r[k])) is not None}
            for k in keep
        ]
        return [c for c in curves if c]
    acc = history.get("val/acc")
    if not isinstance(acc, list) or not acc:
        return []
    curve = {
        e: 100 * a for e, v in zip(_epochs(history, len(acc)), acc) if e is not None and (a := _num(v)) is not None
    }
    return [curve] if curve else []


def group_curve(group: Group) -> tuple[list[float], list[float], list[float]] | None:
    """(epochs, mean val acc %, std %) over the group's seeds per epoch (std 0 with one seed); None without curves."""
    curves = [c for job in group.jobs for c in _job_curves(job)]
    if not curves:
        return None
    epochs = sorted({e for c in curves for e in c})
    stats = [_stats([c.get(e) for c in curves]) for e in epochs]
    return epochs, [s["mean"] for s in stats], [s["std"] or 0.0 for s in stats]


def _short(label: str, width: int = 60) -> str:
    return label if len(label) <= width else label[: width - 3] + "..."


def plot_summary(summary: Summary, path: Path, title: str) -> None:
    """Per group, the mean val acc per epoch with a ± std band over its seeds; test-acc bars with
    error bars if no job has a history; a notice if nothing succeeded.

    Uses the object-oriented Figure API on an Agg canvas, so it never touches pyplot's global
    state (safe inside a training process or a Hydra callback, with no display).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = summary.swept
    legend_title = ", ".join(keys) or None  # the labels name only the values, in this order

    def label(group: Group) -> str:
        return (", ".join(group.params.get(k, "-") for k in keys) or "all jobs") + f" (n={group.n})"

    groups = summary.groups
    curves = [(label(g), c) for g in groups if (c := group_curve(g))]
    bars = [
        (label(g), 100 * s["mean"], 100 * (s["std"] or 0.0))
        for g in groups
        if (s := g.stats["test/acc"])["mean"] is not None
    ]
    many = len(curves) > MANY_CURVES
    fig = Figure(figsize=(9, 5.5 + (0.25 * len(curves) if many else 0)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if curves:
        ax.set_title(f"{title}: validation accuracy per epoch (mean ± std over seeds)", fontsize=10)
        cmap = colormaps["viridis"]  # many groups: colour by rank instead of repeating the 10-colour cycle
        for i, (text, (epochs, mean, std)) in enumerate(curves):
            color = cmap(0.9 * i / (len(curves) - 1)) if many else f"C{i}"
            if len(epochs) == 1:  # one epoch: no band to draw, an error bar instead
                ax.errorbar(epochs, mean, yerr=std, fmt="o", markersize=3, capsize=3, label=_short(text), color=color)
                continue
            ax.plot(epochs, mean, marker="o", markersize=3, label=_short(text), color=color)
            low, high = [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
            ax.fill_between(epochs, low, high, color=color, alpha=0.15, linewidth=0)
        first, last = min(c[1][0][0] for c in curves), max(c[1][0][-1] for c in curves)
        if first == last:
            ax.set_xlim(first - 1, last + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        if many:
            fig.legend(loc="outside lower center", ncols=2, fontsize=7, title=legend_title, title_fontsize=8)
        else:
            ax.legend(loc="best", fontsize=8, title=legend_title, title_fontsize=8)
    elif bars:
        ax.set_title(f"{title}: test accuracy (mean ± std over seeds)", fontsize=10)
        labels, values, errors = zip(*bars)
        ax.barh(range(len(bars)), values, xerr=errors, capsize=3)
        ax.set_yticks(range(len(bars)), [_short(label, 40) for label in labels], fontsize=7)
        ax.invert_yaxis()  # best (first) on top
        ax.set_xlabel("test accuracy (%)")
        if legend_title:
            ax.set_ylabel(legend_title, fontsize=8)
    else:
        done = any(job.completed for job in summary.jobs)
        notice = "no accuracy recorded" if done else "no job succeeded"
        ax.set_title(title, fontsize=10)
        jobs = f"{len(summary.jobs)} job{'s' * (len(summary.jobs) != 1)}"
        ax.text(0.5, 0.5, f"{notice} ({jobs})", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
    fig.savefig(path, dpi=120)


def write_summary(sweep_dir: str | Path) -> list[Path]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`; return their paths."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep dir not found: {root}")
    summary = summarize(root)
    csv_path, md_path, png_path = (root / f"summary.{ext}" for ext in ("csv", "md", "png"))
    columns = summary.columns()
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if row[k] is None else row[k] for k in columns} for row in summary.rows())
    md_path.write_text(markdown_table(summary, root))
    plot_summary(summary, png_path, f"sweep {root.name}")
    return [csv_path, md_path, png_path]


class SummarizeSweep(Callback):
    """Hydra callback: after the last job of a multirun, write the sweep summary next to the jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            log.warning("No sweep summary: %s does not exist", sweep_dir)
            return
        paths = write_summary(sweep_dir)
        log.info("Sweep summary: %s", ", ".join(str(p) for p in paths))
        jobs = read_jobs(sweep_dir)
        failed = [job for job in jobs if not job.completed]
        if failed:  # the other jobs ran; the exit status still tells a script that something went wrong
            fail(f"{len(failed)} of {len(jobs)} sweep jobs did not complete (see {paths[1]})")

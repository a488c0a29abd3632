"""Summaries of a Hydra multirun (read by jobs.py): one ranked table (csv + markdown) and one plot.

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
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from backprop_lab.errors import fail
from backprop_lab.reporting.jobs import (
    COMPLETED,
    Group,
    Job,
    Summary,
    finite,
    read_jobs,
    seed_stats,
    summarize,
)

log = logging.getLogger(__name__)
MANY_CURVES = 6  # above this the legend moves below the axes


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
    stopped = sum(job.status.startswith(("pruned", "diverged", "interrupted")) for job in jobs)
    ended = f"{stopped} pruned, diverged or interrupted, " if stopped else ""
    groups = len(summary.groups)
    lines = [
        f"Sweep `{sweep_dir}`: {len(jobs)} jobs, {done} completed, {ended}{len(jobs) - done - stopped} failed; "
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
    return [finite(e) for e in epochs]


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
            {e: 100 * a for e, r in rows if e is not None and k < len(r) and (a := finite(r[k])) is not None}
            for k in keep
        ]
        return [c for c in curves if c]
    acc = history.get("val/acc")
    if not isinstance(acc, list) or not acc:
        return []
    curve = {
        e: 100 * a for e, v in zip(_epochs(history, len(acc)), acc) if e is not None and (a := finite(v)) is not None
    }
    return [curve] if curve else []


def group_curve(group: Group) -> tuple[list[float], list[float], list[float]] | None:
    """(epochs, mean val acc %, std %) over the group's seeds per epoch (std 0 with one seed); None without curves."""
    curves = [c for job in group.jobs for c in _job_curves(job)]
    if not curves:
        return None
    epochs = sorted({e for c in curves for e in c})
    stats = [seed_stats([c.get(e) for c in curves]) for e in epochs]
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
    """Hydra callback: after the last job of a multirun, write the sweep summary next to the jobs; exit 1 when a
    job did not complete, unless its status starts with one of `expected` (a search expects pruned trials)."""

    def __init__(self, expected: Sequence[str] = ()) -> None:
        self.expected = tuple(expected)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            log.warning("No sweep summary: %s does not exist", sweep_dir)
            return
        paths = write_summary(sweep_dir)
        log.info("Sweep summary: %s", ", ".join(str(p) for p in paths))
        jobs = read_jobs(sweep_dir)
        expected = [job for job in jobs if self.expected and job.status.startswith(self.expected)]
        failed = [job for job in jobs if not job.completed and job not in expected]
        if failed:  # the other jobs ran; the exit status still tells a script that something went wrong
            fail(f"{len(failed)} of {len(jobs)} sweep jobs did not complete (see {paths[1]})")

"""Summaries of a Hydra multirun: one ranked table (csv + markdown) and one plot per sweep.

A sweep dir holds one folder per job (named by its overrides, possibly nested when a value
contains `/`), each with `.hydra/overrides.yaml` and, if the job got far enough, `metrics.json`.
Every function here tolerates broken jobs: a crash, a failed run or unreadable JSON becomes a
status line in the table instead of an exception, so one bad job never hides the others.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

COLUMNS = ("job", "overrides", "status", "test/acc", "val/acc_best", "epochs", "train_seconds", "data_source")
COMPLETED = "completed"
NO_METRICS = "no metrics.json (crashed?)"
MANY_JOBS = 6  # above this the legend moves below the axes


def _num(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric or NaN values (broken jobs write anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _one_line(text: Any) -> str:
    """Status strings go into table cells, so newlines and runs of blanks collapse to one space."""
    return " ".join(str(text).split())


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


def _read_overrides(job_dir: Path, fallback: str) -> str:
    """The job's overrides joined by spaces; the folder name if overrides.yaml is missing or broken."""
    try:
        items = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return fallback
    if not isinstance(items, list):
        return fallback
    return " ".join(str(item) for item in items)


def _read_job(job_dir: Path, sweep_dir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One summary row for `job_dir`, and its `history` dict (None when absent or unusable)."""
    job = job_dir.relative_to(sweep_dir).as_posix()
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(job=job, overrides=_read_overrides(job_dir, job))
    path = job_dir / "metrics.json"
    if not path.exists():
        row["status"] = NO_METRICS
        return row, None
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"expected a JSON object, got {type(metrics).__name__}")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        row["status"] = _one_line(f"unreadable metrics.json: {e}")
        return row, None
    row["status"] = _one_line(metrics.get("status", "unknown (no status in metrics.json)"))
    row["test/acc"] = _num(metrics.get("test/acc"))
    row["val/acc_best"] = _num(metrics.get("val/acc_best"))
    epochs = _num(metrics.get("epochs"))
    row["epochs"] = int(epochs) if epochs is not None else None
    row["train_seconds"] = _num(metrics.get("train_seconds"))
    source = metrics.get("data_source")
    row["data_source"] = str(source) if source is not None else None
    history = metrics.get("history")
    return row, history if isinstance(history, dict) else None


def _rank_key(row: dict[str, Any]) -> tuple:
    """Completed before everything else, then test acc, then best val acc (missing counts as worst)."""

    def desc(value: float | None) -> float:
        return -value if value is not None else math.inf

    return (row["status"] != COMPLETED, desc(row["test/acc"]), desc(row["val/acc_best"]), row["job"])


def _collect(sweep_dir: str | Path) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    root = Path(sweep_dir)
    pairs = [_read_job(job_dir, root) for job_dir in find_job_dirs(root)]
    return sorted(pairs, key=lambda pair: _rank_key(pair[0]))


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job (keys: COLUMNS), best first by test/acc then val/acc_best; failed jobs last."""
    return [row for row, _ in _collect(sweep_dir)]


def _pct(value: float | None) -> str:
    return f"{100 * value:.2f}%" if value is not None else "-"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|") if value not in (None, "") else "-"


def markdown_table(rows: list[dict[str, Any]], sweep_dir: str | Path) -> str:
    """The ranked markdown table, headed by the sweep dir and the job counts."""
    done = sum(row["status"] == COMPLETED for row in rows)
    lines = [
        f"Sweep `{sweep_dir}`: {len(rows)} jobs, {done} completed, {len(rows) - done} failed.",
        "",
        "| rank | overrides | test acc | best val acc | epochs | time (s) | status |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for i, row in enumerate(rows, 1):
        seconds = row["train_seconds"]
        lines.append(
            "| "
            + " | ".join(
                [
                    str(i) if row["status"] == COMPLETED else "-",
                    _cell(row["overrides"] or "(defaults)"),
                    _pct(row["test/acc"]),
                    _pct(row["val/acc_best"]),
                    _cell(row["epochs"]),
                    f"{seconds:.1f}" if seconds is not None else "-",
                    _cell(row["status"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _val_curve(history: dict[str, Any] | None) -> tuple[list[float], list[float]] | None:
    """(epochs, val acc in %) from a job's history, or None if absent, empty or malformed."""
    if not history:
        return None
    acc = history.get("val/acc")
    if not isinstance(acc, list) or not acc:
        return None
    epochs = history.get("epoch")
    if not isinstance(epochs, list) or len(epochs) != len(acc):
        epochs = list(range(1, len(acc) + 1))
    points = [(_num(e), _num(a)) for e, a in zip(epochs, acc)]
    points = [(e, 100 * a) for e, a in points if e is not None and a is not None]
    return ([e for e, _ in points], [a for _, a in points]) if points else None


def _label(row: dict[str, Any]) -> str:
    """Legend label: the overrides, plus the status word (e.g. `diverged`) for jobs that did not complete."""
    label = row["overrides"] or "(defaults)"
    return label if row["status"] == COMPLETED else f"{label} ({row['status'].split(':')[0]})"


def _short(label: str, width: int = 60) -> str:
    return label if len(label) <= width else label[: width - 3] + "..."


def plot_summary(pairs: list[tuple[dict[str, Any], dict[str, Any] | None]], path: Path, title: str) -> None:
    """Val acc per epoch for each job; test-acc bars if no history; a notice if nothing succeeded.

    Uses the object-oriented Figure API on an Agg canvas, so it never touches pyplot's global
    state (safe inside a training process or a Hydra callback, with no display).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curves = [(_label(row), c) for row, h in pairs if (c := _val_curve(h))]
    bars = [
        (row["overrides"] or "(defaults)", 100 * row["test/acc"])
        for row, _ in pairs
        if row["status"] == COMPLETED and row["test/acc"] is not None
    ]
    many = len(curves) > MANY_JOBS
    fig = Figure(figsize=(9, 5.5 + (0.25 * len(curves) if many else 0)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if curves:
        ax.set_title(f"{title}: validation accuracy per epoch", fontsize=10)
        cmap = colormaps["viridis"]  # many jobs: colour by rank instead of repeating the 10-colour cycle
        for i, (label, (epochs, acc)) in enumerate(curves):
            color = cmap(0.9 * i / (len(curves) - 1)) if many else None
            ax.plot(epochs, acc, marker="o", markersize=3, label=_short(label), color=color)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        if many:
            fig.legend(loc="outside lower center", ncols=2, fontsize=7)
        else:
            ax.legend(loc="lower right", fontsize=8)
    elif bars:
        ax.set_title(f"{title}: test accuracy", fontsize=10)
        labels, values = zip(*bars)
        ax.barh(range(len(bars)), values)
        ax.set_yticks(range(len(bars)), [_short(label, 40) for label in labels], fontsize=7)
        ax.invert_yaxis()  # best (first) on top
        ax.set_xlabel("test accuracy (%)")
    else:
        done = any(row["status"] == COMPLETED for row, _ in pairs)
        notice = "no accuracy recorded" if done else "no job succeeded"
        ax.set_title(title, fontsize=10)
        jobs = f"{len(pairs)} job{'s' * (len(pairs) != 1)}"
        ax.text(0.5, 0.5, f"{notice} ({jobs})", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
    fig.savefig(path, dpi=120)


def write_summary(sweep_dir: str | Path) -> list[Path]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`; return their paths."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep dir not found: {root}")
    pairs = _collect(root)
    rows = [row for row, _ in pairs]
    csv_path, md_path, png_path = (root / f"summary.{ext}" for ext in ("csv", "md", "png"))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if row[k] is None else row[k] for k in COLUMNS} for row in rows)
    md_path.write_text(markdown_table(rows, root))
    plot_summary(pairs, png_path, f"sweep {root.name}")
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
        rows = collect(sweep_dir)
        failed = [r for r in rows if r["status"] != "completed"]
        if failed:  # the other jobs ran; the exit status still tells a script that something went wrong
            print(f"error: {len(failed)} of {len(rows)} sweep jobs did not complete (see {paths[1]})", file=sys.stderr)
            sys.exit(1)

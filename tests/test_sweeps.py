"""Sweep summaries: grouping seeds and population members, the swept-key columns, ranking, csv/md/png
output, broken jobs (the CLI and the Hydra callback: test_sweep_callbacks.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from backprop_lab.reporting.jobs import JOB_COLUMNS, NO_METRICS, STAT_COLUMNS, collect, summarize
from backprop_lab.reporting.sweeps import group_curve, write_summary
from backprop_lab.training import members
from conftest import completed, make_job

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2): the 95% interval of a mean of 3


def test_collect_ranks_completed_best_first_and_broken_last(sweep):
    rows = collect(sweep)
    assert [r["job"] for r in rows[:4]] == [
        "activation=tanh,optimizer=sgd",  # best test acc
        "activation=sigmoid,optimizer=sgd",  # ties on test acc, better val acc
        "activation=relu,optimizer=adam",
        "data=mnist/small,seed=1",  # nested folder, found by recursive search
    ]
    assert rows[0]["overrides"] == "activation=tanh optimizer=sgd"
    assert rows[3]["overrides"] == "data=mnist/small seed=1"
    assert all(r["status"] == "completed" for r in rows[:4])
    failed = {"optimizer.lr=100", "activation=bad", "loss=broken", "model=mlp/deep,trainer=crash"}
    assert {r["job"] for r in rows[4:]} == failed
    assert all(set(r) == set(JOB_COLUMNS) for r in rows)
    assert rows[0]["population"] == 1  # an older metrics.json (no members): the job is its one member


def test_collect_turns_broken_jobs_into_status_lines(sweep):
    status = {r["job"]: r["status"] for r in collect(sweep)}
    assert status["model=mlp/deep,trainer=crash"] == NO_METRICS
    assert status["loss=broken"].startswith("unreadable metrics.json: ")
    assert status["activation=bad"] == "failed: ValueError: unknown activation 'bad'"
    assert status["optimizer.lr=100"] == "diverged: val/loss is nan at epoch 2"


def read_csv(sweep: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (sweep / "summary.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_csv_has_a_column_per_swept_key_and_the_statistics_in_rank_order(sweep):
    paths = write_summary(sweep)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "summary.png"]
    columns, rows = read_csv(sweep)
    # seed is never a column (it tells jobs of one group apart); the others in the order the jobs name them
    assert columns == ["activation", "optimizer", "data", "loss", "model", "trainer", "optimizer.lr", *STAT_COLUMNS]
    assert len(rows) == 8  # every job differs in more than its seed: eight groups of one
    first = rows[0]
    assert (first["activation"], first["optimizer"], first["data"]) == ("tanh", "sgd", "")
    assert float(first["test_acc_mean"]) == 0.95 and float(first["val_acc_best_mean"]) == 0.93
    assert first["test_acc_std"] == first["test_acc_ci95"] == ""  # one seed: no spread
    assert (first["n"], first["jobs"], first["failed"]) == ("1", "1", "0")
    assert first["epochs"] == "3" and first["data_source"] == "mnist-subset"
    assert float(first["train_seconds"]) == 12.34
    assert rows[3]["data"] == "mnist/small"  # its seed=1 made no column
    crashed = next(r for r in rows if r["model"] == "mlp/deep")
    assert crashed["test_acc_mean"] == "" and (crashed["n"], crashed["failed"]) == ("0", "1")
    assert [r["n"] for r in rows] == ["1"] * 4 + ["0"] * 4  # groups without a completed seed last


def test_markdown_lists_every_group_and_every_failure(sweep):
    write_summary(sweep)
    md = (sweep / "summary.md").read_text()
    lines = md.splitlines()
    assert (
        str(sweep) in lines[0]
        and "8 jobs, 4 completed, 1 pruned, diverged or interrupted, 3 failed; 8 groups" in lines[0]
    )
    assert "Every job:" not in md  # no override is shared by all eight
    header = "| rank | activation | optimizer | data | loss | model | trainer | optimizer.lr | test acc (%) | 95% CI |"
    assert header + " best val acc (%) | epochs | jobs | failed | time/job (s) |" in md
    assert "| 1 | tanh | sgd | - | - | - | - | - | 95.00 (1) | - | 93.00 (1) | 3 | 1 | 0 | 12.3 |" in md
    assert "| 4 | - | - | mnist/small | - | - | - | - | 50.00 (1) | - | 55.00 (1) | 3 | 1 | 0 | 12.3 |" in md
    assert "| - | - | - | - | - | mlp/deep | crash | - | - | - | - | - | 1 | 1 | - |" in md
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + 8  # header + one row per group
    failures = lines[lines.index("## Failures") :]
    assert "- `activation=bad`: failed: ValueError: unknown activation 'bad'" in failures
    assert "- `optimizer.lr=100`: diverged: val/loss is nan at epoch 2" in failures
    assert f"- `model=mlp/deep,trainer=crash`: {NO_METRICS}" in failures
    assert any(line.startswith("- `loss=broken`: unreadable metrics.json: ") for line in failures)


def test_a_diverged_run_is_listed_with_the_error_train_wrote_beside_its_status(tmp_path):
    error = "training diverged: the loss exploded to 557.8 (over 100x its first value) at step 1 (epoch 1)"
    make_job(tmp_path, ["optimizer.lr=1000"], {"status": "diverged", "error": error, "epochs": 1})
    (job,) = summarize(tmp_path).jobs
    assert job.status == f"diverged: {error}" and not job.completed


def seed_sweep(sweep: Path, *constant: str) -> None:
    """`-m seed=0,1,2 optimizer=sgd,adam`: adam's test acc 0.90/0.91/0.92, sgd's 0.80/0.85/0.90."""
    for k in range(3):
        curve = [0.5 + k / 100, 0.7 + k / 100, 0.9 + k / 100]
        make_job(sweep, [f"seed={k}", "optimizer=adam", *constant], completed(0.90 + k / 100, 0.91 + k / 100, curve))
        make_job(sweep, [f"seed={k}", "optimizer=sgd", *constant], completed(0.80 + k / 20, 0.81 + k / 20, curve))


def test_a_seed_sweep_summarises_into_one_row_per_group_with_mean_and_std(tmp_path):
    seed_sweep(tmp_path)
    write_summary(tmp_path)
    columns, rows = read_csv(tmp_path)
    assert columns == ["optimizer", *STAT_COLUMNS]
    assert [r["optimizer"] for r in rows] == ["adam", "sgd"]  # best mean test acc first
    adam, sgd = rows
    assert (adam["n"], adam["jobs"], adam["failed"]) == ("3", "3", "0")
    assert float(adam["test_acc_mean"]) == pytest.approx(0.91)
    assert float(adam["test_acc_std"]) == pytest.approx(0.01)
    assert float(adam["test_acc_ci95"]) == pytest.approx(T_975_2 * 0.01 / math.sqrt(3), abs=1e-6)
    assert float(adam["val_acc_best_mean"]) == pytest.approx(0.92)
    assert float(sgd["test_acc_mean"]) == pytest.approx(0.85) and float(sgd["test_acc_std"]) == pytest.approx(0.05)
    md = (tmp_path / "summary.md").read_text()
    assert "6 jobs, 6 completed, 0 failed; 2 groups" in md
    assert "| 1 | adam | 91.00 ± 1.00 (3) | ± 2.48 | 92.00 ± 1.00 (3) | 3 | 3 | 0 | 12.3 |" in md
    assert "| 2 | sgd | 85.00 ± 5.00 (3) | ± 12.42 | 86.00 ± 5.00 (3) | 3 | 3 | 0 | 12.3 |" in md
    assert "Failures" not in md
    assert_real_png(tmp_path / "summary.png")


def population(seed: int, test_acc: list[float], diverged_at: list[int | None] | None = None, epochs: int = 3) -> dict:
    """A population job's metrics.json as train() writes it (members.report), with per-member val curves."""
    n = len(test_acc)
    diverged_at = diverged_at or [None] * n
    values = {
        "test/acc": torch.tensor(test_acc),
        "test/loss": torch.full((n,), 0.3),
        "val/acc_best": torch.tensor(test_acc) + 0.01,
    }
    curves = [[a - 0.01 * (epochs - e) for a in test_acc] for e in range(1, epochs + 1)]
    metrics = completed(0.0, 0.0, [sum(c) / n for c in curves])
    metrics["history"]["val/acc_members"] = curves
    metrics.update(members.report(values, seed, diverged_at))
    return metrics


def test_a_population_job_is_read_like_its_seeds(tmp_path):
    pop, seeds = tmp_path / "population", tmp_path / "seeds"
    make_job(pop, ["population=3", "seed=0", "optimizer=adam"], population(0, [0.90, 0.91, 0.92]))
    seed_sweep(seeds)
    [from_population] = summarize(pop).rows()
    from_seeds = summarize(seeds).rows()[0]  # adam: the same three test accuracies, one job per seed
    for column in ("test_acc_mean", "test_acc_std", "test_acc_ci95", "n", "val_acc_best_mean", "failed"):
        assert from_population[column] == pytest.approx(from_seeds[column]), column
    assert from_population["jobs"] == 1 and from_seeds["jobs"] == 3
    # the band: each member's val/acc curve (not the one mean curve), as each seed job's own curve
    epochs, mean, std = group_curve(summarize(pop).groups[0])
    assert epochs == [1, 2, 3] and mean[-1] == pytest.approx(91.0) and std[-1] == pytest.approx(1.0)
    epochs, mean, std = group_curve(summarize(seeds).groups[0])
    assert mean[-1] == pytest.approx(91.0) and std[-1] == pytest.approx(1.0)


def test_population_jobs_pool_their_members_and_diverged_members_are_failures(tmp_path):
    """`-m population=3 seed=0,3,6`: seeds 0..8, of which seed 2 diverged and job seed=6 lost all three."""
    job = make_job(tmp_path, ["population=3", "seed=0"], population(0, [0.9, 0.8, 0.1], [None, None, 17]))
    make_job(tmp_path, ["population=3", "seed=3"], population(3, [0.7, 0.6, 0.75]))
    lost = population(6, [0.1, 0.1, 0.1], [4, 4, 9])
    lost.update(status="diverged: every member diverged (the last at step 9)", epochs=1)
    make_job(tmp_path, ["population=3", "seed=6"], lost)
    summary = summarize(tmp_path)
    assert summary.swept == [] and summary.constant == ["population=3"]
    [row] = summary.rows()
    assert (row["n"], row["jobs"], row["failed"]) == (5, 3, 4)  # seed 2, and the three of the lost job
    assert row["test_acc_mean"] == pytest.approx(0.75)  # 0.9, 0.8, 0.7, 0.6, 0.75: no diverged member
    assert row["test_acc_std"] == pytest.approx(math.sqrt(0.05 / 4), abs=1e-6)
    epochs, mean, std = group_curve(summary.groups[0])
    assert mean[-1] == pytest.approx(75.0)  # the band leaves the diverged members' curves out
    write_summary(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "3 jobs, 2 completed, 1 pruned, diverged or interrupted, 0 failed; 1 group " in md
    assert "Every job: `population=3`" in md
    assert "| 1 | all jobs | 75.00 ± 11.18 (5) |" in md
    assert f"- `{job.name}` seed 2: diverged at step 17" in md
    assert "- `population=3,seed=6`: diverged: every member diverged (the last at step 9)" in md
    assert_real_png(tmp_path / "summary.png")


def test_swept_keys_are_columns_and_shared_overrides_are_stated_once(tmp_path):
    shared = ["data=mnist_subset", "trainer.max_epochs=3"]
    for activation in ("relu", "tanh"):
        for optimizer in ("sgd", "adam"):
            for seed in (0, 1):
                acc = {"relu": 0.9, "tanh": 0.8}[activation] + {"sgd": 0.0, "adam": 0.05}[optimizer] + seed / 100
                make_job(
                    tmp_path,
                    [*shared, f"activation={activation}", f"optimizer={optimizer}", f"seed={seed}"],
                    completed(acc, acc),
                )
    make_job(
        tmp_path, [*shared, "activation=relu", "optimizer=adam", "seed=0", "+model.dropout=0.5"], completed(0.5, 0.5)
    )
    summary = summarize(tmp_path)
    assert summary.swept == ["activation", "optimizer", "model.dropout"]
    assert summary.constant == shared
    write_summary(tmp_path)
    columns, rows = read_csv(tmp_path)
    assert columns == ["activation", "optimizer", "model.dropout", *STAT_COLUMNS]
    assert [(r["activation"], r["optimizer"], r["model.dropout"], r["n"]) for r in rows] == [
        ("relu", "adam", "", "2"),
        ("relu", "sgd", "", "2"),
        ("tanh", "adam", "", "2"),
        ("tanh", "sgd", "", "2"),
        ("relu", "adam", "0.5", "1"),
    ]
    md = (tmp_path / "summary.md").read_text()
    assert "Every job: `data=mnist_subset` `trainer.max_epochs=3`" in md
    assert "| rank | activation | optimizer | model.dropout | test acc (%) |" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 5 and not any("mnist_subset" in line for line in table)
    assert "| 1 | relu | adam | - | 95.50 ± 0.71 (2) |" in md


def test_overrides_fall_back_to_the_folder_name(tmp_path):
    for k, acc in enumerate([0.7, 0.9]):
        job = make_job(tmp_path, [f"optimizer=sgd,seed={k}"], completed(acc, acc))
        (job / ".hydra" / "overrides.yaml").unlink()
    plain = tmp_path / "job_0"  # not an override_dirname: a group of its own
    plain.mkdir()
    (plain / "metrics.json").write_text(json.dumps(completed(0.5, 0.5)))
    summary = summarize(tmp_path)
    assert summary.swept == ["optimizer", "job"]
    assert [(g.label(summary.swept), g.n) for g in summary.groups] == [("optimizer=sgd", 2), ("job=job_0", 1)]


def assert_real_png(path: Path) -> None:
    """A PNG by its magic bytes, of a sensible size, and not a blank canvas."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.01  # something was drawn


def test_png_plots_the_histories(sweep):
    write_summary(sweep)
    assert_real_png(sweep / "summary.png")


def test_png_falls_back_to_test_acc_bars_without_history(tmp_path):
    for i, acc in enumerate([0.8, 0.9, 0.7, 0.75]):
        metrics = completed(acc, acc)
        del metrics["history"]
        make_job(tmp_path, [f"seed={i % 2}", f"optimizer={'sgd' if i < 2 else 'adam'}"], metrics)
    write_summary(tmp_path)
    assert_real_png(tmp_path / "summary.png")
    assert all(group_curve(g) is None for g in summarize(tmp_path).groups)


def test_nothing_succeeded_still_writes_all_files(tmp_path):
    make_job(tmp_path, ["activation=bad"], {"status": "failed: boom"})
    make_job(tmp_path, ["seed=2"], None)
    paths = write_summary(tmp_path)
    assert all(p.exists() for p in paths)
    md = (tmp_path / "summary.md").read_text()
    assert "2 jobs, 0 completed, 2 failed" in md and "## Failures" in md
    assert_real_png(tmp_path / "summary.png")


def test_many_groups_and_malformed_metrics_do_not_raise(tmp_path):
    for i in range(10):  # enough groups to move the legend below the axes
        make_job(tmp_path, [f"model.hidden={i}", "optimizer=sgd"], completed(0.5 + i / 100, 0.5 + i / 100))
    make_job(tmp_path, ["weird=list"], "[1, 2, 3]")
    logs = tmp_path / "model.hidden=0,optimizer=sgd" / "logs"  # a logger's own metrics.json is not a job
    logs.mkdir()
    (logs / "metrics.json").write_text("{}")
    make_job(
        tmp_path,
        ["weird=types"],
        {
            "status": "completed\nwith newline",
            "test/acc": "high",
            "epochs": None,
            "members": [3, {"seed": "x", "test/acc": "high"}],
            "history": {"epoch": [1, 2], "val/acc": ["x", float("nan"), 0.5], "val/acc_members": "no"},
        },
    )
    make_job(
        tmp_path,
        ["weird=history"],
        {
            "status": "completed",
            "members": "not a list",
            "history": {"epoch": "x", "val/acc": [0.4, None], "val/acc_members": [[0.4, "x"], [], None]},
        },
    )
    rows = collect(tmp_path)
    assert len(rows) == 13
    by_job = {r["job"]: r for r in rows}
    assert by_job["weird=list"]["status"].startswith("unreadable metrics.json: expected a JSON object")
    assert by_job["weird=types"]["test/acc"] is None
    assert by_job["weird=types"]["status"] == "completed with newline"
    assert rows[0]["job"] == "model.hidden=9,optimizer=sgd"
    summary = summarize(tmp_path)
    assert len(summary.groups) == 13
    write_summary(tmp_path)
    assert_real_png(tmp_path / "summary.png")
    assert "- `weird=types`: completed with newline" in (tmp_path / "summary.md").read_text()

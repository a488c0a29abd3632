"""The results as the one table `scripts/benchmark.py` prints (`format_table`)."""

from __future__ import annotations

from typing import Any


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_bytes(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.2f} MiB"


def format_table(r: dict[str, Any]) -> str:
    """The results as one table: key, configuration, the two sides, ratio, target and PASS/MISS."""
    verdict: dict[str, list[dict]] = {}
    for t in r["targets"]:
        verdict.setdefault(t["label"], []).append(t)
    rows: list[tuple[str, ...]] = [("key", "config", "A", "B", "A/B", "target", "", "others")]

    def others(raw: dict) -> str:  # other processes' share of the CPUs while this row was measured
        share = raw.get("other_processes_cpu_share", -1)
        return "" if share < 0 else f"{share:.0%}"

    def target_cells(*labels: str) -> tuple[str, str]:
        ts = [t for lab in labels for t in verdict.get(lab, [])]
        if not ts:
            return "", ""
        return " & ".join(t["target"] for t in ts), "PASS" if all(t["pass"] for t in ts) else "MISS"

    for dev, figs in r["manual_vs_reference_step"].items():
        for name, ratio in figs.items():
            raw = r["manual_vs_reference_step_raw"][dev][name]
            labels = [f"manual_vs_reference_step {dev} {name}"] if dev == "cpu" else []
            rows.append(
                (
                    f"manual_vs_reference_step [{dev}]",
                    name,
                    "manual " + _fmt_s(raw["manual_median_s"]),
                    "reference " + _fmt_s(raw["reference_median_s"]),
                    f"{ratio:.3f}",
                    *target_cells(*labels),
                    others(raw),
                )
            )
    for dev, figs in r.get("population_vs_single_step", {}).items():
        for name, ratio in figs.items():
            raw = r["population_vs_single_step_raw"][dev][name]
            members = name.rsplit("/N", 1)[-1]
            rows.append(
                (
                    f"population_vs_single_step [{dev}]",
                    f"{name} per member-step",
                    f"N={members} " + _fmt_s(raw["population_per_member_median_s"]),
                    "single " + _fmt_s(raw["single_median_s"]),
                    f"{ratio:.3f}",
                    *target_cells(f"population_vs_single_step {dev} {name} (per member-step)"),
                    others(raw),
                )
            )
            rows.append(
                (
                    "  (the whole population's step)",
                    name,
                    f"N={members} " + _fmt_s(raw["population_step_median_s"]),
                    "single " + _fmt_s(raw["single_median_s"]),
                    f"{raw['population_step_vs_single_step']:.3f}",
                    "",
                    "",
                )
            )
    for key, variant in (
        ("manual_vs_reference_saved_bytes", "dedup"),
        ("manual_vs_reference_saved_bytes_excl_params", "dedup_excl_params"),
    ):
        for name, ratio in r[key].items():
            raw = r["manual_vs_reference_saved_bytes_raw"][name]
            rows.append(
                (
                    key,
                    name,
                    "manual " + _fmt_bytes(raw["manual"][variant]),
                    "reference " + _fmt_bytes(raw["reference"][variant]),
                    f"{ratio:.3f}",
                    *target_cells(f"{key} {name}"),
                )
            )
    for name, raw in r["manual_vs_reference_saved_bytes_raw"].items():
        for variant in ("naive", "naive_excl_params", "dedup_activations"):
            rows.append(
                (
                    f"  (saved bytes, {variant})",
                    name,
                    "manual " + _fmt_bytes(raw["manual"][variant]),
                    "reference " + _fmt_bytes(raw["reference"][variant]),
                    f"{raw['ratios'][variant]:.3f}",
                    "",
                    "",
                )
            )
    for dev, figs in r["lightning_vs_plain_epoch"].items():
        for bs, ratio in figs.items():
            raw = r["lightning_vs_plain_epoch_raw"][dev][bs]
            rows.append(
                (
                    f"lightning_vs_plain_epoch [{dev}]",
                    f"784-30-10/{bs} ({raw['steps_per_epoch']} steps)",
                    "lightning " + _fmt_s(raw["lightning_median_s"]),
                    "bare " + _fmt_s(raw["plain_median_s"]),
                    f"{ratio:.3f}",
                    *target_cells(f"lightning_vs_plain_epoch {dev} {bs}"),
                    others(raw),
                )
            )
            rows.append(
                (
                    "  (per step: overhead)",
                    f"784-30-10/{bs}",
                    f"lightning {raw['lightning_us_per_step']:.1f} us",
                    f"bare {raw['plain_us_per_step']:.1f} us",
                    f"{raw['overhead_us_per_step']:+.1f} us",
                    "",
                    "",
                )
            )
            rows.append(
                (
                    "  (Lightning's floor)",
                    f"784-30-10/{bs}",
                    f"bare Trainer {raw['floor_us_per_step']:.1f} us",
                    f"bare {raw['plain_us_per_step']:.1f} us",
                    f"{raw['floor_vs_plain']:.3f}",
                    "",
                    "",
                )
            )
    text = r["textbook_vs_project_epoch_raw"]
    for dev, ratio in r["textbook_vs_project_epoch"].items():
        rows.append(
            (
                f"textbook_vs_project_epoch [{dev}]",
                "784-30-10/b10",
                "network.py " + _fmt_s(text["epoch_median_s"]),
                "project " + _fmt_s(text["project_epoch_median_s"][dev]),
                f"{ratio:.2f}",
                *target_cells(f"textbook_vs_project_epoch {dev} b10"),
                others(text),
            )
        )
    for name, e in r.get("cuda_throughput", {}).items():
        rows.append(
            (
                "cuda samples/s",
                name,
                f"manual {e['manual']['samples_per_s']:,.0f}",
                f"reference {e['reference']['samples_per_s']:,.0f}",
                f"{e['manual_over_reference_samples_per_s']:.3f}",
                "",
                "",
            )
        )
        rows.append(
            (
                "cuda peak memory",
                name,
                "manual " + _fmt_bytes(e["manual"]["peak_bytes"]),
                "reference " + _fmt_bytes(e["reference"]["peak_bytes"]),
                f"{e['manual_over_reference_peak_bytes']:.3f}",
                "",
                "",
            )
        )

    rows = [row + ("",) * (len(rows[0]) - len(row)) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    m, d = r["machine"], r["data"]
    passed = sum(t["pass"] for t in r["targets"])
    head = [
        f"data: {d['source']} ({d['n_train']} training images)",
        f"machine: {m['cpu_count']} CPUs ({m['cpu_name']}), device {m['device_name']}, torch {m['torch_version']}, "
        f"{m['torch_num_threads']} threads, load average {m['loadavg_before']} before, {m['loadavg_after']} after",
        f"noise: other processes used {m['other_processes_cpu_share']:.0%} of the CPUs during the run (column"
        " 'others': during that row); above ~10% the times are disturbed, with 2 threads badly: rerun, or --threads 1",
        f"figures: {r['settings']['figure']}; {r['settings']['repeats']} step repeats, "
        f"{r['settings']['epoch_repeats']} epoch repeats"
        + (" (TINY: the figures mean nothing)" if r["settings"]["tiny"] else ""),
        "",
    ]
    met = f"targets met: {passed} of {len(r['targets'])}" if r["targets"] else "targets: none (they are CPU targets)"
    tail = ["", f"{met}   ({r['elapsed_s']:.0f} s)"]
    return "\n".join(head + lines + tail)

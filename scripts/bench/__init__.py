"""Speed and memory measurements behind `scripts/benchmark.py` (kept here so the script stays thin).

Every comparison runs its two sides in the same process, interleaved A B A B ... after a warm-up,
and keeps every raw time; the figure reported is a ratio of medians (see `Pair`).

    step_pair            one SGD step (forward, cost, backward, step, zero_grad): ManualMLP vs ReferenceMLP
    population_pair      a population's step per member vs one network's step
    saved_bytes          bytes autograd saves for backward in one forward (saved_tensors_hooks)
    epoch_pair           one epoch through the project's Lightning path vs a bare PyTorch loop
    TextbookNetwork      Nielsen's network.py (NumPy, per-example backprop), for the textbook comparison
    cuda_throughput      samples/s and peak memory on a GPU

Nothing here asserts a figure: machines are noisy; `targets()` only labels PASS/MISS.

    settings    configurations, models, cost, learning rate, Budget
    timing      Pair, interleave, calibrate
    system      the machine and the load of other processes
    data        Data and load_data (Fashion-MNIST or synthetic)
    step        step_pair, saved_bytes
    population  population_pair
    epoch       epoch_pair (Lightning vs bare loop vs Lightning's floor)
    textbook    TextbookNetwork, textbook_epoch_seconds
    cuda        cuda_throughput
    table       format_table
    (here)      targets, resolve_device and run, which does every measurement
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.cuda import cuda_throughput
from bench.data import Data, load_data
from bench.epoch import epoch_pair
from bench.population import population_pair
from bench.settings import COST, CUDA_CONFIGS, LR, MODELS, POPULATION_CONFIGS, STEP_CONFIGS, Budget
from bench.step import make_model, saved_bytes, step_pair
from bench.system import OtherLoad, loadavg, machine
from bench.table import format_table
from bench.textbook import TextbookNetwork, textbook_epoch_seconds
from bench.timing import Pair, interleave

__all__ = [
    "CUDA_CONFIGS",
    "STEP_CONFIGS",
    "Budget",
    "Data",
    "Pair",
    "Target",
    "TextbookNetwork",
    "cuda_throughput",
    "format_table",
    "interleave",
    "load_data",
    "make_model",
    "resolve_device",
    "run",
    "saved_bytes",
    "targets",
]


@dataclass
class Target:
    label: str
    value: float
    op: str  # "<=" or ">="
    bound: float

    @property
    def ok(self) -> bool:
        return self.value <= self.bound if self.op == "<=" else self.value >= self.bound

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "target": f"{self.op} {self.bound}", "pass": self.ok}


def targets(results: dict[str, Any]) -> list[Target]:
    """The targets, all on CPU: step ratio <= 0.7 (784-30-10/b10) and <= 1.0 everywhere, saved bytes <= 0.75
    (every storage autograd keeps, counted once), Lightning/bare <= 1.5 at b10 and <= 1.3 at b100,
    textbook/project >= 3. The other saved-bytes countings are printed beside them as information."""
    out: list[Target] = []
    if "cpu" not in results["manual_vs_reference_step"]:
        return out  # a GPU-only run
    steps = results["manual_vs_reference_step"]["cpu"]
    out.append(Target("manual_vs_reference_step cpu 784-30-10/b10", steps["784-30-10/b10"], "<=", 0.7))
    out += [Target(f"manual_vs_reference_step cpu {k}", v, "<=", 1.0) for k, v in steps.items()]
    out += [
        Target(f"manual_vs_reference_saved_bytes {k}", v, "<=", 0.75)
        for k, v in results["manual_vs_reference_saved_bytes"].items()
    ]
    for k, v in results.get("population_vs_single_step", {}).get("cpu", {}).items():
        out.append(Target(f"population_vs_single_step cpu {k} (per member-step)", v, "<=", 0.4))
    epochs = results["lightning_vs_plain_epoch"]["cpu"]
    for k, bound in (("b10", 1.5), ("b100", 1.3)):
        if k in epochs:
            out.append(Target(f"lightning_vs_plain_epoch cpu {k}", epochs[k], "<=", bound))
    out.append(Target("textbook_vs_project_epoch cpu b10", results["textbook_vs_project_epoch"]["cpu"], ">=", 3.0))
    return out


# ----------------------------------------------------------------------------- the whole run


DEVICES = {"cpu": ["cpu"], "cuda": ["cuda"], "both": ["cpu", "cuda"]}


def resolve_device(device: str) -> list[str]:
    """cpu | cuda | both | auto -> the devices measured; auto is both with a GPU, else cpu.
    Asking for cuda without a GPU is a ValueError."""
    if device == "auto":
        device = "both" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r} (choose cpu, cuda, both or auto)")
    if "cuda" in DEVICES[device] and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available (use --device cpu or auto)")
    return DEVICES[device]


def run(budget: Budget, device: str = "auto", log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every measurement; returns the JSON-ready results (figures under the keys, raw times beside them).

    The targets are CPU targets: a GPU-only run (`device="cuda"`) labels none. Saved bytes and the
    textbook's NumPy epoch are measured on the CPU whatever the device.
    """
    t_start = time.perf_counter()
    devices = resolve_device(device)
    load_before = loadavg()
    whole_run, phase = OtherLoad(), OtherLoad()
    data = load_data(budget.epoch_train_size)
    log(f"data: {data.source} ({len(data.x)} training images)")
    r: dict[str, Any] = {}

    r["manual_vs_reference_step"], r["manual_vs_reference_step_raw"] = {}, {}
    for dev in devices:
        r["manual_vs_reference_step"][dev], r["manual_vs_reference_step_raw"][dev] = {}, {}
        for name, (sizes, bs) in STEP_CONFIGS.items():
            phase.reset()
            pair, n, function = step_pair(sizes, bs, data, budget, dev)
            r["manual_vs_reference_step"][dev][name] = pair.ratio
            r["manual_vs_reference_step_raw"][dev][name] = {
                **pair.as_dict(),
                "steps_per_repeat": n,
                "other_processes_cpu_share": phase.share(),
                "manual_function_s": function,
                "manual_function_vs_reference": statistics.median(function) / statistics.median(pair.b),
            }
            log(
                f"step {dev} {name}: manual {pair.ratio:.3f} x reference (spread {pair.spread:.0%},"
                f" other processes {phase.share():.0%} of the CPUs)"
            )

    r["population_vs_single_step"], r["population_vs_single_step_raw"] = {}, {}
    for dev in devices:
        r["population_vs_single_step"][dev], r["population_vs_single_step_raw"][dev] = {}, {}
        for name, (sizes, bs, members) in POPULATION_CONFIGS[dev].items():
            phase.reset()
            per_member, whole, n = population_pair(sizes, bs, members, data, budget, dev)
            r["population_vs_single_step"][dev][name] = per_member.ratio
            r["population_vs_single_step_raw"][dev][name] = {
                **per_member.as_dict(),
                "population_step_vs_single_step": whole.ratio,
                "population_step_median_s": statistics.median(whole.a),
                "steps_per_repeat": n,
                "other_processes_cpu_share": phase.share(),
            }
            log(
                f"population {dev} {name}: {per_member.ratio:.3f} x a single run's time per member-step,"
                f" the whole step {whole.ratio:.2f} x (spread {per_member.spread:.0%})"
            )

    r["manual_vs_reference_saved_bytes"], r["manual_vs_reference_saved_bytes_excl_params"] = {}, {}
    r["manual_vs_reference_saved_bytes_raw"] = {}
    for name, (sizes, bs) in STEP_CONFIGS.items():
        x, y = data.batches(bs, 1)[0]
        counts = {k: saved_bytes(make_model(k, sizes), x, y) for k in MODELS}
        variants = ("naive", "dedup", "dedup_excl_params", "dedup_activations", "naive_excl_params")
        raw = {**counts, "ratios": {v: counts["manual"][v] / counts["reference"][v] for v in variants}}
        r["manual_vs_reference_saved_bytes"][name] = raw["ratios"]["dedup"]
        r["manual_vs_reference_saved_bytes_excl_params"][name] = raw["ratios"]["dedup_excl_params"]
        r["manual_vs_reference_saved_bytes_raw"][name] = raw
    log("saved bytes: done")

    r["lightning_vs_plain_epoch"], r["lightning_vs_plain_epoch_raw"] = {}, {}
    for dev in devices:
        r["lightning_vs_plain_epoch"][dev], r["lightning_vs_plain_epoch_raw"][dev] = {}, {}
        for bs in budget.epoch_batch_sizes:
            phase.reset()
            pair, steps, bar, floor = epoch_pair(data, bs, budget, dev)
            overhead = (statistics.median(pair.a) - statistics.median(pair.b)) / steps * 1e6
            floor_s = statistics.median(floor)
            r["lightning_vs_plain_epoch"][dev][f"b{bs}"] = pair.ratio
            r["lightning_vs_plain_epoch_raw"][dev][f"b{bs}"] = {
                **pair.as_dict(),
                "steps_per_epoch": steps,
                "overhead_us_per_step": overhead,
                "lightning_us_per_step": statistics.median(pair.a) / steps * 1e6,
                "plain_us_per_step": statistics.median(pair.b) / steps * 1e6,
                "progress_bar": bar,
                "floor_s": floor,
                "floor_median_s": floor_s,
                "floor_us_per_step": floor_s / steps * 1e6,
                "floor_vs_plain": floor_s / statistics.median(pair.b),
                "project_overhead_above_floor_us_per_step": (statistics.median(pair.a) - floor_s) / steps * 1e6,
                "other_processes_cpu_share": phase.share(),
            }
            log(
                f"epoch {dev} b{bs}: lightning {pair.ratio:.3f} x bare loop, {overhead:+.0f} us/step"
                f" (other processes {phase.share():.0%} of the CPUs)"
            )

    phase.reset()
    text = textbook_epoch_seconds(data, budget)
    text["other_processes_cpu_share"] = phase.share()
    r["textbook_vs_project_epoch"] = {}
    for dev in devices:
        project = statistics.median(r["lightning_vs_plain_epoch_raw"][dev]["b10"]["lightning_s"])
        r["textbook_vs_project_epoch"][dev] = text["epoch_median_s"] / project
    r["textbook_vs_project_epoch_raw"] = {
        **text,
        "project_epoch_median_s": {
            dev: statistics.median(r["lightning_vs_plain_epoch_raw"][dev]["b10"]["lightning_s"]) for dev in devices
        },
    }
    log(
        "textbook: "
        + ", ".join(
            f"{ratio:.2f} x the project's epoch on {dev}" for dev, ratio in r["textbook_vs_project_epoch"].items()
        )
    )

    if "cuda" in devices:
        r["cuda_throughput"] = cuda_throughput(data, budget)
        log("cuda throughput: done")

    r["data"] = {
        "source": data.source,
        "synthetic": data.synthetic,
        "n_train": len(data.x),
        "full_fashion_mnist": not data.synthetic and len(data.x) == 60_000,
    }
    r["machine"] = {
        **machine(devices),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "other_processes_cpu_share": whole_run.share(),
    }
    r["settings"] = {
        "tiny": budget.tiny,
        "repeats": budget.repeats,
        "warmup": budget.warmup,
        "epoch_repeats": budget.epoch_repeats,
        "step_repeat_s": budget.step_repeat_s,
        "textbook_batches": budget.textbook_batches,
        "lr": LR,
        "cost": COST,
        "figure": "ratio of medians of interleaved repeats (A B A B ...) after warm-up",
    }
    r["targets"] = [t.as_dict() for t in targets(r)]
    r["elapsed_s"] = time.perf_counter() - t_start
    return r

"""GPU throughput and peak memory, ManualMLP vs ReferenceMLP at batch 1000 (`cuda_throughput`)."""

from __future__ import annotations

import gc
import statistics
from typing import Any

import torch

from bench.data import Data
from bench.settings import CUDA_CONFIGS, MODELS, Budget
from bench.step import make_model, make_step
from bench.timing import interleave, steps_timer, sync


def cuda_throughput(data: Data, budget: Budget, device: str = "cuda") -> dict[str, Any]:
    """Samples/s (interleaved manual/reference, medians) and peak memory (`torch.cuda.max_memory_allocated`,
    reset before each model's steps) per model at batch 1000. `device` is for tests only."""
    dev = torch.device(device)
    out: dict[str, Any] = {}
    for name, (sizes, bs) in CUDA_CONFIGS.items():
        batches = data.batches(bs, 4, dev)
        steps = {k: make_step(make_model(k, sizes, dev)) for k in MODELS}
        timers = {k: steps_timer(steps[k], batches, budget.cuda_repeat_steps, dev) for k in MODELS}
        for k in MODELS:
            timers[k]()
        tp = interleave(timers["manual"], timers["reference"], budget.repeats, budget.warmup, ("manual", "reference"))
        entry: dict[str, Any] = {}
        for k, times in (("manual", tp.a), ("reference", tp.b)):
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            for x, y in batches[:3]:
                steps[k](x, y)
            sync(dev)
            peak = torch.cuda.max_memory_allocated(dev)
            entry[k] = {
                "samples_per_s": bs / statistics.median(times),
                "peak_bytes": peak,
                "peak_above_resident_bytes": max(peak - base, 1),
            }
        m, ref = entry["manual"], entry["reference"]
        entry["manual_over_reference_samples_per_s"] = m["samples_per_s"] / ref["samples_per_s"]
        entry["manual_over_reference_peak_bytes"] = m["peak_bytes"] / ref["peak_bytes"]
        out[name] = entry
    return out

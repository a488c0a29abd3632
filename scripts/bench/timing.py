"""How one comparison is timed: both sides in the same process, interleaved A B A B ... after a
warm-up, every raw time kept (`Pair`, `interleave`), and steps per repeat calibrated to a duration."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Pair:
    """Interleaved timings of two sides: `a[i]` and `b[i]` were measured back to back."""

    a_name: str
    b_name: str
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """median(a) / median(b): the figure reported."""
        return statistics.median(self.a) / statistics.median(self.b)

    @property
    def paired_ratio(self) -> float:
        """median of a[i] / b[i]: the same figure, more robust to slow drift of the machine's load."""
        return statistics.median(x / y for x, y in zip(self.a, self.b))

    @property
    def spread(self) -> float:
        """Largest relative interquartile-ish spread ((max - min) / median) of the two sides."""
        return max((max(v) - min(v)) / statistics.median(v) for v in (self.a, self.b))

    def as_dict(self, unit: str = "s") -> dict[str, Any]:
        return {
            f"{self.a_name}_{unit}": self.a,
            f"{self.b_name}_{unit}": self.b,
            f"{self.a_name}_median_{unit}": statistics.median(self.a),
            f"{self.b_name}_median_{unit}": statistics.median(self.b),
            "ratio_of_medians": self.ratio,
            "median_paired_ratio": self.paired_ratio,
            "spread": self.spread,
        }


def interleave_all(fns: dict[str, Callable[[], float]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Rounds of every function in turn (A B C A B C ...): `warmup` untimed rounds, then `repeats` timed ones."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            gc.collect()
            t = fn()
            if r >= warmup:
                times[name].append(t)
    return times


def interleave(
    a: Callable[[], float], b: Callable[[], float], repeats: int, warmup: int, names: tuple[str, str]
) -> Pair:
    """Run a, b, a, b, ...: `warmup` untimed rounds, then `repeats` timed ones (each call returns seconds)."""
    times = interleave_all({names[0]: a, names[1]: b}, repeats, warmup)
    return Pair(*names, times[names[0]], times[names[1]])


def steps_timer(step: Callable, batches: list, n: int, device, cap_s: float = math.inf) -> Callable[[], float]:
    """A repeat: n steps, or fewer once cap_s seconds have passed (a loaded machine stalls); seconds per step."""

    def run() -> float:
        sync(device)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            step(*batches[done % len(batches)])
            done += 1
            if time.perf_counter() - t0 > cap_s:
                break
        sync(device)
        return (time.perf_counter() - t0) / done

    return run


def calibrate(step: Callable, batches: list, device, target_s: float, cap: int, floor: int = 1) -> int:
    """Steps per repeat so that one repeat lasts about target_s (at least floor, at most cap)."""
    if target_s <= 0:
        return max(1, min(cap, floor))
    n, elapsed = 1, 0.0
    while elapsed < 0.02 and n < cap:
        elapsed = steps_timer(step, batches, n, device)() * n
        if elapsed < 0.02:
            n *= 4
    per = min(steps_timer(step, batches, n, device)() for _ in range(3))  # the least disturbed probe
    return int(max(1, floor, min(cap, round(target_s / max(per, 1e-9)))))

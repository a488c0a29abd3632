"""The statistics every reported number carries: mean, standard deviation and the half-width of the
t-based 95% interval of the mean, over seeds (population members, or sweep jobs that differ only in
their seed). Free of torch, so that summarising a sweep stays quick."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats


def summary(values: Sequence[float]) -> dict[str, float | None]:
    """mean, std (n - 1) and the half-width of the t-based 95% interval of the mean; None where n is too small."""
    x = [v for v in values if v is not None and math.isfinite(v)]
    n = len(x)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = sum(x) / n
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    return {"mean": mean, "std": std, "ci95": float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n), "n": n}

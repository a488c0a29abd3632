"""The machine a benchmark ran on (`machine`, `cpu_name`) and how busy other work kept it
(`loadavg`, `OtherLoad`): the context needed to judge how noisy the figures are."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(devices: Iterable[str]) -> dict[str, Any]:
    import lightning

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_name": cpu_name(),
        "torch_version": torch.__version__,
        "lightning_version": lightning.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "torch_num_threads": torch.get_num_threads(),
        "devices": list(devices),
    }
    info["device_name"] = torch.cuda.get_device_name(0) if "cuda" in info["devices"] else info["cpu_name"]
    return info


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


class OtherLoad:
    """How busy the machine was with *other* processes since the last `reset()`: the CPU time every
    process used (/proc/stat) minus this process's own (getrusage), as a fraction of all cores.
    0 is a quiet machine; 0.5 means other work took half of every core. -1 where /proc/stat is missing."""

    def __init__(self) -> None:
        self.reset()

    @staticmethod
    def _busy_s() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        import resource

        u = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return u.ru_utime + u.ru_stime + c.ru_utime + c.ru_stime

    def reset(self) -> None:
        self._t, self._busy, self._own = time.perf_counter(), self._busy_s(), self._own_s()

    def share(self) -> float:
        busy = self._busy_s()
        wall = time.perf_counter() - self._t
        if busy is None or self._busy is None or wall <= 0:
            return -1.0
        others = (busy - self._busy) - (self._own_s() - self._own)
        return round(min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1)))), 3)

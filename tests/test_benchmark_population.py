"""The benchmark's population figure: the step LitMLP runs for population=N against one network's."""

from __future__ import annotations

import statistics

import pytest
import torch

import bench  # scripts/bench, on sys.path through conftest
from bench.population import population_pair


def test_population_pair_times_both_sides_and_divides_by_the_members():
    g = torch.Generator().manual_seed(0)
    data = bench.Data(torch.rand(200, 784, generator=g), torch.randint(0, 10, (200,), generator=g), "synthetic", True)
    per_member, whole, n = population_pair([784, 8, 10], 5, 4, data, bench.Budget.tiny_budget())
    assert n >= 1 and len(per_member.a) == len(per_member.b) == 3
    assert all(t > 0 for t in per_member.a + per_member.b)
    assert statistics.median(whole.a) == pytest.approx(4 * statistics.median(per_member.a))
    assert per_member.ratio == pytest.approx(whole.ratio / 4)


def test_the_population_target_is_labelled_per_member_step():
    results = {
        "manual_vs_reference_step": {"cpu": {"784-30-10/b10": 0.5}},
        "manual_vs_reference_saved_bytes": {},
        "population_vs_single_step": {"cpu": {"784-30-10/b10/N10": 0.45}},
        "lightning_vs_plain_epoch": {"cpu": {}},
        "textbook_vs_project_epoch": {"cpu": 3.5},
    }
    got = {t.label: t.ok for t in bench.targets(results)}
    assert got["population_vs_single_step cpu 784-30-10/b10/N10 (per member-step)"] is False  # 0.45 > 0.4

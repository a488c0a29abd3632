"""scripts/benchmark.py: the tiny run writes every key with positive numbers and prints the table;
the pieces it measures with (saved-bytes counting, the textbook network, the targets) are right.
Figures are never asserted: machines are noisy."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import json
import math
import re

import numpy as np
import pytest
import torch

import bench  # scripts/bench, on sys.path through conftest
from conftest import ROOT, run_in_process

STEP_NAMES = set(bench.STEP_CONFIGS)
KEYS = (
    "manual_vs_reference_step",
    "manual_vs_reference_saved_bytes",
    "manual_vs_reference_saved_bytes_excl_params",
    "population_vs_single_step",
    "lightning_vs_plain_epoch",
    "textbook_vs_project_epoch",
)


def leaves(node, path=""):
    """(path, value) for every non-container value below node."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, node


def is_positive_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _benchmark_main():
    """scripts/benchmark.py's main(argv), to run in this process."""
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module", autouse=True)
def frozen_gc():
    """The timings call gc.collect() before each repeat, which in a test process (torch, Lightning, every
    test module) takes ~0.5 s each. With the objects that exist now frozen out of the collector's way
    (gc.freeze), it takes milliseconds: figures are never asserted, so that changes nothing checked.
    What the benchmark imports as it goes (Lightning, the training code) is imported first, to be frozen too."""
    importlib.import_module("backprop_lab.training.train")
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, frozen_gc):
    """`scripts/benchmark.py --tiny --repeats 1 --json PATH`, its main(argv) run in this process (the
    real process is test_cuda_without_a_gpu_is_a_one_line_error's): (results, stdout)."""
    out = tmp_path_factory.mktemp("bench") / "b.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = _benchmark_main()(["--tiny", "--repeats", "1", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text()), stdout.getvalue()


def test_tiny_run_writes_every_key_with_positive_numbers(tiny):
    r, _ = tiny
    for key in KEYS:
        assert key in r, key
        values = list(leaves(r[key]))
        assert values, key
        bad = [(p, v) for p, v in values if not is_positive_number(v)]
        assert not bad, (key, bad)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    assert sorted(r["manual_vs_reference_step"]) == sorted(devices)
    for dev in devices:
        assert set(r["manual_vs_reference_step"][dev]) == STEP_NAMES
        assert set(r["population_vs_single_step"][dev]) == set(bench.POPULATION_CONFIGS[dev])
        assert set(r["lightning_vs_plain_epoch"][dev]) == {"b10", "b100"}
        assert dev in r["textbook_vs_project_epoch"]
    assert set(r["manual_vs_reference_saved_bytes"]) == STEP_NAMES
    assert set(r["manual_vs_reference_saved_bytes_excl_params"]) == STEP_NAMES
    if torch.cuda.is_available():
        tp = r["cuda_throughput"]
        assert set(tp) == set(bench.CUDA_CONFIGS)
        assert all(is_positive_number(v) for _, v in leaves(tp))


def test_tiny_run_keeps_raw_times_and_describes_data_and_machine(tiny):
    r, _ = tiny
    raw = r["manual_vs_reference_step_raw"]["cpu"]["784-30-10/b10"]
    assert len(raw["manual_s"]) == len(raw["reference_s"]) >= 1
    assert all(is_positive_number(t) for t in raw["manual_s"] + raw["reference_s"])
    ep = r["lightning_vs_plain_epoch_raw"]["cpu"]["b10"]
    assert ep["steps_per_epoch"] >= 1 and isinstance(ep["overhead_us_per_step"], float)
    saved = r["manual_vs_reference_saved_bytes_raw"]["784-30-10/b10"]
    for side in ("manual", "reference"):
        assert saved[side]["naive"] >= saved[side]["dedup"] >= saved[side]["dedup_excl_params"] > 0
    assert r["data"]["n_train"] > 0 and isinstance(r["data"]["synthetic"], bool) and r["data"]["source"]
    m = r["machine"]
    assert m["cpu_count"] >= 1 and m["torch_num_threads"] >= 1 and m["torch_version"] == torch.__version__
    assert m["device_name"]
    assert r["settings"]["tiny"] is True
    assert r["targets"] and all(isinstance(t["pass"], bool) for t in r["targets"])


def test_tiny_run_prints_the_table(tiny):
    r, stdout = tiny
    for key in KEYS:
        assert key in stdout, key
    for name in STEP_NAMES:
        assert name in stdout
    verdicts = [line for line in stdout.splitlines() if re.search(r"\s(PASS|MISS)\s", line + " ")]
    assert len(verdicts) == 2 * len(STEP_NAMES) + 1 + 2 + 1  # step, saved-bytes, population, epoch, textbook rows
    assert "targets met:" in stdout and "data:" in stdout and "machine:" in stdout


def test_cuda_without_a_gpu_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = run_in_process("scripts/benchmark.py", "--tiny", "--device", "cuda")
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr


def test_device_choice_names_the_devices_measured(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.resolve_device("auto") == bench.resolve_device("cpu") == ["cpu"]
    for device in ("cuda", "both"):
        with pytest.raises(ValueError, match="no CUDA device"):
            bench.resolve_device(device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.resolve_device("auto") == bench.resolve_device("both") == ["cpu", "cuda"]
    assert bench.resolve_device("cuda") == ["cuda"]
    with pytest.raises(ValueError, match="choose cpu, cuda, both or auto"):
        bench.resolve_device("tpu")


def test_a_gpu_only_run_labels_no_targets(tiny):
    r, _ = tiny
    gpu_only = {**r, "manual_vs_reference_step": {"cuda": r["manual_vs_reference_step"]["cpu"]}}
    assert bench.targets(gpu_only) == []
    gpu_only = json.loads(json.dumps(r).replace('"cpu":', '"cuda":'))  # every per-device key on the GPU
    gpu_only["targets"] = bench.targets(gpu_only)
    table = bench.format_table(gpu_only)
    assert "[cuda]" in table and "[cpu]" not in table and "targets: none (they are CPU targets)" in table
    assert len(bench.targets(r)) == 1 + 2 * len(STEP_NAMES) + 1 + 2 + 1  # b10, steps, bytes, population, epochs, text


def test_saved_bytes_deduplicates_storages_and_can_exclude_parameters():
    class SaveTwice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, x, w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, _, w = ctx.saved_tensors
            return g * w, g * x

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(4, 3))

        def forward(self, x):
            return SaveTwice.apply(x, self.w)

        def loss(self, z, y, cost):
            return z.sum()

    x = torch.randn(4, 3)
    counts = bench.saved_bytes(Net(), x, torch.zeros(4, dtype=torch.long))
    assert counts["n_packed"] == 3 and counts["n_storages"] == 2
    assert counts["naive"] == 3 * 48 and counts["dedup"] == 2 * 48
    assert counts["dedup_excl_params"] == 48 and counts["dedup_activations"] == 0
    assert counts["naive_excl_params"] == 2 * 48


def test_saved_bytes_sees_both_models_save_their_activations():
    x, y = torch.rand(5, 784), torch.randint(0, 10, (5,))
    for kind in ("manual", "reference"):
        counts = bench.saved_bytes(bench.make_model(kind, [784, 30, 10]), x, y)
        assert counts["dedup_excl_params"] >= x.nbytes + 5 * 30 * 4, kind  # at least a^0 and a^1


def test_textbook_network_backprop_matches_autograd():
    net = bench.TextbookNetwork([6, 5, 3], seed=1)
    rng = np.random.default_rng(2)
    x, y = rng.random((6, 1)), np.eye(3)[:, [1]]
    nabla_b, nabla_w = net.backprop(x, y)
    Ws = [torch.tensor(w, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in net.biases]
    a = torch.tensor(x)
    for W, b in zip(Ws, bs):
        a = torch.sigmoid(W @ a + b)
    (0.5 * ((a - torch.tensor(y)) ** 2).sum()).backward()  # network.py's quadratic cost
    for ours, t in zip(nabla_w + nabla_b, Ws + bs):
        np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_textbook_epoch_learns():
    rng = np.random.default_rng(0)
    centers = rng.random((3, 784))
    labels = rng.integers(0, 3, 300)
    data = [(centers[c].reshape(784, 1) + 0.05 * rng.standard_normal((784, 1)), np.eye(10)[:, [c]]) for c in labels]
    net = bench.TextbookNetwork([784, 30, 10], seed=0)
    accuracy = lambda: np.mean([net.feedforward(x).argmax() == y.argmax() for x, y in data])
    before = accuracy()
    for _ in range(3):
        assert net.SGD_epoch(data, 10, 3.0) == 30
    assert accuracy() > max(before, 0.8)


def test_targets_label_pass_and_miss():
    steps = dict.fromkeys(STEP_NAMES, 0.5)
    steps["784-100-10/b10"] = 1.2
    r = {
        "manual_vs_reference_step": {"cpu": steps},
        "manual_vs_reference_saved_bytes": dict.fromkeys(STEP_NAMES, 0.7),
        "manual_vs_reference_saved_bytes_excl_params": dict.fromkeys(STEP_NAMES, 0.8),
        "lightning_vs_plain_epoch": {"cpu": {"b10": 1.4, "b100": 1.4}},
        "textbook_vs_project_epoch": {"cpu": 2.0},
    }
    got: dict[str, list[bool]] = {}
    for t in bench.targets(r):
        got.setdefault(t.label, []).append(t.ok)
    assert got["manual_vs_reference_step cpu 784-30-10/b10"] == [True, True]  # <= 0.7 and <= 1.0
    assert got["manual_vs_reference_step cpu 784-100-10/b10"] == [False]
    assert got["manual_vs_reference_saved_bytes 784-30-10/b10"] == [True]
    assert "manual_vs_reference_saved_bytes_excl_params 784-30-10/b10" not in got  # information, not a target
    assert got["lightning_vs_plain_epoch cpu b10"] == [True] and got["lightning_vs_plain_epoch cpu b100"] == [False]
    assert got["textbook_vs_project_epoch cpu b10"] == [False]
    steps["784-30-10/b10"] = 0.8
    assert [t.ok for t in bench.targets(r) if t.label.endswith("step cpu 784-30-10/b10")] == [False, True]


def test_pair_ratio_is_a_ratio_of_medians():
    p = bench.Pair("a", "b", a=[1.0, 2.0, 30.0], b=[1.0, 1.0, 1.0])
    assert p.ratio == 2.0 and p.paired_ratio == 2.0
    assert bench.interleave(lambda: 2.0, lambda: 4.0, 5, 1, ("x", "y")).ratio == 0.5


def test_cuda_throughput_keys_and_arithmetic(monkeypatch):
    """The CUDA measurement's logic, run on the CPU with the allocator statistics faked (no GPU here)."""
    peaks = iter([5_000_000, 4_000_000, 9_000_000, 8_000_000])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda dev=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 1_000_000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda dev=None: next(peaks))
    x, y = torch.rand(40, 784), torch.randint(0, 10, (40,))
    data = bench.Data(x, y, "test", True)
    budget = bench.Budget(repeats=1, warmup=0, cuda_repeat_steps=1)
    out = bench.cuda_throughput(data, budget, device="cpu")
    assert set(out) == set(bench.CUDA_CONFIGS)
    first = out["784-100-10/b1000"]
    assert first["manual"]["peak_bytes"] == 5_000_000 and first["reference"]["peak_bytes"] == 4_000_000
    assert first["manual"]["peak_above_resident_bytes"] == 4_000_000
    assert first["manual_over_reference_peak_bytes"] == 1.25
    assert all(is_positive_number(v) for _, v in leaves(out))


def test_without_fashion_mnist_the_data_is_synthetic_and_says_so(monkeypatch):
    from backprop_lab.data import FashionMNISTDataModule

    monkeypatch.setattr(FashionMNISTDataModule, "_locate", lambda self: None)  # as if not installed
    data = bench.load_data(train_size=200)
    assert data.synthetic and "synthetic" in data.source
    assert data.x.shape == (200, 784) and data.x.dtype == torch.float32 and data.x.min() >= 0 and data.x.max() <= 1
    assert data.datamodule.train_x is data.x  # the Lightning epochs read the same tensors
    full = bench.load_data()
    assert len(full.x) == 60_000

"""Speed and memory measurements behind `scripts/benchmark.py` (kept here so the script stays thin).

Every comparison runs its two sides in the same process, interleaved A B A B ... after a warm-up,
and keeps every raw time; the figure reported is a ratio of medians (see `Pair`).

    step_pair            one SGD step (forward, cost, backward, step, zero_grad): ManualMLP vs ReferenceMLP
    saved_bytes          bytes autograd saves for backward in one forward (saved_tensors_hooks)
    epoch_pair           one epoch through the project's Lightning path vs a bare PyTorch loop
    TextbookNetwork      Nielsen's network.py (NumPy, per-example backprop), for the textbook comparison
    cuda_throughput      samples/s and peak memory on a GPU

Nothing here asserts a figure: machines are noisy; `targets()` only labels PASS/MISS.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from backprop_lab.models import ManualMLP, ReferenceMLP

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
COST = "cross_entropy"
LR = 0.5  # conf/optimizer/sgd.yaml's lr, so both sides of every comparison take the project's step

# name -> (sizes, batch size): the configurations of the step and saved-bytes comparisons
STEP_CONFIGS: dict[str, tuple[list[int], int]] = {
    "784-30-10/b10": ([784, 30, 10], 10),
    "784-30-10/b100": ([784, 30, 10], 100),
    "784-30-10/b1000": ([784, 30, 10], 1000),
    "784-100-10/b10": ([784, 100, 10], 10),
    "784-100-100-100-100-10/b10": ([784, 100, 100, 100, 100, 10], 10),
}
CUDA_CONFIGS: dict[str, tuple[list[int], int]] = {
    "784-100-10/b1000": ([784, 100, 10], 1000),
    "784-1000-1000-10/b1000": ([784, 1000, 1000, 10], 1000),
}
MODELS = {"manual": ManualMLP, "reference": ReferenceMLP}


@dataclass
class Budget:
    """How much work each measurement does. `tiny()` is for tests: every key, almost no work."""

    repeats: int = 15  # timed repeats per side (medians over these)
    warmup: int = 2  # untimed repeats per side first
    step_repeat_s: float = 0.1  # target seconds per timed repeat of the step comparison
    max_steps: int = 100_000  # cap on steps per repeat
    min_steps: int = 20  # floor on steps per repeat (a stall during calibration must not leave 1)
    epoch_train_size: int | None = None  # None: the whole training set
    epoch_batch_sizes: tuple[int, ...] = (10, 100)
    epoch_repeats: int = 5  # timed Lightning/bare epoch pairs per batch size
    epoch_warmup: int = 1  # untimed pairs first
    pool: int = 8  # distinct batches cycled through by the step comparison
    textbook_batches: int = 1000  # mini-batches of 10 per timed textbook repeat (scaled up to an epoch)
    cuda_repeat_steps: int = 50
    tiny: bool = False

    @classmethod
    def tiny_budget(cls) -> "Budget":
        return cls(repeats=3, warmup=1, step_repeat_s=0.0, max_steps=2, min_steps=1, epoch_train_size=200,
                   textbook_batches=5, cuda_repeat_steps=2, epoch_repeats=1, epoch_warmup=0, pool=1, tiny=True)


# ----------------------------------------------------------------------------- timing helpers


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


def interleave(a: Callable[[], float], b: Callable[[], float], repeats: int, warmup: int,
               names: tuple[str, str]) -> Pair:
    """Run a, b, a, b, ...: `warmup` untimed rounds, then `repeats` timed ones (each call returns seconds)."""
    times = interleave_all({names[0]: a, names[1]: b}, repeats, warmup)
    return Pair(*names, times[names[0]], times[names[1]])


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """Training images (N, 784) float32 in [0, 1] and labels (N,) int64, and what they are."""

    x: Tensor
    y: Tensor
    source: str
    synthetic: bool
    datamodule: Any = None  # the project's data module that holds them (None: synthetic)

    def batches(self, batch_size: int, n: int, device: torch.device | str = "cpu",
                seed: int = 0) -> list[tuple[Tensor, Tensor]]:
        """n distinct random batches, gathered (copied) like InMemoryLoader does, on `device`."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            idx = torch.randint(0, len(self.x), (batch_size,), generator=g)
            out.append((self.x[idx].to(device), self.y[idx].to(device)))
        return out


def synthetic_images(n: int = 60_000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n random uint8 28x28 images and labels 0..9 (the fallback when Fashion-MNIST is missing)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def load_data(train_size: int | None = None) -> Data:
    """Full Fashion-MNIST (all 60,000 training images: val_size=0) when installed, else 60,000 synthetic ones.

    The project's own `FashionMNISTDataModule` reads it (no download is attempted); the same data
    module then serves the Lightning epochs, so every comparison sees the same tensors.
    """
    from backprop_lab.data import DataError, FashionMNISTDataModule, InMemoryDataModule

    try:
        dm = FashionMNISTDataModule(val_size=0, test_size=100, train_size=train_size, download=False)
        dm.setup("fit")
        what = ("the full Fashion-MNIST training set" if train_size is None
                else f"{len(dm.train_y)} Fashion-MNIST training images")
        return Data(dm.train_x, dm.train_y, f"{dm.source}: {what}", False, dm)
    except DataError:
        pass

    class SyntheticDataModule(InMemoryDataModule):
        def _load(self):
            x, y = synthetic_images()
            return "synthetic", self.classes, self._holdout((x, y), (x[:100], y[:100]), 0)

    dm = SyntheticDataModule(val_size=0, train_size=train_size)
    dm.setup("fit")
    what = "synthetic: 60,000 random uint8 images, random labels (Fashion-MNIST not installed)"
    return Data(dm.train_x, dm.train_y, what if train_size is None else f"{what}, {len(dm.train_y)} of them", True, dm)


# ----------------------------------------------------------------------------- one training step


def make_model(kind: str, sizes: Sequence[int], device: torch.device | str = "cpu", seed: int = 0) -> nn.Module:
    """ManualMLP or ReferenceMLP: sigmoid hidden, softmax output; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return MODELS[kind](list(sizes), "sigmoid", "softmax").to(device)


def make_step(model: nn.Module, lr: float = LR, autograd: bool = False) -> Callable[[Tensor, Tensor], Tensor]:
    """One training step as `LitMLP` runs it on one device: `model.backprop` (forward, cost, backward:
    the hand-written pass without a graph for ManualMLP, autograd for ReferenceMLP), then
    torch.optim.SGD's step and zero_grad. `autograd=True`: `loss(model(x)).backward()` instead
    (for ManualMLP, the autograd Function path that DDP uses)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step(x: Tensor, y: Tensor) -> Tensor:
        if autograd:
            C = model.loss(model(x), y, COST)
            C.backward()
        else:
            C, _ = model.backprop(x, y, COST)
        opt.step()
        opt.zero_grad()
        return C

    return step


def _steps_timer(step: Callable, batches: list, n: int, device, cap_s: float = math.inf) -> Callable[[], float]:
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
        elapsed = _steps_timer(step, batches, n, device)() * n
        if elapsed < 0.02:
            n *= 4
    per = min(_steps_timer(step, batches, n, device)() for _ in range(3))  # the least disturbed probe
    return int(max(1, floor, min(cap, round(target_s / max(per, 1e-9)))))


def step_pair(sizes: Sequence[int], batch_size: int, data: Data, budget: Budget, device="cpu") -> tuple[Pair, int, list[float]]:
    """Seconds per training step, manual vs reference, interleaved; returns the pair, the steps per
    repeat, and the manual model's autograd-Function path timed in the same rounds."""
    batches = data.batches(batch_size, budget.pool, device)
    steps = {k: make_step(make_model(k, sizes, device)) for k in MODELS}
    steps["manual_function"] = make_step(make_model("manual", sizes, device), autograd=True)
    for k in steps:  # warm each up (allocator, kernels, lazy state) before calibrating
        for x, y in batches:
            steps[k](x, y)
    n = calibrate(steps["manual"], batches, device, budget.step_repeat_s, budget.max_steps, budget.min_steps)
    cap = 4 * budget.step_repeat_s if budget.step_repeat_s > 0 else math.inf
    times = interleave_all({k: _steps_timer(f, batches, n, device, cap) for k, f in steps.items()},
                           budget.repeats, budget.warmup)
    return Pair("manual", "reference", times["manual"], times["reference"]), n, times["manual_function"]


# ----------------------------------------------------------------------------- saved tensors


def saved_bytes(model: nn.Module, x: Tensor, y: Tensor, cost: str = COST) -> dict[str, int]:
    """What autograd keeps for backward in one forward + cost, from `saved_tensors_hooks`.

    Each packed tensor is counted by its storage's `nbytes()`:
      naive                 the plain sum over every packed tensor (a storage saved twice counts twice)
      dedup                 each storage once (by data_ptr): the memory actually held
      dedup_excl_params     dedup without the parameters' storages (weights exist anyway: not extra)
      dedup_activations     dedup_excl_params without the input batch x and the labels y either
      naive_excl_params     naive without the parameters' storages (each activation as often as it is saved)
    x and y must own their storages (a slice of the whole data set would count the data set).
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    inputs = {t.untyped_storage().data_ptr() for t in (x, y)}
    packed: list[tuple[int, int]] = []

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        packed.append((s.data_ptr(), s.nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        C = model.loss(model(x), y, cost)
    del C
    unique = dict(packed)
    return {
        "n_packed": len(packed),
        "n_storages": len(unique),
        "naive": sum(n for _, n in packed),
        "dedup": sum(unique.values()),
        "dedup_excl_params": sum(n for p, n in unique.items() if p not in params),
        "dedup_activations": sum(n for p, n in unique.items() if p not in params and p not in inputs),
        "naive_excl_params": sum(n for p, n in packed if p not in params),
    }


# ----------------------------------------------------------------------------- Lightning epoch vs bare loop


def compose_train_cfg(out_dir: str | Path, batch_size: int, train_size: int | None, accelerator: str):
    """conf/train.yaml as train.py composes it: 784-30-10 ManualMLP, SGD, one epoch, no validation or test."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import backprop_lab.config  # noqa: F401  (registers the resolvers train.yaml uses)

    overrides = [
        "data=fashion_mnist", "data.val_size=0", f"data.batch_size={batch_size}", "data.download=false",
        f"data.train_size={'null' if train_size is None else train_size}",
        "model=manual", "model.hidden=[30]", "optimizer=sgd", "scheduler=none",
        "trainer.max_epochs=1", f"trainer.accelerator={accelerator}", "+trainer.limit_val_batches=0",
        "trainer.enable_model_summary=false", "test=false",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return cfg


def _epoch_timer_callback(device):
    import lightning as L

    class EpochTimer(L.Callback):
        """Seconds from on_train_epoch_start to on_train_epoch_end (validation is off), and the steps."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.steps = 0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            sync(device)
            self._t0 = time.perf_counter()
            self._step0 = trainer.global_step

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            sync(device)
            self.seconds.append(time.perf_counter() - self._t0)
            self.steps = trainer.global_step - self._step0

    return EpochTimer()


def lightning_epoch(data: Data, batch_size: int, device: str, train_size: int | None,
                    seed: int = 42) -> tuple[float, int, bool]:
    """One epoch through the project's path: `build_module` + `build_trainer` (default callbacks, TensorBoard
    logging, checkpointing) + `trainer.fit` with the data module, as `train(cfg)` does; only the training
    epoch is timed. Returns (seconds, steps, progress bar shown)."""
    import logging

    from backprop_lab import config
    from backprop_lab.training import build_module, build_trainer

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-lightning-") as out:
        cfg = compose_train_cfg(out, batch_size, train_size, "gpu" if device == "cuda" else "cpu")
        config.check(cfg)
        dm = data.datamodule
        config.check_batch_size(batch_size, dm.sizes["train"])
        dm.batch_size = batch_size  # the data module rebuilds its loader for the new batch size
        torch.manual_seed(seed)
        module = build_module(cfg, dm.n_features, dm.n_classes)
        trainer = build_trainer(cfg, Path(out))[0]  # (trainer, checkpoint, history, ...)
        timer = _epoch_timer_callback(device)
        trainer.callbacks.append(timer)
        with warnings.catch_warnings():  # no validation, hence no val/acc to monitor; tiny epochs log rarely
            warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 on torch 2.14, every fit
            trainer.fit(module, datamodule=dm)
        bar = trainer.progress_bar_callback is not None
    return timer.seconds[0], timer.steps, bar


def plain_epoch(data: Data, batch_size: int, device: str, seed: int = 42) -> tuple[float, int]:
    """The same epoch as a bare loop: ManualMLP 784-30-10, SGD(lr=0.5), the same InMemoryLoader batches,
    and the same step as LitMLP's (`make_step`: `backprop`, optimizer step, zero_grad)."""
    from backprop_lab.data import InMemoryLoader

    x, y = data.datamodule.train_x.to(device), data.datamodule.train_y.to(device)
    loader = InMemoryLoader(x, y, batch_size, shuffle=True, seed=data.datamodule.seed)  # epoch 0's order
    step = make_step(make_model("manual", [784, 30, 10], device, seed))
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for xb, yb in loader:
        step(xb, yb)
        n += 1
    sync(device)
    return time.perf_counter() - t0, n


def floor_epoch(data: Data, batch_size: int, device: str, seed: int = 42) -> tuple[float, int]:
    """Lightning's own floor per training_step: the same epoch through a bare Trainer (no logger, no
    checkpointing, no callbacks but the timer), automatic optimization, one mini-batch per
    training_step whose only work is the cost. Not a target: it shows what Lightning costs per call,
    which the project pays once per block of mini-batches instead (data.batches_per_block)."""
    import lightning as L

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model("manual", [784, 30, 10], seed=seed)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.net.loss(self.net(x), y, COST)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    dm = data.datamodule
    dm.batch_size, batches_per_block, dm.batches_per_block = batch_size, dm.batches_per_block, None  # one mini-batch per training_step
    timer = _epoch_timer_callback(device)
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=1, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(Bare(), datamodule=dm)
    dm.batches_per_block = batches_per_block
    return timer.seconds[0], timer.steps


def epoch_pair(data: Data, batch_size: int, budget: Budget, device: str = "cpu") -> tuple[Pair, int, bool, list[float]]:
    """Lightning epoch vs bare epoch, interleaved; each Lightning epoch is a fresh max_epochs=1 fit.
    Also times Lightning's floor (`floor_epoch`) in the same rounds; returns its times last."""
    info: dict[str, Any] = {}

    def a() -> float:
        s, info["steps"], info["bar"] = lightning_epoch(data, batch_size, device, budget.epoch_train_size)
        return s

    def b() -> float:
        s, info["plain_steps"] = plain_epoch(data, batch_size, device)
        return s

    def c() -> float:
        s, info["floor_steps"] = floor_epoch(data, batch_size, device)
        return s

    times = interleave_all({"lightning": a, "plain": b, "floor": c}, budget.epoch_repeats, budget.epoch_warmup)
    if not info["steps"] == info["plain_steps"] == info["floor_steps"]:
        raise RuntimeError(f"Lightning ran {info['steps']} steps, the bare loop {info['plain_steps']},"
                           f" the bare Trainer {info['floor_steps']}")
    return Pair("lightning", "plain", times["lightning"], times["plain"]), info["steps"], info["bar"], times["floor"]


# ----------------------------------------------------------------------------- the textbook (Nielsen's network.py)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class TextbookNetwork:
    """network.py from Nielsen's "Neural Networks and Deep Learning", ch. 1 (NumPy, one example at a time).

    Column vectors, N(0, 1) weights and biases, sigmoid everywhere, quadratic cost; a mini-batch
    is a list of (x (784, 1), y (10, 1)) pairs, each backpropagated on its own and the nablas summed.
    """

    def __init__(self, sizes: Sequence[int], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.sizes = list(sizes)
        self.biases = [rng.standard_normal((y, 1)) for y in sizes[1:]]
        self.weights = [rng.standard_normal((y, x)) for x, y in zip(sizes[:-1], sizes[1:])]

    def feedforward(self, a: np.ndarray) -> np.ndarray:
        for b, w in zip(self.biases, self.weights):
            a = _sigmoid(np.dot(w, a) + b)
        return a

    def SGD_epoch(self, training_data: list, mini_batch_size: int, eta: float, max_batches: int | None = None) -> int:
        """One epoch of network.py's SGD (shuffle, slice, update); `max_batches` stops early. Returns batches run."""
        random.shuffle(training_data)
        n = len(training_data)
        mini_batches = [training_data[k : k + mini_batch_size] for k in range(0, n, mini_batch_size)]
        for mini_batch in mini_batches[:max_batches]:
            self.update_mini_batch(mini_batch, eta)
        return len(mini_batches[:max_batches])

    def update_mini_batch(self, mini_batch: list, eta: float) -> None:
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = _sigmoid(z)
            activations.append(activation)
        delta = self.cost_derivative(activations[-1], y) * _sigmoid_prime(zs[-1])
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, len(self.sizes)):
            z = zs[-l]
            sp = _sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w

    def cost_derivative(self, output_activations: np.ndarray, y: np.ndarray) -> np.ndarray:
        return output_activations - y


def _sigmoid_prime(z: np.ndarray) -> np.ndarray:
    return _sigmoid(z) * (1 - _sigmoid(z))


def textbook_data(x: Tensor, y: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """mnist_loader.load_data_wrapper's format: x as float32 (784, 1), y as a float64 (10, 1) one-hot."""
    xs = x.cpu().numpy().astype(np.float32)
    out = []
    for i, label in enumerate(y.cpu().tolist()):
        e = np.zeros((10, 1))
        e[label] = 1.0
        out.append((xs[i].reshape(784, 1), e))
    return out


def textbook_epoch_seconds(data: Data, budget: Budget, batch_size: int = 10, eta: float = 3.0) -> dict[str, Any]:
    """Seconds per textbook epoch over the full training set, from repeats of `textbook_batches` mini-batches
    scaled up to ceil(N / batch_size) mini-batches (plus the epoch's shuffle, timed on its own)."""
    training = textbook_data(data.x, data.y)
    net = TextbookNetwork([784, 30, 10])
    random.seed(0)
    n_batches = math.ceil(len(training) / batch_size)
    k = min(budget.textbook_batches, n_batches)
    per_batch: list[float] = []
    shuffles: list[float] = []
    for r in range(budget.warmup + budget.repeats):
        t0 = time.perf_counter()
        random.shuffle(training)
        t1 = time.perf_counter()
        for j in range(k):
            net.update_mini_batch(training[j * batch_size : (j + 1) * batch_size], eta)
        t2 = time.perf_counter()
        if r >= budget.warmup:
            shuffles.append(t1 - t0)
            per_batch.append((t2 - t1) / k)
    epochs = [s + p * n_batches for s, p in zip(shuffles, per_batch)]
    return {"epoch_s": epochs, "epoch_median_s": statistics.median(epochs), "batches_per_repeat": k,
            "batches_per_epoch": n_batches, "per_batch_median_s": statistics.median(per_batch),
            "sizes": [784, 30, 10], "cost": "quadratic", "activation": "sigmoid"}


# ----------------------------------------------------------------------------- CUDA


def cuda_throughput(data: Data, budget: Budget, device: str = "cuda") -> dict[str, Any]:
    """Samples/s (interleaved manual/reference, medians) and peak memory (`torch.cuda.max_memory_allocated`,
    reset before each model's steps) per model at batch 1000. `device` is for tests only."""
    dev = torch.device(device)
    out: dict[str, Any] = {}
    for name, (sizes, bs) in CUDA_CONFIGS.items():
        batches = data.batches(bs, 4, dev)
        steps = {k: make_step(make_model(k, sizes, dev)) for k in MODELS}
        timers = {k: _steps_timer(steps[k], batches, budget.cuda_repeat_steps, dev) for k in MODELS}
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
            entry[k] = {"samples_per_s": bs / statistics.median(times), "peak_bytes": peak,
                        "peak_above_resident_bytes": max(peak - base, 1)}
        m, ref = entry["manual"], entry["reference"]
        entry["manual_over_reference_samples_per_s"] = m["samples_per_s"] / ref["samples_per_s"]
        entry["manual_over_reference_peak_bytes"] = m["peak_bytes"] / ref["peak_bytes"]
        out[name] = entry
    return out


# ----------------------------------------------------------------------------- machine and targets


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
        "device_name": cpu_name(),
    }
    if "cuda" in info["devices"]:
        info["device_name"] = torch.cuda.get_device_name(0)
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
    steps = results["manual_vs_reference_step"]["cpu"]
    out.append(Target("manual_vs_reference_step cpu 784-30-10/b10", steps["784-30-10/b10"], "<=", 0.7))
    out += [Target(f"manual_vs_reference_step cpu {k}", v, "<=", 1.0) for k, v in steps.items()]
    out += [Target(f"manual_vs_reference_saved_bytes {k}", v, "<=", 0.75)
            for k, v in results["manual_vs_reference_saved_bytes"].items()]
    epochs = results["lightning_vs_plain_epoch"]["cpu"]
    for k, bound in (("b10", 1.5), ("b100", 1.3)):
        if k in epochs:
            out.append(Target(f"lightning_vs_plain_epoch cpu {k}", epochs[k], "<=", bound))
    out.append(Target("textbook_vs_project_epoch cpu b10", results["textbook_vs_project_epoch"]["cpu"], ">=", 3.0))
    return out


# ----------------------------------------------------------------------------- the whole run


def resolve_device(device: str) -> str:
    """cpu | cuda | auto (cuda when available) -> cpu | cuda; cuda without a GPU is a ValueError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r} (choose cpu, cuda or auto)")
    return device


def run(budget: Budget, device: str = "auto", log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every measurement; returns the JSON-ready results (figures under the keys, raw times beside them).

    CPU is always measured (the targets are CPU targets); CUDA as well when `device` resolves to cuda.
    """
    t_start = time.perf_counter()
    device = resolve_device(device)
    devices = ["cpu"] + (["cuda"] if device == "cuda" else [])
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
                **pair.as_dict(), "steps_per_repeat": n, "other_processes_cpu_share": phase.share(),
                "manual_function_s": function, "manual_function_vs_reference": statistics.median(function) / statistics.median(pair.b)}
            log(f"step {dev} {name}: manual {pair.ratio:.3f} x reference (spread {pair.spread:.0%},"
                f" other processes {phase.share():.0%} of the CPUs)")

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
                **pair.as_dict(), "steps_per_epoch": steps, "overhead_us_per_step": overhead,
                "lightning_us_per_step": statistics.median(pair.a) / steps * 1e6,
                "plain_us_per_step": statistics.median(pair.b) / steps * 1e6, "progress_bar": bar,
                "floor_s": floor, "floor_median_s": floor_s, "floor_us_per_step": floor_s / steps * 1e6,
                "floor_vs_plain": floor_s / statistics.median(pair.b),
                "project_overhead_above_floor_us_per_step": (statistics.median(pair.a) - floor_s) / steps * 1e6,
                "other_processes_cpu_share": phase.share()}
            log(f"epoch {dev} b{bs}: lightning {pair.ratio:.3f} x bare loop, {overhead:+.0f} us/step"
                f" (other processes {phase.share():.0%} of the CPUs)")

    phase.reset()
    text = textbook_epoch_seconds(data, budget)
    text["other_processes_cpu_share"] = phase.share()
    r["textbook_vs_project_epoch"] = {}
    for dev in devices:
        project = statistics.median(r["lightning_vs_plain_epoch_raw"][dev]["b10"]["lightning_s"])
        r["textbook_vs_project_epoch"][dev] = text["epoch_median_s"] / project
    r["textbook_vs_project_epoch_raw"] = {**text, "project_epoch_median_s": {
        dev: statistics.median(r["lightning_vs_plain_epoch_raw"][dev]["b10"]["lightning_s"]) for dev in devices}}
    log(f"textbook: {r['textbook_vs_project_epoch']['cpu']:.2f} x the project's epoch")

    if "cuda" in devices:
        r["cuda_throughput"] = cuda_throughput(data, budget)
        log("cuda throughput: done")

    r["data"] = {"source": data.source, "synthetic": data.synthetic, "n_train": len(data.x),
                 "full_fashion_mnist": not data.synthetic and len(data.x) == 60_000}
    r["machine"] = {**machine(devices), "loadavg_before": load_before, "loadavg_after": loadavg(),
                    "other_processes_cpu_share": whole_run.share()}
    r["settings"] = {"tiny": budget.tiny, "repeats": budget.repeats, "warmup": budget.warmup,
                     "epoch_repeats": budget.epoch_repeats, "step_repeat_s": budget.step_repeat_s,
                     "textbook_batches": budget.textbook_batches, "lr": LR, "cost": COST,
                     "figure": "ratio of medians of interleaved repeats (A B A B ...) after warm-up"}
    r["targets"] = [t.as_dict() for t in targets(r)]
    r["elapsed_s"] = time.perf_counter() - t_start
    return r


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_bytes(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.2f} MiB"


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
            rows.append((f"manual_vs_reference_step [{dev}]", name, "manual " + _fmt_s(raw["manual_median_s"]),
                         "reference " + _fmt_s(raw["reference_median_s"]), f"{ratio:.3f}", *target_cells(*labels),
                         others(raw)))
    for key, variant in (("manual_vs_reference_saved_bytes", "dedup"),
                         ("manual_vs_reference_saved_bytes_excl_params", "dedup_excl_params")):
        for name, ratio in r[key].items():
            raw = r["manual_vs_reference_saved_bytes_raw"][name]
            rows.append((key, name, "manual " + _fmt_bytes(raw["manual"][variant]),
                         "reference " + _fmt_bytes(raw["reference"][variant]), f"{ratio:.3f}",
                         *target_cells(f"{key} {name}")))
    for name, raw in r["manual_vs_reference_saved_bytes_raw"].items():
        for variant in ("naive", "naive_excl_params", "dedup_activations"):
            rows.append((f"  (saved bytes, {variant})", name, "manual " + _fmt_bytes(raw["manual"][variant]),
                         "reference " + _fmt_bytes(raw["reference"][variant]), f"{raw['ratios'][variant]:.3f}", "", ""))
    for dev, figs in r["lightning_vs_plain_epoch"].items():
        for bs, ratio in figs.items():
            raw = r["lightning_vs_plain_epoch_raw"][dev][bs]
            rows.append((f"lightning_vs_plain_epoch [{dev}]", f"784-30-10/{bs} ({raw['steps_per_epoch']} steps)",
                         "lightning " + _fmt_s(raw["lightning_median_s"]), "bare " + _fmt_s(raw["plain_median_s"]),
                         f"{ratio:.3f}", *target_cells(f"lightning_vs_plain_epoch {dev} {bs}"), others(raw)))
            rows.append(("  (per step: overhead)", f"784-30-10/{bs}",
                         f"lightning {raw['lightning_us_per_step']:.1f} us", f"bare {raw['plain_us_per_step']:.1f} us",
                         f"{raw['overhead_us_per_step']:+.1f} us", "", ""))
            rows.append(("  (Lightning's floor)", f"784-30-10/{bs}", f"bare Trainer {raw['floor_us_per_step']:.1f} us",
                         f"bare {raw['plain_us_per_step']:.1f} us", f"{raw['floor_vs_plain']:.3f}", "", ""))
    text = r["textbook_vs_project_epoch_raw"]
    for dev, ratio in r["textbook_vs_project_epoch"].items():
        rows.append((f"textbook_vs_project_epoch [{dev}]", "784-30-10/b10",
                     "network.py " + _fmt_s(text["epoch_median_s"]),
                     "project " + _fmt_s(text["project_epoch_median_s"][dev]), f"{ratio:.2f}",
                     *target_cells(f"textbook_vs_project_epoch {dev} b10"), others(text)))
    for name, e in r.get("cuda_throughput", {}).items():
        rows.append(("cuda samples/s", name, f"manual {e['manual']['samples_per_s']:,.0f}",
                     f"reference {e['reference']['samples_per_s']:,.0f}",
                     f"{e['manual_over_reference_samples_per_s']:.3f}", "", ""))
        rows.append(("cuda peak memory", name, "manual " + _fmt_bytes(e["manual"]["peak_bytes"]),
                     "reference " + _fmt_bytes(e["reference"]["peak_bytes"]),
                     f"{e['manual_over_reference_peak_bytes']:.3f}", "", ""))

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
    tail = ["", f"targets met: {passed} of {len(r['targets'])}   ({r['elapsed_s']:.0f} s)"]
    return "\n".join(head + lines + tail)

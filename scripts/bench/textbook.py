"""The textbook comparison: Nielsen's network.py (NumPy, per-example backprop) ported as
`TextbookNetwork`, and its epoch time over the same training set (`textbook_epoch_seconds`)."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from bench.data import Data
from bench.settings import Budget


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
    return {
        "epoch_s": epochs,
        "epoch_median_s": statistics.median(epochs),
        "batches_per_repeat": k,
        "batches_per_epoch": n_batches,
        "per_batch_median_s": statistics.median(per_batch),
        "sizes": [784, 30, 10],
        "cost": "quadratic",
        "activation": "sigmoid",
    }

"""The two networks: `ManualMLP` (hand-written backprop) and `ReferenceMLP` (autograd).

Both map x (B, sizes[0]) to z^L (B, sizes[-1]) and keep the output activation and the cost in
`loss`/`predict`, so the same cost code serves both. They build their layers in the same order
with the same initialisation, so the same seed gives the same weights, and their state_dicts
have the same keys (`0.weight`, `0.bias`, `2.weight`, ...: nn.Sequential's numbering), so a
checkpoint of one loads into the other.

Populations: `ManualMLP.stack(nets)` / `ReferenceMLP.stack(nets)` make one module of N networks
of one architecture, with every W^l stacked to (N, n_l, n_(l-1)) and b^l to (N, n_l) under the
same names; member k starts as nets[k]. The manual population runs the same hand-written passes
with a leading member dimension; the reference population runs the ReferenceMLP per member through
torch.func (`stack_module_state`, `functional_call`, `vmap`). Inputs are (N, B, n_0), a member's
own mini-batch each, or (B, n_0) shared by all; costs come back one per member, (N,).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from backprop_lab.core import activations, backprop, costs


def _normal(W: Tensor, b: Tensor) -> None:  # the book's ch. 1 init: N(0, 1) weights and biases
    nn.init.normal_(W)
    nn.init.normal_(b)


def _scaled(W: Tensor, b: Tensor) -> None:  # the book's ch. 3 init: N(0, 1/n_in) weights
    nn.init.normal_(W, std=1 / math.sqrt(W.shape[1]))
    nn.init.normal_(b)


def _xavier(W: Tensor, b: Tensor) -> None:
    nn.init.xavier_uniform_(W)
    nn.init.zeros_(b)


def _kaiming(W: Tensor, b: Tensor) -> None:
    nn.init.kaiming_normal_(W, nonlinearity="relu")
    nn.init.zeros_(b)


INITS: dict[str, Callable[[Tensor, Tensor], None] | None] = {
    "pytorch": None,  # nn.Linear's own reset_parameters
    "normal": _normal,
    "scaled": _scaled,
    "xavier": _xavier,
    "kaiming": _kaiming,
}


def check_architecture(sizes: Sequence[int], activation: str, output: str, init: str) -> list[int]:
    """Validate the constructor arguments shared by both models; returns sizes as ints."""
    sizes = [int(n) for n in sizes]
    if len(sizes) < 2 or any(n < 1 for n in sizes):
        raise ValueError(f"sizes must be at least [inputs, outputs] with every size >= 1, got {sizes}")
    activations.hidden(activation)
    activations.check_output(output)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r} (choose one of: {', '.join(INITS)})")
    return sizes


def _linears(sizes: Sequence[int], init: str) -> list[nn.Linear]:
    layers = [nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    if INITS[init] is not None:
        with torch.no_grad():
            for layer in layers:
                INITS[init](layer.weight, layer.bias)
    return layers


class _MLPMixin:
    """What both models share: the output activation, the cost, the predictions, populations."""

    sizes: list[int]
    activation: str
    output: str
    init: str
    members: int | None = None  # None: one network; N: a population of N

    @classmethod
    def stack(cls, nets: Sequence[nn.Module]):
        """A population whose member k starts as nets[k] (one architecture; the nets are not changed)."""
        first = nets[0]
        if any((n.sizes, n.activation, n.output) != (first.sizes, first.activation, first.output) for n in nets):
            raise ValueError("a population needs networks of one architecture, activation and output")
        stacked, _ = torch.func.stack_module_state(list(nets))  # {"0.weight": (N, n_1, n_0), ...}
        population = copy.deepcopy(first)
        for name, p in stacked.items():
            module, leaf = name.rsplit(".", 1)
            setattr(population.get_submodule(module), leaf, nn.Parameter(p.detach()))
        population.members = len(nets)
        return population

    def member(self, k: int):
        """Member k of a population as a standalone network, with a copy of its weights."""
        if self.members is None:
            raise ValueError("member() needs a population (made by stack())")
        net = copy.deepcopy(self)
        for name, p in self.named_parameters():
            module, leaf = name.rsplit(".", 1)
            setattr(net.get_submodule(module), leaf, nn.Parameter(p.detach()[k].clone()))
        net.members = None
        return net

    def predict_proba(self, x: Tensor) -> Tensor:
        """a^L: class probabilities for softmax, per-class sigmoids for sigmoid outputs."""
        return activations.output(self(x), self.output)

    def extra_repr(self) -> str:
        members = f", members={self.members}" if self.members is not None else ""
        return (
            f"sizes={self.sizes}, activation={self.activation!r}, output={self.output!r}, init={self.init!r}{members}"
        )


class ManualMLP(_MLPMixin, nn.Module):
    """An MLP whose every gradient comes from the hand-written delta equations (backprop.py, costs.py)."""

    def __init__(self, sizes: Sequence[int], activation="sigmoid", output="softmax", init="pytorch") -> None:
        super().__init__()
        self.sizes = check_architecture(sizes, activation, output, init)
        self.activation, self.output, self.init = activation, output, init
        # The nn.Linear modules only hold W^l (weight) and b^l (bias); they are never called.
        self.layers = _linears(self.sizes, init)  # a plain list: registered once, below
        for l, layer in enumerate(self.layers):
            self.add_module(str(2 * l), layer)

    @property
    def W(self) -> list[Tensor]:
        """[W^1, ..., W^L], each (n_l, n_(l-1))."""
        return [layer.weight for layer in self.layers]

    @property
    def b(self) -> list[Tensor]:
        """[b^1, ..., b^L], each (n_l,)."""
        return [layer.bias for layer in self.layers]

    def _inputs(self, x: Tensor, Ws: list[Tensor], bs: list[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """x flattened and [W^l], [b^l], in float32 under autocast (the textbook math never runs in
        half precision: both passes cast the way torch.amp.custom_fwd(cast_inputs=float32) would).
        A population takes (N, B, n_0) or shared (B, n_0) rows; anything else is a batch of images."""
        if x.shape[-1] != self.sizes[0] or x.dim() > (3 if self.members else 2):
            x = x.flatten(1)
        if torch.is_autocast_enabled(x.device.type):
            x, Ws, bs = x.float(), [W.float() for W in Ws], [b.float() for b in bs]
        return x, Ws, bs

    def forward(self, x: Tensor) -> Tensor:
        x, Ws, bs = self._inputs(x, self.W, self.b)
        with backprop.without_autocast(x.device.type):
            return backprop.Backprop.apply(x, self.activation, *(p for W, b in zip(Ws, bs) for p in (W, b)))

    def loss(self, z: Tensor, y: Tensor, cost: str) -> Tensor:
        """C(a^L, y) with the hand-written base case delta^L (in float32 under autocast, like the forward)."""
        with backprop.without_autocast(z.device.type):
            return costs.manual_cost(z, y, cost, self.output)

    def backprop(self, x: Tensor, y: Tensor, cost: str) -> tuple[Tensor, Tensor]:
        """Forward, cost and backward of one mini-batch in one pass, without autograd: adds dC/dW^l and
        dC/db^l to each parameter's .grad as `loss(self(x), y, cost).backward()` would, through the
        same functions (identical gradients), without building a graph. Returns (C, z^L), detached."""
        costs.check(cost, self.output)
        W, b = self.W, self.b
        params = [p for W_l, b_l in zip(W, b) for p in (W_l, b_l)]
        with torch.no_grad():
            x, Ws, bs = self._inputs(x, W, b)
            with backprop.without_autocast(x.device.type):
                z, a = backprop.forward(x, Ws, bs, self.activation)  # z^L, [a^0..a^(L-1)]
                C, delta = costs.base_case(z, y, cost, self.output)  # delta^L
                needs = [p.requires_grad for p in params]
                grads, _ = backprop.backward(delta, a, Ws, self.activation, None if all(needs) else needs, release=True)
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g if g.dtype == p.dtype else g.to(p.dtype)
            else:
                p.grad += g
        return C, z


class ReferenceMLP(_MLPMixin, nn.Sequential):
    """The same network as a plain nn.Sequential of nn.Linear and activation modules, for autograd."""

    def __init__(self, sizes: Sequence[int], activation="sigmoid", output="softmax", init="pytorch") -> None:
        sizes = check_architecture(sizes, activation, output, init)
        modules: list[nn.Module] = []
        for layer in _linears(sizes, init):
            modules += [layer, activations.hidden(activation).module()]
        super().__init__(*modules[:-1])  # no activation after the last layer: it returns z^L
        self.sizes, self.activation, self.output, self.init = sizes, activation, output, init

    def forward(self, x: Tensor) -> Tensor:
        if self.members is None:
            return super().forward(x.flatten(1))
        if x.shape[-1] != self.sizes[0] or x.dim() > 3:
            x = x.flatten(1)
        run = lambda p, xb: torch.func.functional_call(self.template[0], p, (xb,))
        return torch.func.vmap(run, in_dims=(0, 0 if x.dim() == 3 else None))(dict(self.named_parameters()), x)

    def loss(self, z: Tensor, y: Tensor, cost: str) -> Tensor:
        if self.members is None:
            return costs.reference_cost(z, y, cost, self.output)
        per_member = lambda zk, yk: costs.reference_cost(zk, yk, cost, self.output)
        return torch.func.vmap(per_member, in_dims=(0, 0 if y.dim() == 2 else None))(z, y)  # (N,)

    @classmethod
    def stack(cls, nets: Sequence[nn.Module]) -> ReferenceMLP:
        population = super().stack(nets)
        population.template = [copy.deepcopy(nets[0]).to("meta")]  # one member's network, weights swapped in
        return population

    def backprop(self, x: Tensor, y: Tensor, cost: str) -> tuple[Tensor, Tensor]:
        """The same contract as ManualMLP.backprop, through autograd: (C, z^L), gradients in .grad."""
        z = self(x)
        C = self.loss(z, y, cost)
        C.sum().backward()  # a population's members add up: each gets the gradient of its own cost
        return C.detach(), z.detach()


MODELS = {"manual": ManualMLP, "reference": ReferenceMLP}

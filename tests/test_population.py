"""Populations in the core: N networks in one pass, each exactly as it would train alone."""

from __future__ import annotations

import pytest
import torch

from backprop_lab import ManualMLP, ReferenceMLP
from backprop_lab.core.backprop import Backprop
from backprop_lab.core.costs import base_case, manual_cost
from backprop_lab.data.loader import InMemoryLoader
from backprop_lab.training.members import clip_member_norms

N, B = 3, 7
SIZES = [12, 5, 4, 3]
CASES = [
    ("sigmoid", "softmax", "cross_entropy"),
    ("tanh", "sigmoid", "mse"),
    ("relu", "sigmoid", "cross_entropy"),
    ("sigmoid", "identity", "mse"),
    ("relu", "softmax", "mse"),
]


def _nets(model=ManualMLP, activation="sigmoid", output="softmax", dtype=torch.float64, n=N):
    nets = []
    for k in range(n):
        torch.manual_seed(10 + k)
        nets.append(model(SIZES, activation, output, init="normal").to(dtype))
    return nets


def _data(shared: bool = False, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    shape = (B, SIZES[0]) if shared else (N, B, SIZES[0])
    return torch.rand(shape, generator=g, dtype=dtype), torch.randint(0, SIZES[-1], shape[:-1], generator=g)


def _grads(net) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("activation,output,cost", CASES)
@pytest.mark.parametrize("shared", [False, True])
def test_a_manual_population_computes_what_each_member_computes_alone(activation, output, cost, shared):
    nets = _nets(ManualMLP, activation, output)
    population = ManualMLP.stack(nets)
    x, y = _data(shared)
    C, z = population.backprop(x, y, cost)
    assert C.shape == (N,) and z.shape == (N, B, SIZES[-1])
    for k, net in enumerate(nets):
        Ck, zk = net.backprop(x if shared else x[k], y if shared else y[k], cost)
        torch.testing.assert_close(C[k], Ck, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(z[k], zk, rtol=1e-12, atol=1e-14)
        for p, g in zip(population.parameters(), _grads(net)):
            torch.testing.assert_close(p.grad[k], g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation,output,cost", CASES)
def test_manual_and_reference_populations_give_identical_gradients(activation, output, cost):
    manual = ManualMLP.stack(_nets(ManualMLP, activation, output))
    reference = ReferenceMLP.stack(_nets(ReferenceMLP, activation, output))
    assert manual.state_dict().keys() == reference.state_dict().keys()
    for a, b in zip(manual.parameters(), reference.parameters()):
        assert torch.equal(a, b)  # the same seeds give the same members
    x, y = _data()
    C_m, z_m = manual.backprop(x, y, cost)  # the delta equations, no graph
    C_r, z_r = reference.backprop(x, y, cost)  # torch.func: vmap over functional_call, autograd
    torch.testing.assert_close(C_m, C_r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z_m, z_r, rtol=1e-10, atol=1e-12)
    for g_m, g_r in zip(_grads(manual), _grads(reference)):
        torch.testing.assert_close(g_m, g_r, rtol=1e-10, atol=1e-12)


def test_the_autograd_function_path_of_a_population_matches_its_direct_pass():
    """loss(model(x)).sum().backward() (the DDP path) goes through the same equations as backprop()."""
    direct, through_autograd = ManualMLP.stack(_nets()), ManualMLP.stack(_nets())
    x, y = _data()
    direct.backprop(x, y, "cross_entropy")
    through_autograd.loss(through_autograd(x), y, "cross_entropy").sum().backward()
    for a, b in zip(_grads(direct), _grads(through_autograd)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cost,output", [("cross_entropy", "softmax"), ("mse", "sigmoid")])
def test_the_population_functions_pass_gradcheck(cost, output):
    """Backprop and ManualCost with a member dimension: float64 gradcheck of C (N,) in x and every W, b."""
    params = [p.detach().requires_grad_() for p in ManualMLP.stack(_nets(output=output, n=2)).parameters()]
    x = torch.rand(2, 3, SIZES[0], dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, SIZES[-1], (2, 3))

    def C(x, *ps):
        return manual_cost(Backprop.apply(x, "tanh", *ps), y, cost, output)  # (2,)

    assert torch.autograd.gradcheck(C, (x, *params))


def test_members_come_out_as_they_went_in():
    nets = _nets(ReferenceMLP)
    population = ReferenceMLP.stack(nets)
    for k, net in enumerate(nets):
        alone = population.member(k)
        assert alone.members is None and type(alone) is ReferenceMLP
        for a, b in zip(alone.parameters(), net.parameters()):
            assert torch.equal(a, b) and a.shape == b.shape
    with pytest.raises(ValueError, match="one architecture"):
        ManualMLP.stack([*_nets(n=1), ManualMLP([12, 6, 3])])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "rmsprop", "adagrad"])
def test_elementwise_optimizers_step_each_member_as_alone(name):
    make = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
        "momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
        "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01),
        "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.1),
    }[name]
    nets = _nets()
    population = ManualMLP.stack(nets)
    opts = [make(net.parameters()) for net in nets]
    opt = make(population.parameters())
    x, y = _data()
    for _ in range(3):
        population.backprop(x, y, "cross_entropy")
        opt.step()
        opt.zero_grad()
        for k, (net, o) in enumerate(zip(nets, opts)):
            net.backprop(x[k], y[k], "cross_entropy")
            o.step()
            o.zero_grad()
    for k, net in enumerate(nets):
        for p, q in zip(population.parameters(), net.parameters()):
            torch.testing.assert_close(p[k], q, rtol=1e-12, atol=1e-14)


def test_a_shared_label_vector_gives_each_member_its_own_cost():
    z = torch.randn(N, B, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (B,))
    C, delta = base_case(z, y, "cross_entropy", "softmax")
    for k in range(N):
        Ck, dk = base_case(z[k], y, "cross_entropy", "softmax")
        torch.testing.assert_close(C[k], Ck)
        torch.testing.assert_close(delta[k], dk)


@pytest.mark.parametrize("block", [None, 3])
def test_a_population_loader_serves_each_member_the_order_of_its_own_seed(block):
    """Member k's mini-batches are those a run with seed + k sees, the partial last one included."""
    x, y = torch.arange(50.0).unsqueeze(1).expand(50, 3), torch.arange(50)
    population = InMemoryLoader(x, y, 4, shuffle=True, seed=5, members=N, block=block)
    alone = [list(InMemoryLoader(x, y, 4, shuffle=True, seed=5 + k)) for k in range(N)]
    steps = list(population) if block is None else [s for b in population for s in zip(b.x, b.y)]
    assert len(steps) == len(alone[0]) == 13
    for step, (xb, yb) in enumerate(steps):
        assert xb.shape[:2] == yb.shape[:2] == (N, len(alone[0][step][1]))
        for k in range(N):
            assert torch.equal(yb[k], alone[k][step][1]) and torch.equal(xb[k], alone[k][step][0])


def test_clipping_uses_each_members_own_norm():
    nets = _nets()
    population = ManualMLP.stack(nets)
    x, y = _data()
    population.backprop(x * 50, y, "mse")
    clip_member_norms([p.grad for p in population.parameters()], N, max_norm=0.01)
    for k, net in enumerate(nets):
        net.backprop(x[k] * 50, y[k], "mse")
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.01)
        for p, q in zip(population.parameters(), net.parameters()):
            torch.testing.assert_close(p.grad[k], q.grad, rtol=1e-10, atol=1e-14)

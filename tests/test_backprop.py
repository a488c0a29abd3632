"""The hand-written backward against finite differences (gradcheck) and against autograd (ReferenceMLP)."""

import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backprop_lab import ManualMLP, ReferenceMLP
from backprop_lab.core import backprop
from backprop_lab.core.backprop import Backprop
from backprop_lab.core.costs import manual_cost

HIDDEN = ["sigmoid", "tanh", "relu"]
COMBOS = [  # (output, cost): every pair the math defines
    ("softmax", "mse"),
    ("softmax", "cross_entropy"),
    ("sigmoid", "mse"),
    ("sigmoid", "cross_entropy"),
    ("identity", "mse"),
]


def assert_rel_close(actual, expected, rtol):
    """max |actual - expected| <= rtol * max |expected|: relative to the tensor's scale, not per entry."""
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"max error {err:.3g} > {rtol:g} * {scale:.3g}"


def twins(sizes, activation, output, dtype=torch.float64, init="pytorch"):
    """A ManualMLP and a ReferenceMLP with identical weights."""
    manual = ManualMLP(sizes, activation, output, init).to(dtype)
    reference = ReferenceMLP(sizes, activation, output, init).to(dtype)
    reference.load_state_dict(manual.state_dict())
    return manual, reference


def loss_and_grads(model, x, y, cost):
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    C = model.loss(model(x), y, cost)
    C.backward()
    return C.detach(), [p.grad.clone() for p in model.parameters()], x.grad


@pytest.mark.parametrize("hidden_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("output,cost", COMBOS)
def test_gradcheck(activation, output, cost, hidden_layers):
    torch.manual_seed(hidden_layers)
    sizes = [5] + [4] * hidden_layers + [3]
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (6,))
    params = [
        torch.randn(n_out, n_in, dtype=torch.float64, requires_grad=True)
        if k == 0
        else torch.randn(n_out, dtype=torch.float64, requires_grad=True)
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
        for k in (0, 1)
    ]

    def C(x, *params):
        return manual_cost(Backprop.apply(x, activation, *params), y, cost, output)

    assert torch.autograd.gradcheck(C, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("output,cost", COMBOS)
def test_cost_gradcheck_saturated(output, cost):
    """The base case alone, at logits large enough to saturate sigmoid and softmax."""
    z = (torch.randn(4, 3, dtype=torch.float64) * 30).requires_grad_(True)
    y = torch.randint(0, 3, (4,))
    assert torch.autograd.gradcheck(lambda z: manual_cost(z, y, cost, output), (z,), eps=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 12), min_size=0, max_size=4),
    n_in=st.integers(1, 20),
    n_out=st.integers(2, 10),
    batch=st.integers(1, 17),
    activation=st.sampled_from(HIDDEN),
    combo=st.sampled_from(COMBOS),
    seed=st.integers(0, 2**16),
)
def test_matches_autograd_float64(hidden, n_in, n_out, batch, activation, combo, seed):
    output, cost = combo
    torch.manual_seed(seed)
    manual, reference = twins([n_in, *hidden, n_out], activation, output)
    x = torch.randn(batch, n_in, dtype=torch.float64)
    y = torch.randint(0, n_out, (batch,))
    C_m, g_m, dx_m = loss_and_grads(manual, x, y, cost)
    C_r, g_r, dx_r = loss_and_grads(reference, x, y, cost)
    assert_rel_close(C_m, C_r, 1e-10)
    for gm, gr in zip(g_m, g_r):
        assert_rel_close(gm, gr, 1e-10)
    assert_rel_close(dx_m, dx_r, 1e-10)


@pytest.mark.parametrize("activation,combo", list(itertools.product(HIDDEN, COMBOS)))
def test_matches_autograd_float32_mnist_shape(activation, combo):
    output, cost = combo
    torch.manual_seed(0)
    manual, reference = twins([784, 30, 20, 10], activation, output, torch.float32)
    x = torch.rand(64, 784)
    y = torch.randint(0, 10, (64,))
    C_m, g_m, dx_m = loss_and_grads(manual, x, y, cost)
    C_r, g_r, dx_r = loss_and_grads(reference, x, y, cost)
    assert_rel_close(C_m, C_r, 1e-5)
    for gm, gr in zip(g_m, g_r):
        assert_rel_close(gm, gr, 1e-5)
    assert_rel_close(dx_m, dx_r, 1e-5)


def test_no_grad_for_inputs_that_do_not_need_it():
    """The backward computes gradients only where needs_input_grad says so."""
    manual = ManualMLP([6, 5, 4, 3]).double()
    manual.W[0].requires_grad_(False)
    x = torch.randn(3, 6, dtype=torch.float64)  # no requires_grad
    manual.loss(manual(x), torch.tensor([0, 1, 2]), "cross_entropy").backward()
    assert manual.W[0].grad is None
    assert manual.b[0].grad is not None and manual.W[2].grad is not None


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_one_optimizer_step_gives_same_weights(optimizer):
    torch.manual_seed(1)
    manual, reference = twins([784, 15, 10], "sigmoid", "softmax", torch.float32)
    make = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.5),
        "momentum": lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    }[optimizer]
    x, y = torch.rand(10, 784), torch.randint(0, 10, (10,))
    for model in (manual, reference):
        opt = make(model.parameters())
        for _ in range(2):
            opt.zero_grad()
            model.loss(model(x), y, "cross_entropy").backward()
            opt.step()
    for (k, pm), pr in zip(manual.state_dict().items(), reference.state_dict().values()):
        assert_rel_close(pm, pr, 1e-5), k


@pytest.mark.parametrize("output,cost", COMBOS)
def test_saturated_outputs_stay_finite_and_match(output, cost):
    """Huge logits: losses and gradients finite, and still equal to autograd's."""
    torch.manual_seed(2)
    manual, reference = twins([8, 6, 4], "relu", output, torch.float32)
    with torch.no_grad():
        for model in (manual, reference):
            model.get_submodule("2").weight.mul_(1e4)
    x, y = torch.randn(5, 8) * 100, torch.randint(0, 4, (5,))
    C_m, g_m, _ = loss_and_grads(manual, x, y, cost)
    C_r, g_r, _ = loss_and_grads(reference, x, y, cost)
    assert torch.isfinite(C_m) and all(torch.isfinite(g).all() for g in g_m)
    assert_rel_close(C_m, C_r, 1e-5)
    for gm, gr in zip(g_m, g_r):
        assert_rel_close(gm, gr, 1e-5)


def test_cpu_autocast_bf16_runs_in_float32_and_matches():
    torch.manual_seed(3)
    manual, reference = twins([784, 30, 10], "sigmoid", "softmax", torch.float32)
    x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_m, z_r = manual(x), reference(x)
    assert z_m.dtype == torch.float32 and z_r.dtype == torch.bfloat16
    manual.loss(z_m, y, "cross_entropy").backward()
    reference.loss(z_r.float(), y, "cross_entropy").backward()
    for pm, pr in zip(manual.parameters(), reference.parameters()):
        assert pm.grad.dtype == torch.float32
        assert_rel_close(pm.grad, pr.grad, 5e-2)  # bf16 has 8 bits of mantissa


@pytest.mark.parametrize("activation", HIDDEN)
@pytest.mark.parametrize("output,cost", COMBOS)
def test_direct_backprop_equals_the_autograd_function_bitwise(activation, output, cost):
    """ManualMLP.backprop (no graph) and loss(model(x)).backward() (the Functions) run the same code."""
    torch.manual_seed(4)
    direct = ManualMLP([20, 7, 5, 4], activation, output)
    function = copy.deepcopy(direct)
    x, y = torch.randn(9, 20), torch.randint(0, 4, (9,))
    C_d, z_d = direct.backprop(x, y, cost)
    z_f = function(x)
    C_f = function.loss(z_f, y, cost)
    C_f.backward()
    assert not C_d.requires_grad and not z_d.requires_grad
    assert torch.equal(C_d, C_f.detach()) and torch.equal(z_d, z_f.detach())
    for pd, pf in zip(direct.parameters(), function.parameters()):
        assert torch.equal(pd.grad, pf.grad)


def test_backward_can_release_each_activation_once_passed():
    """`release=True` (the direct step's memory peak) empties the list and changes no gradient."""
    torch.manual_seed(3)
    Ws = [torch.randn(20, 784), torch.randn(15, 20), torch.randn(10, 15)]
    bs = [torch.randn(20), torch.randn(15), torch.randn(10)]
    z, a = backprop.forward(torch.rand(8, 784), Ws, bs, "tanh")
    delta = torch.randn_like(z)
    kept, _ = backprop.backward(delta, a, Ws, "tanh")
    released, _ = backprop.backward(delta, a, Ws, "tanh", release=True)
    assert a == [None, None, None]
    for g_kept, g_released in zip(kept, released):
        assert torch.equal(g_kept, g_released)


def test_direct_backprop_accumulates_and_skips_frozen_parameters():
    """Against ReferenceMLP (autograd), twice into the same .grad."""
    torch.manual_seed(5)
    manual, reference = twins([6, 5, 3], "tanh", "softmax")
    manual.W[0].requires_grad_(False)
    reference.get_submodule("0").weight.requires_grad_(False)
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 3, (4,))
    for _ in range(2):  # .grad adds up, as with backward()
        manual.backprop(x, y, "cross_entropy")
        reference.backprop(x, y, "cross_entropy")
    assert manual.W[0].grad is None
    for pm, pr in zip(manual.parameters(), reference.parameters()):
        if pr.grad is not None:
            assert_rel_close(pm.grad, pr.grad, 1e-10)


def test_direct_backprop_refuses_a_cost_the_output_cannot_take():
    with pytest.raises(ValueError, match="identity"):
        ManualMLP([4, 3], output="identity").backprop(torch.randn(2, 4), torch.tensor([0, 1]), "cross_entropy")


def test_direct_backprop_under_cpu_autocast_runs_in_float32():
    """Both paths, with backward() called inside the autocast region (as Lightning's precision plugin
    does), give exactly the float32 gradients of a run without autocast."""
    torch.manual_seed(6)
    direct = ManualMLP([784, 30, 10])
    function, plain = copy.deepcopy(direct), copy.deepcopy(direct)
    x, y = torch.rand(16, 784), torch.randint(0, 10, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        C_d, z_d = direct.backprop(x, y, "cross_entropy")
        function.loss(function(x), y, "cross_entropy").backward()
    plain.backprop(x, y, "cross_entropy")
    assert z_d.dtype == torch.float32
    for pd, pf, pp in zip(direct.parameters(), function.parameters(), plain.parameters()):
        assert pd.grad.dtype == torch.float32
        assert torch.equal(pd.grad, pp.grad) and torch.equal(pf.grad, pp.grad)


@pytest.mark.parametrize("activation", HIDDEN)
def test_fused_derivative_kernels_equal_the_formulas(activation):
    from backprop_lab.core import activations

    act = activations.hidden(activation)
    a = act.f(torch.randn(50, 7, dtype=torch.float64) * 3)
    g = torch.randn(50, 7, dtype=torch.float64)
    assert act.fused is not None
    assert_rel_close(act.times_df(g, a), g * act.df(a), 1e-12)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_cuda_matches_autograd(dtype, rtol):
    torch.manual_seed(4)
    manual, reference = twins([784, 100, 30, 10], "tanh", "softmax", dtype)
    manual, reference = manual.cuda(), reference.cuda()
    x, y = torch.rand(256, 784, dtype=dtype, device="cuda"), torch.randint(0, 10, (256,), device="cuda")
    C_m, g_m, dx_m = loss_and_grads(manual, x, y, "cross_entropy")
    C_r, g_r, dx_r = loss_and_grads(reference, x, y, "cross_entropy")
    assert_rel_close(C_m, C_r, rtol)
    for gm, gr in zip(g_m + [dx_m], g_r + [dx_r]):
        assert_rel_close(gm, gr, rtol)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("cost", ["mse", "cross_entropy"])
def test_cuda_autocast_bf16_matches_within_bf16_tolerance(cost):
    torch.manual_seed(5)
    manual, reference = twins([784, 100, 10], "sigmoid", "softmax", torch.float32)
    manual, reference = manual.cuda(), reference.cuda()
    x, y = torch.rand(256, 784, device="cuda"), torch.randint(0, 10, (256,), device="cuda")
    grads = []
    for model in (manual, reference):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            C = model.loss(model(x), y, cost)
        C.backward()
        assert torch.isfinite(C)
        grads.append([p.grad for p in model.parameters()])
    for gm, gr in zip(*grads):
        assert gm.dtype == torch.float32
        assert_rel_close(gm, gr, 5e-2)

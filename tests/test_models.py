"""Model construction: shared state_dict, initialisations, argument errors."""

import math

import pytest
import torch
from torch import nn

from backprop_lab import ManualMLP, ReferenceMLP
from backprop_lab.core.models import INITS


@pytest.mark.parametrize("init", list(INITS))
def test_same_seed_same_weights_and_keys(init):
    torch.manual_seed(7)
    manual = ManualMLP([784, 15, 12, 10], "tanh", "softmax", init)
    torch.manual_seed(7)
    reference = ReferenceMLP([784, 15, 12, 10], "tanh", "softmax", init)
    sm, sr = manual.state_dict(), reference.state_dict()
    assert list(sm) == list(sr) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    for k in sm:
        assert torch.equal(sm[k], sr[k]), k


def test_checkpoint_of_one_loads_into_the_other():
    reference = ReferenceMLP([20, 7, 3])
    manual = ManualMLP([20, 7, 3])
    manual.load_state_dict(reference.state_dict())
    x = torch.rand(4, 20)
    torch.testing.assert_close(manual(x), reference(x))
    reference2 = ReferenceMLP([20, 7, 3])
    reference2.load_state_dict(manual.state_dict())
    torch.testing.assert_close(reference2(x), manual(x))


def test_reference_is_plain_sequential_of_linear_and_activations():
    reference = ReferenceMLP([784, 15, 10], "relu")
    assert isinstance(reference, nn.Sequential)
    assert [type(m) for m in reference] == [nn.Linear, nn.ReLU, nn.Linear]


def test_W_and_b_follow_the_lecture_shapes():
    manual = ManualMLP([784, 15, 10])
    assert [tuple(W.shape) for W in manual.W] == [(15, 784), (10, 15)]
    assert [tuple(b.shape) for b in manual.b] == [(15,), (10,)]


def test_single_layer_network_works():
    manual = ManualMLP([784, 10], output="softmax")
    x = torch.rand(3, 1, 28, 28)  # images are flattened
    manual.loss(manual(x), torch.tensor([1, 2, 3]), "cross_entropy").backward()
    assert manual.W[0].grad.shape == (10, 784)


@pytest.mark.parametrize(
    "init,w_std,b_std",
    [
        ("normal", lambda n: 1.0, 1.0),
        ("scaled", lambda n: 1 / math.sqrt(n), 1.0),
        ("kaiming", lambda n: math.sqrt(2 / n), 0.0),
    ],
)
def test_init_statistics(init, w_std, b_std):
    torch.manual_seed(0)
    m = ManualMLP([400, 300, 10], init=init)
    assert m.W[0].std().item() == pytest.approx(w_std(400), rel=0.05)
    assert m.b[0].std().item() == pytest.approx(b_std, abs=0.15)


def test_predict_proba_is_softmax_of_z():
    m = ManualMLP([5, 4, 3])
    x = torch.rand(2, 5)
    p = m.predict_proba(x)
    torch.testing.assert_close(p.sum(1), torch.ones(2))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(sizes=[784]), "sizes must be at least"),
        (dict(sizes=[784, 0, 10]), "every size >= 1"),
        (dict(sizes=[784, 10], activation="swish"), "unknown activation 'swish'"),
        (dict(sizes=[784, 10], output="tanh"), "unknown output activation 'tanh'"),
        (dict(sizes=[784, 10], init="zeros"), "unknown init 'zeros'"),
    ],
)
@pytest.mark.parametrize("cls", [ManualMLP, ReferenceMLP])
def test_bad_arguments_name_the_problem(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [ManualMLP, ReferenceMLP])
def test_cross_entropy_with_identity_output_is_refused(cls):
    m = cls([4, 3], output="identity")
    with pytest.raises(ValueError, match="cross_entropy needs probabilities"):
        m.loss(m(torch.rand(2, 4)), torch.tensor([0, 1]), "cross_entropy")

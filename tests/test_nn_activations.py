import math

import pytest
import torch

from dnnlab.config import ACTIVATIONS
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.nn.activations import activation_fn, make_activation

X = torch.linspace(-4, 4, 81)


@pytest.mark.parametrize("name", [a for a in ACTIVATIONS if a != "prelu"])
def test_module_and_function_agree(name):
    module = make_activation(name, None).eval()
    assert torch.allclose(module(X), activation_fn(name)(X), atol=0, rtol=0)


@pytest.mark.parametrize("name,param", [("leaky_relu", 0.2), ("elu", 0.5)])
def test_module_and_function_agree_with_param(name, param):
    assert torch.equal(make_activation(name, param)(X), activation_fn(name, param)(X))


POINTS = [
    ("selu", 1.0, 1.0507009873554805),
    ("selu", -1.0, 1.0507009873554805 * 1.6732632423543772 * (math.exp(-1) - 1)),
    ("elu", -1.0, math.exp(-1) - 1),
    ("elu", 2.0, 2.0),
    ("relu", -1.0, 0.0),
    ("leaky_relu", -1.0, -0.3),          # Keras 3 LeakyReLU default negative_slope
    ("sigmoid", 0.0, 0.5),
    ("tanh", 1.0, math.tanh(1.0)),
    ("swish", 1.0, 1 / (1 + math.exp(-1))),
    ("silu", -2.0, -2 / (1 + math.exp(2))),
    ("gelu", 1.0, 0.5 * (1 + math.erf(1 / math.sqrt(2)))),
    ("mish", 1.0, math.tanh(math.log1p(math.e))),
    ("softplus", 0.0, math.log(2.0)),
    ("linear", -3.5, -3.5),
    ("rrelu", -1.0, -(1 / 8 + 1 / 3) / 2),  # inference: the mean slope
    ("prelu", -1.0, 0.0),                   # Keras PReLU starts at slope 0
]


@pytest.mark.parametrize("name,x,expected", POINTS)
def test_values(name, x, expected):
    got = make_activation(name).double().eval()(torch.tensor([x], dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_params():
    assert make_activation("leaky_relu", 0.2)(torch.tensor([-1.0])).item() == pytest.approx(-0.2)
    assert activation_fn("elu", 2.0)(torch.tensor([-1.0])).item() == pytest.approx(2 * (math.exp(-1) - 1))
    p = make_activation("prelu", 0.25, units=5)
    assert p.weight.shape == (5,) and torch.all(p.weight == 0.25)
    # parameterless activations ignore the param (one config can sweep activations)
    assert torch.equal(make_activation("relu", 0.7)(X), torch.relu(X))


def test_prelu_learns_and_has_no_functional_form():
    assert sum(p.numel() for p in make_activation("prelu", units=3).parameters()) == 3
    with pytest.raises(DnnlabError, match="make_activation"):
        activation_fn("prelu")


def test_rrelu_random_in_training():
    m = make_activation("rrelu").train()
    y = m(-torch.ones(10000))
    assert y.min() >= -1 / 3 - 1e-6 and y.max() <= -1 / 8 + 1e-6 and y.std() > 0.03
    f = activation_fn("rrelu")
    assert f(-torch.ones(100), True).std() > 0.03


def test_fresh_modules_and_unknown_name():
    assert make_activation("prelu") is not make_activation("prelu")
    with pytest.raises(ConfigError, match="unknown activation"):
        make_activation("swishy")
    with pytest.raises(ConfigError):
        activation_fn("nope")

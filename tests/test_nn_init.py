import math

import pytest
import torch

from dnnlab.config import INITIALIZERS
from dnnlab.errors import ConfigError
from dnnlab.nn.init import TRUNCATED_STD, fans, init_, variance

OUT, IN = 600, 400          # torch layout (out, in): fan_in = 400, fan_out = 600
EXPECTED_VAR = {"glorot": 2.0 / (IN + OUT), "he": 2.0 / IN, "lecun": 1.0 / IN}
FAMILY_INITS = [n for n in INITIALIZERS if n.split("_")[0] in EXPECTED_VAR]


def _draw(name, shape=(OUT, IN), value=0.0, seed=0):
    return init_(torch.empty(shape), name, value, generator=torch.Generator().manual_seed(seed))


def test_fans_torch_layout():
    assert fans((600, 400)) == (400, 600)
    assert fans((7, 600, 400)) == (400, 600)
    assert fans((5,)) == (5, 5)
    assert fans(()) == (1, 1)


def test_truncated_std_constant_is_std_of_truncated_standard_normal():
    # variance of N(0,1) truncated to [-2, 2]: 1 - 2*2*phi(2) / (Phi(2) - Phi(-2))
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert math.sqrt(1 - 4 * phi2 / mass) == pytest.approx(TRUNCATED_STD, rel=1e-12)


@pytest.mark.parametrize("name", FAMILY_INITS)
def test_empirical_variance_matches_keras_formula(name):
    w = _draw(name)
    expected = EXPECTED_VAR[name.split("_")[0]]
    assert variance(name, (OUT, IN)) == pytest.approx(expected)
    assert w.var().item() == pytest.approx(expected, rel=0.03)
    assert abs(w.mean().item()) < 0.01 * math.sqrt(expected)


@pytest.mark.parametrize("name", [n for n in FAMILY_INITS if n.endswith("normal")])
def test_normal_inits_are_truncated_at_two_keras_sigmas(name):
    w = _draw(name)
    std = math.sqrt(EXPECTED_VAR[name.split("_")[0]]) / TRUNCATED_STD
    assert w.abs().max().item() <= 2 * std + 1e-6
    assert w.abs().max().item() > 1.95 * std        # the bound is reached, not a narrower one
    # no value lies beyond 2 sigma, and inside the shape is normal: P(|z| > 1 | |z| < 2) = 0.2848
    inside = math.erf(2 / math.sqrt(2))
    expected = (inside - math.erf(1 / math.sqrt(2))) / inside
    assert (w.abs() > std).float().mean().item() == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize("family", ["glorot", "he", "lecun"])
def test_normal_is_keras_truncated_normal(family):
    assert torch.equal(_draw(f"{family}_normal"), _draw(f"{family}_truncated_normal"))


@pytest.mark.parametrize("name", [n for n in FAMILY_INITS if n.endswith("uniform")])
def test_uniform_limit(name):
    w = _draw(name)
    limit = math.sqrt(3 * EXPECTED_VAR[name.split("_")[0]])
    assert w.abs().max().item() <= limit
    assert w.abs().max().item() > 0.999 * limit


def test_normal_uses_value_as_std_and_constant_fills():
    w = _draw("normal", value=1.0)
    assert w.std().item() == pytest.approx(1.0, rel=0.01)
    assert w.abs().max().item() > 4.0               # untruncated
    c = _draw("constant", value=0.25)
    assert torch.equal(c, torch.full((OUT, IN), 0.25))


def test_normal_without_std_is_a_config_error():
    with pytest.raises(ConfigError, match="init_value"):
        _draw("normal", value=0.0)


def test_unknown_initializer():
    with pytest.raises(ConfigError, match="unknown initializer"):
        _draw("xavier")


def test_torch_default_matches_nn_linear():
    w = _draw("torch_default")
    bound = 1 / math.sqrt(IN)
    assert w.abs().max().item() <= bound
    assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.03)
    # same draws as nn.Linear's own kaiming_uniform_(a=sqrt(5)) with the same generator
    ref = torch.empty(OUT, IN)
    torch.nn.init.kaiming_uniform_(ref, a=math.sqrt(5), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(w, ref)


@pytest.mark.parametrize("name", ["he_normal", "glorot_uniform", "lecun_truncated_normal",
                                  "normal", "torch_default"])
def test_stacked_init_equals_slice_by_slice(name):
    k, out, inp = 3, 17, 23         # odd sizes: no chunk of a vectorized sampler lines up
    stacked = init_(torch.empty(k, out, inp), name, 0.5, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    slices = [init_(torch.empty(out, inp), name, 0.5, g) for _ in range(k)]
    assert torch.equal(stacked, torch.stack(slices))
    assert variance("he_normal", (k, out, inp)) == variance("he_normal", (out, inp))


def test_same_seed_same_weights_and_in_place():
    t = torch.empty(30, 20)
    r = init_(t, "he_normal", generator=torch.Generator().manual_seed(3))
    assert r is t
    assert torch.equal(t, _draw("he_normal", (30, 20), seed=3))
    assert not torch.equal(t, _draw("he_normal", (30, 20), seed=4))


def test_init_works_on_parameters_with_grad():
    p = torch.nn.Parameter(torch.zeros(8, 4))
    init_(p, "glorot_uniform", generator=torch.Generator().manual_seed(0))
    assert p.requires_grad and p.abs().sum() > 0

import math

import numpy as np
import pytest
import torch

from dnnlab.errors import ConfigError
from dnnlab.optim import FTRL


def _ftrl_by_hand(w, grads, alpha, lambda1, lambda2, n0, lr_power=-0.5):
    """McMahan et al. 2013, Algorithm 1 (beta = 0), coordinate by coordinate in plain Python.

    Generalized to any lr_power as Keras does: sqrt(n) becomes n ** -lr_power.
    """
    w = [float(v) for v in w]
    n = [n0] * len(w)
    z = [0.0] * len(w)
    for g in grads:
        for i in range(len(w)):
            gi = float(g[i])
            sigma = ((n[i] + gi * gi) ** -lr_power - n[i] ** -lr_power) / alpha
            z[i] += gi - sigma * w[i]
            n[i] += gi * gi
            if abs(z[i]) <= lambda1:
                w[i] = 0.0
            else:
                w[i] = -(z[i] - math.copysign(lambda1, z[i])) / (n[i] ** -lr_power / alpha + lambda2)
    return np.array(w)


def _run(w0, grads, **kw):
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = FTRL([w], **kw)
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach().numpy(), opt


@pytest.mark.parametrize("l1,l2,lr_power", [(0.0, 0.0, -0.5), (0.05, 0.1, -0.5), (0.02, 0.0, -0.3),
                                             (0.0, 0.3, 0.0)])
def test_matches_the_published_rule(l1, l2, lr_power):
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=8)
    grads = [rng.normal(size=8) for _ in range(6)]
    got, _ = _run(w0, grads, lr=0.3, lr_power=lr_power, initial_accumulator=0.1, l1=l1, l2=l2)
    # Keras' l2 is the paper's lambda_2 / 2
    expected = _ftrl_by_hand(w0, grads, 0.3, l1, 2 * l2, 0.1, lr_power)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_l1_gives_exact_zeros():
    rng = np.random.default_rng(2)
    w0 = rng.normal(size=200)
    grads = [0.05 * rng.normal(size=200) + np.linspace(-1, 1, 200) for _ in range(5)]
    got, _ = _run(w0, grads, lr=0.1, l1=2.0)
    expected = _ftrl_by_hand(w0, grads, 0.1, 2.0, 0.0, 0.1)
    zeros = expected == 0.0
    assert 20 < zeros.sum() < 200                       # some, not all, coordinates are cut
    assert np.all(got[zeros] == 0.0)                    # exactly zero, not merely small
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_first_step_by_hand():
    # one coordinate, w=0.5, g=1, n0=0.1, lr=0.1, l1=0.2, l2=0.05
    got, opt = _run([0.5], [[1.0]], lr=0.1, l1=0.2, l2=0.05)
    n_new = 1.1
    sigma = (math.sqrt(1.1) - math.sqrt(0.1)) / 0.1
    z = 1.0 - sigma * 0.5
    w = (math.copysign(0.2, z) - z) / (math.sqrt(n_new) / 0.1 + 0.1)
    assert got[0] == pytest.approx(w, rel=1e-12)
    state = opt.state_dict()["state"][0]
    assert state["accumulator"].item() == pytest.approx(1.1)
    assert state["linear"].item() == pytest.approx(z)


def test_float32_and_skip_params_without_grad():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = FTRL([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(3)) and not torch.equal(a.detach(), torch.ones(3))
    assert a.dtype == torch.float32


@pytest.mark.parametrize("kw,match", [(dict(lr_power=0.5), "lr_power"), (dict(l1=-1.0), "l1"),
                                      (dict(initial_accumulator=-0.1), "initial_accumulator"),
                                      (dict(lr=0.0), "lr")])
def test_invalid_hyperparameters(kw, match):
    with pytest.raises(ConfigError, match=match):
        FTRL([torch.nn.Parameter(torch.zeros(1))], **kw)

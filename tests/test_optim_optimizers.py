import numpy as np
import pytest
import torch

from dnnlab.config import OPTIMIZERS, OptimConfig
from dnnlab.errors import ConfigError
from dnnlab.optim import FTRL, clip_gradients_, make_optimizer

LRS = {"sgd": 0.1, "adagrad": 0.5, "rmsprop": 0.05, "adam": 0.1, "adamax": 0.1, "nadam": 0.1,
       "adamw": 0.1, "ftrl": 0.5}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_reduces_a_quadratic(name):
    target = torch.tensor([1.0, -2.0, 3.0, 0.5])
    w = torch.nn.Parameter(torch.zeros(4))
    opt = make_optimizer([w], OptimConfig(name=name, lr=LRS[name]))
    start = ((w - target) ** 2).sum().item()
    for _ in range(60):
        loss = ((w - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ((w - target) ** 2).sum().item() < 0.1 * start


def test_hyperparameters_reach_torch():
    p = [torch.nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer(p, OptimConfig(name="sgd", lr=0.01, momentum=0.9, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9 and sgd.defaults["foreach"]
    rms = make_optimizer(p, OptimConfig(name="rmsprop", rho=0.8))
    assert rms.defaults["alpha"] == 0.8 and rms.defaults["eps"] == 1e-7
    ada = make_optimizer(p, OptimConfig(name="adagrad", initial_accumulator=0.1))
    assert ada.defaults["initial_accumulator_value"] == 0.1
    nadam = make_optimizer(p, OptimConfig(name="nadam", beta1=0.8))
    assert isinstance(nadam, torch.optim.NAdam)
    assert nadam.defaults["momentum_decay"] == 1.0 and nadam.defaults["betas"] == (0.8, 0.999)
    adamw = make_optimizer(p, OptimConfig(name="adamw", weight_decay=0.01))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.01
    assert isinstance(make_optimizer(p, OptimConfig(name="adamax")), torch.optim.Adamax)
    ftrl = make_optimizer(p, OptimConfig(name="ftrl", l1=0.1, l2=0.2, lr_power=-0.3))
    assert isinstance(ftrl, FTRL) and ftrl.defaults["l1"] == 0.1 and ftrl.defaults["lr_power"] == -0.3


def test_config_mistakes():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match="momentum"):
        make_optimizer(p, OptimConfig(name="sgd", nesterov=True))
    with pytest.raises(ConfigError, match="optim.l2"):
        make_optimizer(p, OptimConfig(name="ftrl", weight_decay=0.1))


def _keras3_nadam(w, grads, lr, b1, b2, eps):
    """keras/src/optimizers/nadam.py, transcribed to numpy (float64)."""
    m, v, u_product = np.zeros_like(w), np.zeros_like(w), 1.0
    for it, g in enumerate(grads):          # it = optimizer.iterations before the step
        u_product *= b1 * (1 - 0.5 * 0.96 ** (it + 1))
        t, t_next = it + 1, it + 2
        u_t = b1 * (1 - 0.5 * 0.96**t)
        u_t1 = b1 * (1 - 0.5 * 0.96**t_next)
        u_product_t1 = u_product * u_t1
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        m_hat = u_t1 * m / (1 - u_product_t1) + (1 - u_t) * g / (1 - u_product)
        v_hat = v / (1 - b2**t)
        w = w - m_hat * lr / (np.sqrt(v_hat) + eps)
    return w


def test_nadam_matches_keras3_update():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=6)
    grads = [rng.normal(size=6) * s for s in (1.0, 0.5, 2.0, 0.1, 1.0, 3.0, 0.7)]
    cfg = OptimConfig(name="nadam", lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7)
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = make_optimizer([w], cfg)
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
    expected = _keras3_nadam(w0, grads, 0.01, 0.9, 0.999, 1e-7)
    # torch keeps step and the product of the mu's as float32 scalars: agreement to ~1e-9
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-7, atol=1e-10)
    # torch's default momentum_decay (the old TF1 schedule) would not match
    w2 = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    old = torch.optim.NAdam([w2], lr=0.01, eps=1e-7)
    for g in grads:
        w2.grad = torch.tensor(g)
        old.step()
    assert np.abs(w2.detach().numpy() - expected).max() > 1e-4


def _params_with_grads(*grads):
    ps = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(len(g)))
        p.grad = torch.tensor(g, dtype=torch.float32)
        ps.append(p)
    return ps


def test_clip_value():
    ps = _params_with_grads([3.0, -0.2, -5.0], [0.5])
    clip_gradients_(ps, OptimConfig(clip_value=1.0))
    assert ps[0].grad.tolist() == pytest.approx([1.0, -0.2, -1.0]) and ps[1].grad.item() == 0.5


def test_clip_norm_is_global_and_keeps_direction():
    ps = _params_with_grads([3.0, 0.0], [0.0, 4.0])     # global norm 5
    clip_gradients_(ps, OptimConfig(clip_norm=1.0))
    assert ps[0].grad.tolist() == pytest.approx([0.6, 0.0], abs=1e-6)
    assert ps[1].grad.tolist() == pytest.approx([0.0, 0.8], abs=1e-6)
    small = _params_with_grads([0.3, 0.4])
    clip_gradients_(small, OptimConfig(clip_norm=1.0))
    assert small[0].grad.tolist() == pytest.approx([0.3, 0.4])


def test_clip_noop_and_missing_grads():
    ps = _params_with_grads([30.0])
    ps.append(torch.nn.Parameter(torch.zeros(2)))        # no grad (frozen / unused)
    clip_gradients_(ps, OptimConfig())
    assert ps[0].grad.item() == 30.0
    clip_gradients_(ps, OptimConfig(clip_value=2.0, clip_norm=1.0))
    assert ps[0].grad.item() == pytest.approx(1.0) and ps[1].grad is None

"""The flat optimizers: each rule against torch.optim or Keras' published update, per model."""

import math

import numpy as np
import pytest
import torch

from dnnlab.config import OPTIMIZERS, OptimConfig
from dnnlab.errors import ConfigError
from dnnlab.optim.flat import FlatOptimizer, clip_, hypers_of

SHAPES = [(7, 5), (5,), (3, 5)]          # three parameter tensors per model
N = sum(int(np.prod(s)) for s in SHAPES)
SEGMENTS = [(0, 35), (35, 40), (40, 55)]
TORCH = {"sgd", "adagrad", "adam", "adamax", "nadam", "adamw"}    # torch.optim computes these


def _configs(name):
    """Three models with different hyperparameters (weight decay on one of them)."""
    base = dict(name=name, lr=0.05 if name in ("sgd", "adagrad", "ftrl") else 0.01)
    if name == "sgd":
        return [OptimConfig(**base, momentum=m) for m in (0.0, 0.9, 0.5)]
    if name == "rmsprop":
        return [OptimConfig(**base, rho=0.9), OptimConfig(**base, rho=0.8, momentum=0.9),
                OptimConfig(**base, eps=1e-3)]
    if name == "ftrl":
        return [OptimConfig(**base, l1=0.01), OptimConfig(**dict(base, lr=0.1)),
                OptimConfig(**base, l2=0.1, initial_accumulator=0.5)]
    wd = dict(weight_decay=0.1)
    return [OptimConfig(**base), OptimConfig(**dict(base, lr=0.003), beta1=0.8, beta2=0.99),
            OptimConfig(**base, **wd)]


def _torch_optimizer(params, c: OptimConfig):
    """The torch.optim equivalent of a dnnlab optimizer config (the reference)."""
    common = dict(lr=c.lr, weight_decay=c.weight_decay)
    betas = (c.beta1, c.beta2)
    return {"sgd": lambda: torch.optim.SGD(params, momentum=c.momentum, nesterov=c.nesterov,
                                           **common),
            "adagrad": lambda: torch.optim.Adagrad(params, eps=c.eps, initial_accumulator_value=
                                                   c.initial_accumulator, **common),
            "adam": lambda: torch.optim.Adam(params, betas=betas, eps=c.eps, **common),
            "adamax": lambda: torch.optim.Adamax(params, betas=betas, eps=c.eps, **common),
            "nadam": lambda: torch.optim.NAdam(params, betas=betas, eps=c.eps, momentum_decay=1.0,
                                               **common),
            "adamw": lambda: torch.optim.AdamW(params, betas=betas, eps=c.eps, **common),
            }[c.name]()


def _keras_rmsprop(w, grads, c: OptimConfig):
    """keras/src/optimizers/rmsprop.py (not centered), transcribed to numpy."""
    v, m = np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        v = c.rho * v + (1 - c.rho) * g * g
        increment = c.lr * g / np.sqrt(v + c.eps)
        if c.momentum > 0:
            m = c.momentum * m + increment
            w = w - m
        else:
            w = w - increment
    return w


def _ftrl_by_hand(w, grads, c: OptimConfig):
    """McMahan et al. 2013, Algorithm 1 (beta = 0), coordinate by coordinate in plain Python;
    generalized to any lr_power as Keras does (sqrt(n) becomes n ** -lr_power). Keras' l2 is the
    paper's lambda_2 / 2."""
    alpha, l1, l2, p = c.lr, c.l1, 2 * c.l2, c.lr_power
    w = [float(v) for v in w]
    n = [c.initial_accumulator] * len(w)
    z = [0.0] * len(w)
    for g in grads:
        for i in range(len(w)):
            gi = float(g[i])
            sigma = ((n[i] + gi * gi) ** -p - n[i] ** -p) / alpha
            z[i] += gi - sigma * w[i]
            n[i] += gi * gi
            w[i] = 0.0 if abs(z[i]) <= l1 else -(z[i] - math.copysign(l1, z[i])) / (
                n[i] ** -p / alpha + l2)
    return np.array(w)


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


def _split(row):
    out, o = [], 0
    for s in SHAPES:
        n = int(np.prod(s))
        out.append(row[o:o + n].view(s))
        o += n
    return out


def _run_flat(name, cfgs, p0, grads, fused=False, dtype=torch.float32):
    p, g = p0.clone().to(dtype), torch.zeros(p0.shape, dtype=dtype)
    opt = FlatOptimizer(name, p, g, hypers_of(cfgs), nesterov=cfgs[0].nesterov)
    if fused:
        opt.fuse()
    table = opt.table(np.array([[c.lr for c in cfgs]] * len(grads)))
    for step in range(len(grads)):
        g.copy_(grads[step])
        opt.step(table[step])
    return p, opt


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_rule_matches_its_reference_model_by_model(name):
    torch.manual_seed(0)
    cfgs = _configs(name)
    k = len(cfgs)
    p0 = torch.randn(k, N, dtype=torch.float64)
    grads = torch.randn(12, k, N, dtype=torch.float64)
    p, _ = _run_flat(name, cfgs, p0, grads, dtype=torch.float64)
    for i, c in enumerate(cfgs):
        if name in TORCH:
            params = [t.clone().requires_grad_(True) for t in _split(p0[i])]
            opt = _torch_optimizer(params, c)
            for step in range(len(grads)):
                for t, gr in zip(params, _split(grads[step, i])):
                    t.grad = gr.clone()
                opt.step()
            ref = torch.cat([t.detach().reshape(-1) for t in params]).numpy()
        elif name == "rmsprop":
            ref = _keras_rmsprop(p0[i].numpy(), grads[:, i].numpy(), c)
        else:
            ref = _ftrl_by_hand(p0[i].numpy(), grads[:, i].numpy(), c)
        np.testing.assert_allclose(p[i].numpy(), ref, rtol=1e-6, atol=1e-9, err_msg=f"model {i}")


def test_nadam_follows_keras3_not_torchs_default_schedule():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(1, 6))
    grads = torch.tensor(np.stack([rng.normal(size=(1, 6)) * s
                                   for s in (1.0, 0.5, 2.0, 0.1, 1.0, 3.0, 0.7)]))
    cfg = OptimConfig(name="nadam", lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7)
    p, _ = _run_flat("nadam", [cfg], torch.tensor(w0), grads, dtype=torch.float64)
    expected = _keras3_nadam(w0[0], list(grads[:, 0].numpy()), 0.01, 0.9, 0.999, 1e-7)
    np.testing.assert_allclose(p[0].numpy(), expected, rtol=1e-12, atol=1e-14)
    w2 = torch.nn.Parameter(torch.tensor(w0[0]))          # torch's default: the old TF1 schedule
    old = torch.optim.NAdam([w2], lr=0.01, eps=1e-7)
    for g in grads[:, 0]:
        w2.grad = g.clone()
        old.step()
    assert np.abs(w2.detach().numpy() - expected).max() > 1e-4


def test_rmsprop_puts_epsilon_inside_the_root_as_keras():
    """For small gradients torch's g / (sqrt(v) + eps) and Keras' g / sqrt(v + eps) differ a lot."""
    cfg = OptimConfig(name="rmsprop", lr=0.01, eps=1e-7)
    grads = torch.full((3, 1, 4), 1e-4, dtype=torch.float64)
    p, _ = _run_flat("rmsprop", [cfg], torch.zeros(1, 4, dtype=torch.float64), grads,
                     dtype=torch.float64)
    expected = _keras_rmsprop(np.zeros(4), grads[:, 0].numpy(), cfg)
    np.testing.assert_allclose(p[0].numpy(), expected, rtol=1e-12)
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    ref = torch.optim.RMSprop([w], lr=0.01, alpha=0.9, eps=1e-7)
    for g in grads[:, 0]:
        w.grad = g.clone()
        ref.step()
    assert abs(float(w.detach()[0]) / expected[0]) > 1.5             # torch's form moves much further


def test_ftrl_l1_gives_exact_zeros():
    rng = np.random.default_rng(2)
    w0 = torch.tensor(rng.normal(size=(1, 200)))
    grads = torch.tensor(np.stack([0.05 * rng.normal(size=(1, 200)) + np.linspace(-1, 1, 200)
                                   for _ in range(5)]))
    p, _ = _run_flat("ftrl", [OptimConfig(name="ftrl", lr=0.1, l1=2.0)], w0, grads,
                     dtype=torch.float64)
    zeros = int((p == 0).sum())
    assert 20 < zeros < 200                       # some, not all, coordinates are cut


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_reduces_a_quadratic(name):
    lr = {"sgd": 0.1, "adagrad": 0.5, "rmsprop": 0.05, "ftrl": 0.5}.get(name, 0.1)
    target = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    p, g = torch.zeros(1, 4), torch.zeros(1, 4)
    opt = FlatOptimizer(name, p, g, hypers_of([OptimConfig(name=name, lr=lr)]))
    table = opt.table(np.full((60, 1), lr))
    start = float(((p - target) ** 2).sum())
    for step in range(60):
        g.copy_(2 * (p - target))
        opt.step(table[step])
    assert float(((p - target) ** 2).sum()) < 0.1 * start


def test_nesterov_matches_torch_and_zero_lr_freezes():
    torch.manual_seed(1)
    cfgs = [OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True) for _ in range(2)]
    p0 = torch.randn(2, N)
    params = [t.clone().requires_grad_(True) for t in _split(p0[0])]
    ref = _torch_optimizer(params, cfgs[0])
    p, g = p0.clone(), torch.zeros(2, N)
    opt = FlatOptimizer("sgd", p, g, hypers_of(cfgs), nesterov=True)
    table = opt.table(np.array([[0.1, 0.0]] * 5))          # model 1 frozen by lr = 0
    for step in range(5):
        gr = torch.randn(2, N)
        for t, x in zip(params, _split(gr[0])):
            t.grad = x.clone()
        ref.step()
        g.copy_(gr)
        opt.step(table[step])
    torch.testing.assert_close(p[0], torch.cat([t.detach().reshape(-1) for t in params]))
    assert torch.equal(p[1], p0[1])


def test_ftrl_mask_freezes_a_model():
    cfgs = [OptimConfig(name="ftrl", lr=0.1, l1=0.01)] * 2
    p0 = torch.randn(2, N)
    p, _ = _run_flat("ftrl", cfgs, p0, torch.randn(3, 2, N))
    assert not torch.equal(p[0], p0[0])
    p2, g = p0.clone(), torch.zeros(2, N)
    opt = FlatOptimizer("ftrl", p2, g, hypers_of(cfgs))
    table = opt.table(np.array([[0.1, 0.0]] * 3))
    for step in range(3):
        g.copy_(torch.randn(2, N))
        opt.step(table[step])
    assert torch.equal(p2[1], p0[1]) and not torch.equal(p2[0], p0[0])


def test_clip_by_value_then_per_tensor_then_global_norm():
    g = torch.tensor([[3.0, 0.0, 0.0, 4.0, 0.5]])            # tensors [0:2) and [2:5)
    segs = [(0, 2), (2, 5)]
    one = torch.ones(1, 1)
    a = g.clone()
    clip_(a, 2.0 * one, None, None, segs)
    assert a.tolist() == [[2.0, 0.0, 0.0, 2.0, 0.5]]
    b = g.clone()                                             # Keras clipnorm: each tensor
    clip_(b, None, one, None, segs)
    norm2 = math.hypot(4.0, 0.5)
    assert b[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 4 / norm2, 0.5 / norm2], abs=1e-6)
    c = g.clone()                                             # Keras global_clipnorm: all
    clip_(c, None, None, one, segs)
    total = math.sqrt(9 + 16 + 0.25)
    assert c[0].tolist() == pytest.approx((g[0] / total).tolist(), abs=1e-6)
    d = torch.tensor([[0.3, 0.4, 0.0, 0.0, 0.0]])             # under the limits: unchanged
    clip_(d, None, one, one, segs)
    assert d.tolist() == [[pytest.approx(0.3), pytest.approx(0.4), 0.0, 0.0, 0.0]]


def test_clip_limits_are_per_model():
    g = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    clip_(g, None, None, torch.tensor([[1.0], [math.inf]]), [(0, 2)])
    assert g[0].tolist() == pytest.approx([0.6, 0.8]) and g[1].tolist() == [3.0, 4.0]


def test_config_mistakes():
    """The optimizer's rules are the config's, checked once when a config is built."""
    from dnnlab.config import RunConfig, replace
    p, g = torch.zeros(1, 3), torch.zeros(1, 3)
    with pytest.raises(ConfigError, match="momentum"):
        replace(RunConfig(), **{"optim.name": "sgd", "optim.nesterov": True})
    with pytest.raises(ConfigError, match="optim.l2"):
        replace(RunConfig(), **{"optim.name": "ftrl", "optim.weight_decay": 0.1})
    with pytest.raises(ConfigError, match="choose"):
        FlatOptimizer("adadelta", p, g, hypers_of([OptimConfig()]))


def test_state_round_trips_for_resume():
    torch.manual_seed(4)
    cfgs = _configs("nadam")
    grads = torch.randn(6, 3, N)
    p_all, _ = _run_flat("nadam", cfgs, torch.zeros(3, N), grads)
    p, _ = _run_flat("nadam", cfgs, torch.zeros(3, N), grads[:3])
    _, first = _run_flat("nadam", cfgs, torch.zeros(3, N), grads[:3])
    saved = {k: v.clone() for k, v in first.state_tensors().items()}
    g = torch.zeros(3, N)
    again = FlatOptimizer("nadam", p, g, hypers_of(cfgs))
    again.load_state_tensors(saved)
    table = again.table(np.array([[c.lr for c in cfgs]] * 3))
    for step in range(3):
        g.copy_(grads[3 + step])
        again.step(table[step])
    assert torch.equal(p, p_all)


def test_compiled_step_equals_eager():
    """torch.compile of the one update function (a few seconds to compile on a CPU)."""
    torch.manual_seed(3)
    cfgs = _configs("nadam")
    p0, grads = torch.randn(3, N), torch.randn(4, 3, N)
    eager, _ = _run_flat("nadam", cfgs, p0, grads)
    fused, opt = _run_flat("nadam", cfgs, p0, grads, fused=True)
    assert opt.fused is not None                       # it compiled and stayed compiled
    torch.testing.assert_close(eager, fused, rtol=1e-5, atol=1e-6)


def test_a_stack_shares_one_ftrl_power():
    """The ftrl update is specialized on one lr_power (config.KEYS: it shapes a stack)."""
    p, g = torch.zeros(2, 3), torch.zeros(2, 3)
    hypers = hypers_of([OptimConfig(name="ftrl"), OptimConfig(name="ftrl", lr_power=-1.0)])
    with pytest.raises(ConfigError, match="lr_power must be the same for every model"):
        FlatOptimizer("ftrl", p, g, hypers)


def test_the_config_and_the_registry_name_the_same_optimizers():
    """config.OPTIMIZERS (torch-free, below the optimizers) lists exactly the registered records,
    in order: an optimizer added to one and not the other fails here."""
    from dnnlab import config
    from dnnlab.optim.flat import OPTIMIZERS as RECORDS
    assert tuple(RECORDS) == config.OPTIMIZERS
    assert {n for n, r in RECORDS.items() if r.uses_eps} == {
        "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw"}


def test_an_optimizer_is_one_record():
    """ARCHITECTURE.md's worked example: a new rule (signSGD with a per-model momentum and a host
    counter) is one OptimInfo; FlatOptimizer steps it, saves and compacts its state, with no
    other change. A second record of one name is refused."""
    from dnnlab.optim import flat

    def rule(p, g, s, k, c, tmp, nesterov, power):
        buf = s["momentum_buffer"].mul_(k["momentum"]).add_(g)
        p.addcmul_(torch.sign(buf), c[0])

    info = flat.OptimInfo(
        "signsgd", rule, uses_eps=False,
        state=lambda h, p: ({"momentum_buffer": torch.zeros_like(p)},
                            {"momentum": flat._col(h["momentum"], p)}),
        coefficients=lambda h, lrs, steps, momenta, host: [-lrs],
        host=lambda h: {"calls": np.zeros(len(h["lr"]))})
    flat.register(info)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            flat.register(info)
        cfgs = [OptimConfig(lr=0.1, momentum=0.0), OptimConfig(lr=0.2, momentum=0.5),
                OptimConfig(lr=0.3, momentum=0.9)]
        p0 = torch.randn(3, N, dtype=torch.float64)
        grads = torch.randn(3, 3, N, dtype=torch.float64)
        p, opt = _run_flat("signsgd", cfgs, p0, grads, dtype=torch.float64)
        for i, c in enumerate(cfgs):                     # the rule by hand, model by model
            w, m = p0[i].clone(), torch.zeros(N, dtype=torch.float64)
            for g in grads[:, i]:
                m = c.momentum * m + g
                w = w - c.lr * torch.sign(m)
            torch.testing.assert_close(p[i], w, rtol=0, atol=1e-12)
        assert set(opt.state_tensors()) == {"momentum_buffer", "t", "calls"}
        opt.select_(torch.tensor([2]), p[2:].clone(), torch.zeros(1, N, dtype=torch.float64))
        assert opt.k["momentum"].flatten().tolist() == [0.9] and opt.host["calls"].shape == (1,)
    finally:
        del flat.OPTIMIZERS["signsgd"]

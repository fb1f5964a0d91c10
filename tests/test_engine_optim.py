"""The stacked optimizers reproduce torch.optim (via make_optimizer) model by model."""

from functools import partial

import numpy as np
import pytest
import torch

from dnnlab.config import OPTIMIZERS, OptimConfig
from dnnlab.errors import ConfigError
from dnnlab.optim import clip_gradients_, make_optimizer
from dnnlab.train.engine_optim import StackedOptimizer, _fused_step, clip_, hypers_of

SHAPES = [(7, 5), (5,), (3, 5)]          # three parameter tensors per model
N = sum(int(np.prod(s)) for s in SHAPES)



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


def _split(row):
    out, o = [], 0
    for s in SHAPES:
        n = int(np.prod(s))
        out.append(row[o:o + n].view(s))
        o += n
    return out


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused-expressions"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_stacked_optimizer_matches_torch(name, fused):
    torch.manual_seed(0)
    cfgs = _configs(name)
    k = len(cfgs)
    p0 = torch.randn(k, N)
    grads = torch.randn(12, k, N)
    # reference: one torch optimizer per model
    ref = []
    for i, c in enumerate(cfgs):
        params = [t.clone().requires_grad_(True) for t in _split(p0[i])]
        opt = make_optimizer(params, c)
        for step in range(len(grads)):
            for t, gr in zip(params, _split(grads[step, i])):
                t.grad = gr.clone()
            opt.step()
        ref.append(torch.cat([t.detach().reshape(-1) for t in params]))
    # stacked
    p, g = p0.clone(), torch.zeros(k, N)
    opt = StackedOptimizer(name, p, g, hypers_of(cfgs), nesterov=False)
    if fused:      # the expressions torch.compile fuses, run as they are
        opt.fused = partial(_fused_step, name, False, opt.power)
    lrs = np.array([[c.lr for c in cfgs]] * len(grads))
    table = opt.table(lrs)
    for step in range(len(grads)):
        g.copy_(grads[step])
        opt.step(table[step])
    for i in range(k):
        torch.testing.assert_close(p[i], ref[i], rtol=1e-5, atol=1e-6)


def test_nesterov_and_zero_lr_freeze():
    torch.manual_seed(1)
    cfgs = [OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True) for _ in range(2)]
    p0 = torch.randn(2, N)
    params = [t.clone().requires_grad_(True) for t in _split(p0[0])]
    ref = make_optimizer(params, cfgs[0])
    p, g = p0.clone(), torch.zeros(2, N)
    opt = StackedOptimizer("sgd", p, g, hypers_of(cfgs), nesterov=True)
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
    p, g = torch.randn(2, N), torch.zeros(2, N)
    before = p.clone()
    opt = StackedOptimizer("ftrl", p, g, hypers_of(cfgs))
    table = opt.table(np.array([[0.1, 0.0]] * 3))
    for step in range(3):
        g.copy_(torch.randn(2, N))
        opt.step(table[step])
    assert torch.equal(p[1], before[1]) and not torch.equal(p[0], before[0])


def test_clip_per_model_matches_clip_gradients():
    torch.manual_seed(2)
    g = torch.randn(3, N) * torch.tensor([[0.1], [10.0], [3.0]])
    cfgs = [OptimConfig(clip_value=2.0, clip_norm=n) for n in (1.0, 5.0, None)]
    expected = []
    for i, c in enumerate(cfgs):
        params = [torch.zeros(s, requires_grad=True) for s in SHAPES]
        for t, x in zip(params, _split(g[i])):
            t.grad = x.clone()
        clip_gradients_(params, c)
        expected.append(torch.cat([t.grad.reshape(-1) for t in params]))
    norms = torch.tensor([[1.0], [5.0], [float("inf")]])
    clip_(g, 2.0, norms)
    torch.testing.assert_close(g, torch.stack(expected))


def test_ftrl_rejects_weight_decay():
    cfgs = [OptimConfig(name="ftrl", weight_decay=0.1)]
    with pytest.raises(ConfigError, match="weight_decay"):
        StackedOptimizer("ftrl", torch.zeros(1, 3), torch.zeros(1, 3), hypers_of(cfgs))


@pytest.mark.slow
def test_compiled_step_equals_eager():
    """torch.compile of the fused expressions (seconds to compile, hence marked slow)."""
    torch.manual_seed(3)
    cfgs = _configs("nadam")
    p0, grads = torch.randn(3, N), torch.randn(4, 3, N)
    out = []
    for fuse in (False, True):
        p, g = p0.clone(), torch.zeros(3, N)
        opt = StackedOptimizer("nadam", p, g, hypers_of(cfgs))
        if fuse:
            opt.fuse()
        table = opt.table(np.array([[c.lr for c in cfgs]] * len(grads)))
        for step in range(len(grads)):
            g.copy_(grads[step])
            opt.step(table[step])
        assert (opt.fused is not None) == fuse
        out.append(p)
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)

"""StackedMLP: exact conversion both ways, the same forward and gradients as K separate MLPs."""

import numpy as np
import pytest
import torch

from dnnlab.config import ModelConfig, OptimConfig, ScheduleConfig
from dnnlab.errors import ConfigError
from dnnlab.nn.mlp import build_mlp
from dnnlab.optim.schedules import make_schedule
from dnnlab.train.engine_model import StackedMLP
from dnnlab.train.engine_schedule import rates

CONFIGS = {
    "elu": ModelConfig(depth=3, width=8),
    "bn-before-prelu": ModelConfig(depth=3, width=8, batch_norm="before", activation="prelu",
                                   activation_param=0.25),
    "bn-after-input-bn": ModelConfig(depth=2, width=8, batch_norm="after", input_batch_norm=True,
                                     activation="selu", init="lecun_normal"),
    "hidden-sizes-tanh": ModelConfig(hidden=[9, 6, 4], activation="tanh", bias_init="constant",
                                     bias_value=0.1),
}



def _models(cfg, k=3):
    return [build_mlp(cfg, 5, 3, seed=s) for s in range(k)]


@pytest.mark.parametrize("name", CONFIGS)
def test_round_trip_is_exact(name):
    models = _models(CONFIGS[name])
    stack = StackedMLP.from_models(models)
    for i, m in enumerate(models):
        back = stack.to_mlp(i).state_dict()
        ref = m.state_dict()
        assert back.keys() == ref.keys()
        for key in ref:
            assert torch.equal(back[key], ref[key]), key
    again = StackedMLP.from_models([stack.to_mlp(i) for i in range(3)])
    assert torch.equal(again.flat, stack.flat)


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_and_gradients_match_separate_models(name):
    torch.manual_seed(0)
    models = _models(CONFIGS[name])
    stack = StackedMLP.from_models(models)
    x = torch.randn(3, 16, 5)
    out = stack(x)
    out.square().sum().backward()
    for i, m in enumerate(models):
        ref = m(x[i])
        ref.square().sum().backward()
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)
        grads = {k: p.grad for k, p in m.named_parameters()}
        for s in stack.slots:
            g = stack.grad[i, s.offset:s.offset + s.numel].view(s.shape)
            torch.testing.assert_close(g.t() if s.transposed else g, grads[s.key],
                                       rtol=1e-4, atol=1e-4, msg=s.key)
        # the BN running statistics moved exactly as nn.BatchNorm1d's did
        state = stack.to_mlp(i).state_dict()
        for key, v in m.state_dict().items():
            if "running" in key or "num_batches" in key:
                torch.testing.assert_close(state[key], v, rtol=1e-5, atol=1e-6, msg=key)
    stack.eval()
    x2 = torch.randn(7, 5)                                    # one batch shared by all models
    for i, m in enumerate(models):
        torch.testing.assert_close(stack(x2)[i], m.eval()(x2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["dropout", "alpha"])
def test_dropout_rate_per_model(kind):
    cfgs = [ModelConfig(depth=2, width=64, dropout=r, dropout_kind=kind, activation="selu")
            for r in (0.0, 0.5)]
    models = [build_mlp(c, 5, 3, seed=1) for c in cfgs]
    stack = StackedMLP.from_models(models)
    x = torch.randn(32, 5)
    a, b = stack(x), stack(x)
    torch.testing.assert_close(a[0], b[0])                           # rate 0: deterministic
    torch.testing.assert_close(a[0], models[0](x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[1], b[1])                            # rate 0.5: masks differ
    stack.eval()
    torch.testing.assert_close(stack(x)[1], models[1].eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers, calls", [("all", 3), ("last", 1)])
def test_dropout_layers_decides_where_the_stack_drops(layers, calls, monkeypatch):
    cfg = ModelConfig(depth=3, width=8, dropout=0.2, dropout_kind="alpha", activation="selu",
                      dropout_layers=layers)
    models = [build_mlp(cfg, 5, 3, seed=s) for s in (0, 1)]
    stack = StackedMLP.from_models(models)
    seen = []
    real = stack._drop
    monkeypatch.setattr(stack, "_drop", lambda x, r: (seen.append(x.shape), real(x, r))[1])
    stack(torch.randn(4, 5))
    assert len(seen) == calls
    stack.eval()
    x = torch.randn(6, 5)
    for i, m in enumerate(models):                        # inference: no dropout anywhere
        torch.testing.assert_close(stack(x)[i], m.eval()(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="shape|stack"):   # "all" and "last" are not stacked
        other = "last" if layers == "all" else "all"
        StackedMLP.from_models([models[0], build_mlp(
            ModelConfig(**{**cfg.__dict__, "dropout_layers": other}), 5, 3)])


def test_dropout_keeps_the_mean_and_alpha_dropout_the_variance():
    torch.manual_seed(0)
    x = torch.randn(1, 200_000, 4)
    for kind in ("dropout", "alpha"):
        cfg = ModelConfig(depth=1, width=4, dropout=0.3, dropout_kind=kind)
        stack = StackedMLP.from_models([build_mlp(cfg, 4, 2)])
        y = stack._drop(x, stack.dropout)
        assert abs(float(y.mean())) < 0.01
        if kind == "alpha":
            assert abs(float(y.std()) - 1.0) < 0.01
        else:
            assert abs(float((y == 0).float().mean()) - 0.3) < 0.01


def test_select_keeps_the_chosen_models():
    models = _models(CONFIGS["bn-before-prelu"], k=4)
    stack = StackedMLP.from_models(models)
    stack.select_(torch.tensor([3, 1]))
    assert stack.k == 2
    for i, src in enumerate((3, 1)):
        for key, v in models[src].state_dict().items():
            assert torch.equal(stack.to_mlp(i).state_dict()[key], v), key


def test_models_of_another_shape_are_refused():
    with pytest.raises(ConfigError, match="activation"):
        StackedMLP.from_models([build_mlp(ModelConfig(depth=2), 5, 3),
                                build_mlp(ModelConfig(depth=2, activation="relu"), 5, 3)])


@pytest.mark.parametrize("schedule", [
    ScheduleConfig(name="none"),
    ScheduleConfig(name="power", decay_steps=3, power=0.5),
    ScheduleConfig(name="power", decay_steps=7, unit="step"),
    ScheduleConfig(name="exponential", decay_steps=2),
    ScheduleConfig(name="piecewise", boundaries=[1, 3], values=[0.1, 0.05, 0.01]),
    ScheduleConfig(name="1cycle", pct_start=0.3),
    ScheduleConfig(name="1cycle", max_lr=0.5, div_factor=20.0),
], ids=lambda s: f"{s.name}-{s.unit}")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_closed_form_rates_match_the_schedule(schedule, optimizer):
    cfg = OptimConfig(name=optimizer, lr=0.02, momentum=0.9 if optimizer == "sgd" else 0.0,
                      schedule=schedule)
    spe, epochs = 5, 4
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=cfg.lr, momentum=cfg.momentum)
    sched = make_schedule(opt, cfg, spe, epochs)
    lrs, moms = [], []
    for _ in range(epochs):
        for _ in range(spe):
            lrs.append(opt.param_groups[0]["lr"])
            moms.append(opt.param_groups[0]["momentum"])
            sched.on_batch_end()
        sched.on_epoch_end({"val_loss": 1.0})
    got, got_m = [], []
    for e in range(epochs):
        lr, mom = rates(cfg, e * spe + np.arange(spe), e, spe, epochs)
        got += list(lr)
        got_m += list(mom) if mom is not None else [cfg.momentum] * spe
    assert got == pytest.approx(lrs, rel=1e-12)
    assert got_m == pytest.approx(moms, rel=1e-12)

import numpy as np
import pytest
import torch
from torch import nn

from dnnlab.config import ModelConfig
from dnnlab.errors import DnnlabError
from dnnlab.nn.init import init_
from dnnlab.nn.mlp import MLP, build_mlp


def _cfg(**kw):
    base = dict(depth=3, width=8)
    base.update(kw)
    return ModelConfig(**base)


def _call_order(block, x):
    order = []
    for name, mod in block.named_children():
        mod.register_forward_hook(lambda m, i, o, name=name: order.append(name))
    block(x)
    return order


@pytest.mark.parametrize("bn,expected", [
    ("before", ["linear", "bn", "act", "drop"]),
    ("after", ["linear", "act", "bn", "drop"]),
    ("none", ["linear", "act", "drop"]),
])
def test_block_order(bn, expected):
    model = build_mlp(_cfg(batch_norm=bn, dropout=0.1), 5, 3)
    assert _call_order(model.hidden[1], torch.randn(4, 8)) == expected
    assert (model.hidden[0].linear.bias is None) == (bn == "before")


def test_shapes_names_and_absent_modules():
    model = build_mlp(_cfg(hidden=[7, 6, 5]), 10, 4)
    assert [b.linear.out_features for b in model.hidden] == [7, 6, 5]
    assert model.head.in_features == 5 and model.head.out_features == 4
    assert model(torch.randn(9, 10)).shape == (9, 4)
    assert model.features(torch.randn(9, 10), 2).shape == (9, 6)
    for absent in ("input_bn", "input_dropout"):
        assert not hasattr(model, absent)
    for absent in ("bn", "drop"):
        assert not hasattr(model.hidden[0], absent)
    assert (model.in_features, model.n_classes) == (10, 4)
    names = {k for k, _ in model.named_parameters()}
    assert {"hidden.0.linear.weight", "hidden.2.linear.bias", "head.weight", "head.bias"} <= names


def test_images_are_flattened():
    model = build_mlp(_cfg(), 12, 3)
    x = torch.randn(5, 3, 4)
    assert torch.equal(model(x), model(x.reshape(5, 12)))


def test_bn_momentum_is_keras_meaning():
    model = build_mlp(_cfg(batch_norm="after", input_batch_norm=True, bn_momentum=0.99), 6, 3)
    bn = model.hidden[0].bn
    assert bn.momentum == 0.01 and bn.eps == 1e-3 and model.input_bn.momentum == 0.01
    x = torch.randn(64, 6) + 3.0
    model.train()(x)
    # Keras: running = 0.99 * running + 0.01 * batch_mean (running starts at 0)
    assert torch.allclose(model.input_bn.running_mean, 0.01 * x.mean(0), atol=1e-6)


def test_dropout_kinds():
    m = build_mlp(_cfg(dropout=0.2, input_dropout=0.1, dropout_kind="alpha"), 6, 3)
    assert type(m.hidden[0].drop) is nn.AlphaDropout and type(m.input_dropout) is nn.AlphaDropout
    assert m.hidden[0].drop.p == 0.2 and m.input_dropout.p == 0.1
    m = build_mlp(_cfg(dropout=0.2), 6, 3)
    assert type(m.hidden[0].drop) is nn.Dropout


def test_dropout_layers_last_puts_one_dropout_before_the_output():
    m = build_mlp(_cfg(dropout=0.3, dropout_kind="alpha", dropout_layers="last"), 6, 3)
    drops = ["drop" in block._modules for block in m.hidden]
    assert drops == [False] * (len(m.hidden) - 1) + [True]
    assert m.hidden[-1].drop.p == 0.3
    assert all("drop" in block._modules for block in build_mlp(_cfg(dropout=0.3), 6, 3).hidden)


def test_features_and_forward_agree():
    model = build_mlp(_cfg(input_batch_norm=True, batch_norm="before"), 6, 3).eval()
    x = torch.randn(10, 6)
    assert torch.allclose(model.head(model.features(x, 3)), model(x))
    assert torch.allclose(model.features(x, 0), model.input_bn(x))
    with pytest.raises(DnnlabError, match="0..3"):
        model.features(x, 4)


def test_penalty_by_hand():
    model = build_mlp(_cfg(depth=2, width=4, l1=0.01, l2=0.001), 3, 2)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(100.0)                       # biases must not count
    kernels = [model.hidden[0].linear.weight, model.hidden[1].linear.weight, model.head.weight]
    ws = [k.detach().numpy().astype(np.float64) for k in kernels]
    expected = sum(0.01 * np.abs(w).sum() + 0.001 * (w**2).sum() for w in ws)
    assert model.penalty().item() == pytest.approx(expected, rel=1e-5)
    model.penalty().backward()
    assert model.head.weight.grad is not None and model.head.bias.grad is None
    assert build_mlp(_cfg(), 3, 2).penalty().item() == 0.0


def test_max_norm():
    model = build_mlp(_cfg(max_norm=1.0), 20, 3, seed=1)
    with torch.no_grad():
        model.hidden[0].linear.weight.mul_(10)
        model.hidden[1].linear.weight.mul_(1e-3)
    small = model.hidden[1].linear.weight.detach().clone()
    head = model.head.weight.detach().clone()
    model.apply_max_norm_()
    for b in model.hidden:
        assert b.linear.weight.norm(dim=1).max().item() <= 1.0 + 1e-6
    assert torch.allclose(model.hidden[0].linear.weight.norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.equal(model.hidden[1].linear.weight, small)    # short rows are left alone
    assert torch.equal(model.head.weight, head)                 # the book: hidden layers only
    unconstrained = build_mlp(_cfg(), 20, 3)
    before = unconstrained.hidden[0].linear.weight.detach().clone()
    unconstrained.apply_max_norm_()
    assert torch.equal(before, unconstrained.hidden[0].linear.weight)


def test_build_is_deterministic_and_draws_in_layer_order():
    cfg = _cfg(init="he_normal", bias_init="constant", bias_value=0.1)
    a, b, c = build_mlp(cfg, 6, 3, seed=5), build_mlp(cfg, 6, 3, seed=5), build_mlp(cfg, 6, 3, seed=6)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.head.weight, c.head.weight)
    g = torch.Generator().manual_seed(5)
    for layer in [blk.linear for blk in a.hidden] + [a.head]:
        expected = init_(torch.empty_like(layer.weight), "he_normal", generator=g)
        assert torch.equal(layer.weight, expected)
        assert torch.all(layer.bias == 0.1)


def test_build_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_mlp(_cfg(), 6, 3, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_constant_init_reaches_every_kernel():
    model = build_mlp(_cfg(init="constant", init_value=0.5), 4, 3)
    assert all(torch.all(w == 0.5) for w in model.kernels())


def test_selu_lecun_normal_self_normalizes():
    torch.manual_seed(0)
    cfg = ModelConfig(depth=20, width=100, activation="selu", init="lecun_normal")
    model = build_mlp(cfg, 100, 10, seed=0).eval()
    x = torch.randn(2000, 100)
    with torch.no_grad():
        h = model.features(x, 20)
    assert abs(h.mean().item()) < 0.15 and 0.8 < h.std().item() < 1.2


def test_bad_shapes():
    with pytest.raises(DnnlabError, match="2 classes"):
        build_mlp(_cfg(), 5, 1)
    assert isinstance(build_mlp(_cfg(depth=0), 5, 2), MLP)     # depth 0: logistic regression

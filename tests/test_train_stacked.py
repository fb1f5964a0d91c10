"""StackedMLP: exact conversion both ways; its hand-written backward gives autograd's gradients
on K separate MLPs, for every activation, BN placement and input stage."""

import pytest
import torch
import torch.nn.functional as F

from dnnlab.config import ACTIVATIONS, ModelConfig
from dnnlab.errors import ConfigError
from dnnlab.nn.mlp import build_mlp
from dnnlab.train.stacked import StackedMLP

CONFIGS = {
    "elu": ModelConfig(depth=3, width=8),
    "bn-before-prelu": ModelConfig(depth=3, width=8, batch_norm="before", activation="prelu",
                                   activation_param=0.25),
    "bn-after-input-bn": ModelConfig(depth=2, width=8, batch_norm="after", input_batch_norm=True,
                                     activation="selu", init="lecun_normal"),
    "bn-before-input-bn": ModelConfig(depth=2, width=8, batch_norm="before", input_batch_norm=True),
    "hidden-sizes-tanh": ModelConfig(hidden=[9, 6, 4], activation="tanh", bias_init="constant",
                                     bias_value=0.1),
    **{a: ModelConfig(depth=2, width=6, activation=a) for a in ACTIVATIONS if a != "rrelu"},
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
def test_hand_written_backward_equals_autograd_on_separate_models(name):
    torch.manual_seed(0)
    models = _models(CONFIGS[name])
    stack = StackedMLP.from_models(models)
    x, y = torch.randn(3, 16, 5), torch.randint(0, 3, (3, 16))
    loss, correct = stack.train_step(x, y)
    for i, m in enumerate(models):
        logits = m(x[i])
        ref = F.cross_entropy(logits, y[i])
        ref.backward()
        torch.testing.assert_close(loss[i], ref.detach(), rtol=1e-5, atol=1e-6)
        assert int(correct[i]) == int((logits.argmax(1) == y[i]).sum())
        grads = {k: p.grad for k, p in m.named_parameters()}
        for s in stack.slots:
            g = stack.grad[i, s.offset:s.offset + s.numel].view(s.shape)
            torch.testing.assert_close(g.t() if s.transposed else g, grads[s.key],
                                       rtol=1e-4, atol=1e-5, msg=s.key)
        # the BN running statistics moved exactly as nn.BatchNorm1d's did
        state = stack.to_mlp(i).state_dict()
        for key, v in m.state_dict().items():
            if "running" in key or "num_batches" in key:
                torch.testing.assert_close(state[key], v, rtol=1e-5, atol=1e-6, msg=key)
    stack.eval()
    x2 = torch.randn(7, 5)                                    # one batch shared by all models
    for i, m in enumerate(models):
        torch.testing.assert_close(stack(x2)[i], m.eval()(x2), rtol=1e-5, atol=1e-5)


def test_shared_batch_gives_each_model_the_same_gradients_as_its_own_copy():
    models = _models(CONFIGS["bn-after-input-bn"])
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    shared = StackedMLP.from_models(models)
    shared.train_step(x, y)
    own = StackedMLP.from_models(models)
    own.train_step(x.expand(3, -1, -1).clone(), y.expand(3, -1).clone())
    torch.testing.assert_close(shared.grad, own.grad)


@pytest.mark.parametrize("kind", ["dropout", "alpha"])
def test_input_bn_gradients_through_input_dropout_equal_autograd(kind, monkeypatch):
    """With dropout between the input BN and the first layer, gamma's and beta's gradients go
    through the mask (the backward's second branch); the masks are fixed so autograd can follow."""
    cfg = ModelConfig(depth=2, width=8, input_batch_norm=True, input_dropout=0.3,
                      dropout_kind=kind, activation="selu")
    models = _models(cfg, k=2)
    stack = StackedMLP.from_models(models)
    x, y = torch.randn(2, 16, 5), torch.randint(0, 3, (2, 16))
    mult = torch.rand(2, 16, 5) * 2                         # stands for the drawn masks
    shift = torch.randn(2, 16, 5) if kind == "alpha" else torch.zeros(2, 16, 5)

    def fixed_drop(h, rates, tape=None):
        if tape is not None:
            tape.append(mult)
        return h * mult + shift
    monkeypatch.setattr(stack, "_drop", fixed_drop)
    stack.train_step(x, y)
    for i, m in enumerate(models):
        h = m.input_bn(x[i]) * mult[i] + shift[i]
        for block in m.hidden:
            h = block(h)
        F.cross_entropy(m.head(h), y[i]).backward()
        for s in stack.slots:
            g = stack.grad[i, s.offset:s.offset + s.numel].view(s.shape)
            ref = dict(m.named_parameters())[s.key].grad
            torch.testing.assert_close(g.t() if s.transposed else g, ref, rtol=1e-4, atol=1e-5,
                                       msg=s.key)


def test_rrelu_draws_slopes_in_training_and_uses_their_mean_at_inference():
    cfg = ModelConfig(depth=2, width=32, activation="rrelu")
    m = build_mlp(cfg, 5, 3)
    stack = StackedMLP.from_models([m])
    x = torch.randn(64, 5)
    loss, _ = stack.train_step(x, torch.randint(0, 3, (64,)))
    assert torch.isfinite(loss).all() and stack.grad.abs().sum() > 0
    stack.eval()
    torch.testing.assert_close(stack(x)[0], m.eval()(x), rtol=1e-5, atol=1e-5)


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
    monkeypatch.setattr(stack, "_drop", lambda x, r, tape=None: (seen.append(x.shape), real(x, r))[1])
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


@pytest.mark.parametrize("cfg", [
    ModelConfig(depth=3, width=100, batch_norm="before", input_batch_norm=True),
    ModelConfig(depth=4, width=100),                        # the stacked layer gradients
], ids=["bn", "plain"])
def test_a_training_step_gives_the_same_bits_on_one_thread_or_two(cfg):
    """Batch norm runs on one thread inside a step (torch's BN sums in a thread-dependent
    order), and the products give the same bits on any threads, so the CIFAR-10 study, which
    changes a stage's threads between epochs, stays reproducible."""
    x, y = torch.randn(3, 32, 3072), torch.randint(0, 10, (3, 32))
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            stack = StackedMLP.from_models([build_mlp(cfg, 3072, 10, seed=s) for s in range(3)])
            stack.train_step(x, y)
            runs.append((stack.grad.clone(), {k: v.clone() for k, v in stack.buffers_.items()}))
        assert torch.get_num_threads() == 2                 # the caller's threads came back
    finally:
        torch.set_num_threads(before)
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("activation", ["elu", "selu", "tanh", "relu"])
def test_stacked_layer_gradients_equal_the_per_layer_ones_and_autograd(k, activation):
    """Equal-width plain nets take every hidden kernel's and bias's gradient in one batched
    product and one sum after the backward loop (StackedMLP._stacked_grads), over the layers'
    outputs kept in one buffer; the result is the per-layer loop's and autograd's, for one model
    (the exercise's K = 1) and several."""
    cfg = ModelConfig(depth=4, width=8, activation=activation)
    models = [build_mlp(cfg, 5, 3, seed=s) for s in range(k)]
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    stacked, per_layer = StackedMLP.from_models(models), StackedMLP.from_models(models)
    per_layer._grad_blocks = None                              # the general loop
    assert stacked._grad_blocks is not None
    for _ in range(2):                                        # the second step reuses the buffers
        loss, _ = stacked.train_step(x, y)
        per_layer.train_step(x, y)
        torch.testing.assert_close(stacked.grad, per_layer.grad, rtol=1e-6, atol=1e-7)
    for i, m in enumerate(models):
        m.zero_grad()
        ref = F.cross_entropy(m(x), y)
        ref.backward()
        torch.testing.assert_close(loss[i], ref.detach(), rtol=1e-5, atol=1e-6)
        grads = {key: p.grad for key, p in m.named_parameters()}
        for s in stacked.slots:
            g = stacked.grad[i, s.offset:s.offset + s.numel].view(s.shape)
            torch.testing.assert_close(g.t() if s.transposed else g, grads[s.key],
                                       rtol=1e-4, atol=1e-5, msg=s.key)

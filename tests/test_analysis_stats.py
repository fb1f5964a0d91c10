"""layer_stats: per-layer activation statistics and gradients, measured without side effects."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnnlab.analysis.stats import compare, hidden_stats, layer_stats
from dnnlab.config import RunConfig, replace
from dnnlab.errors import DnnlabError
from dnnlab.nn import build_mlp


def _mlp(**overrides):
    cfg = replace(RunConfig(), **{"model.depth": 3, "model.width": 8, "model.activation": "relu",
                                  **overrides})
    return build_mlp(cfg.model, 5, 3, seed=0)


def test_stats_match_a_manual_forward_and_backward():
    torch.manual_seed(0)
    model = _mlp()
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    stats = layer_stats(model, x, y)
    assert [s["layer"] for s in stats] == [1, 2, 3, 4]
    assert [s["output"] for s in stats] == [False, False, False, True]
    assert [s["units"] for s in stats] == [8, 8, 8, 3]
    h, acts = x, []
    for block in model.hidden:
        h = torch.relu(block.linear(h))
        acts.append(h)
    logits = model.head(h)
    acts.append(logits)
    for s, a in zip(stats, acts):
        assert s["mean"] == pytest.approx(float(a.detach().mean()), rel=1e-5, abs=1e-7)
        assert s["std"] == pytest.approx(float(a.detach().std()), rel=1e-5)
    F.cross_entropy(logits, y).backward()
    kernels = [b.linear.weight for b in model.hidden] + [model.head.weight]
    for s, w in zip(stats, kernels):
        assert s["grad_norm"] == pytest.approx(float(w.grad.norm()), rel=1e-5)
    assert all(s["out_grad_rms"] > 0 for s in stats)


def test_no_side_effects_on_grads_mode_or_batchnorm():
    model = _mlp(**{"model.batch_norm": "after", "model.dropout": 0.5})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    layer_stats(model, x, y, train=True)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.eval()
    layer_stats(model, x, y)
    assert not model.training


def test_eval_mode_by_default_so_dropout_is_off():
    model = _mlp(**{"model.dropout": 0.5})
    x = torch.randn(16, 5)
    a = layer_stats(model, x)
    b = layer_stats(model, x)
    assert [s["std"] for s in a] == [s["std"] for s in b]
    assert all(s["grad_norm"] is None and s["out_grad_rms"] is None for s in a)


def test_dead_and_constant_units():
    model = _mlp()
    with torch.no_grad():
        model.hidden[0].linear.bias[:4] = -1e3      # half of layer 1 can never fire
    stats = hidden_stats(layer_stats(model, torch.randn(128, 5)))
    assert len(stats) == 3
    assert stats[0]["dead"] == pytest.approx(0.5)
    assert stats[0]["constant"] == pytest.approx(0.5)
    assert stats[1]["dead"] <= 0.5


def test_a_model_without_dense_layers_is_a_clear_error():
    with pytest.raises(DnnlabError, match="nn.Linear"):
        layer_stats(nn.Sequential(nn.ReLU()), torch.randn(2, 3))


def test_saturated_outputs_are_where_the_derivative_is_under_4_percent():
    from dnnlab.analysis.stats import saturated_fraction
    sig = torch.sigmoid(torch.tensor([-10.0, -4.0, 0.0, 4.0, 10.0]))   # sigma' = .00005 .018 .25
    assert saturated_fraction(sig, nn.Sigmoid()) == pytest.approx(2 / 5)
    assert saturated_fraction(torch.tanh(torch.tensor([3.0, 0.5])), nn.Tanh()) == pytest.approx(0.5)
    assert saturated_fraction(F.elu(torch.tensor([-5.0, -1.0, 2.0])), nn.ELU()) == pytest.approx(1 / 3)
    assert saturated_fraction(torch.zeros(4), nn.ReLU()) == 0.0      # ReLU zeros are dead, not saturated
    model = _mlp(**{"model.activation": "sigmoid", "model.init": "normal", "model.init_value": 5.0})
    stats = hidden_stats(layer_stats(model, torch.randn(64, 5)))
    assert stats[1]["saturated"] > 0.5


def test_dead_units_are_seen_through_a_batch_norm_after_the_activation():
    model = _mlp(**{"model.batch_norm": "after"})
    with torch.no_grad():
        model.hidden[0].linear.bias[:4] = -1e3
    stats = hidden_stats(layer_stats(model, torch.randn(128, 5), train=True))
    assert stats[0]["dead"] == pytest.approx(0.5)


def test_compare_is_the_labs_one_noise_rule():
    same = compare([0.50, 0.51, 0.49], [0.50, 0.51, 0.49])
    assert same["difference"] == 0.0 and not same["beyond_noise"]
    apart = compare([0.60, 0.61, 0.59], [0.50, 0.51, 0.49])
    assert apart["difference"] == pytest.approx(0.10) and apart["beyond_noise"]
    assert apart["t"] == pytest.approx(0.10 / (2 * 0.0001 / 3) ** 0.5)
    one = compare([0.6], [0.5])
    assert one["p"] is None and one["difference"] == pytest.approx(0.1)
    # 2.5 standard errors apart with 3 seeds a side: Welch's p is 0.067, within noise (the
    # "two standard errors" rule some verdicts used to apply would have called it real)
    near = compare([0.5204, 0.5304, 0.5104], [0.50, 0.51, 0.49])
    assert near["t"] == pytest.approx(2.5, rel=1e-3) and near["p"] == pytest.approx(0.067, abs=2e-3)
    assert near["beyond_noise"] is False
    assert near["test"] == "welch"


def test_compare_paired_by_seed_removes_the_spread_both_sides_share():
    """The same three models read two ways: each seed gains 0.010-0.012, while the seeds
    themselves lie 0.05 apart. Welch sees only the seed spread; the paired test sees the gain."""
    plain = [0.50, 0.55, 0.60]
    mc = [0.511, 0.560, 0.612]
    welch_view = compare(mc, plain)
    paired = compare(mc, plain, paired=True)
    assert welch_view["beyond_noise"] is False and welch_view["p"] > 0.5
    assert paired["test"] == "paired" and paired["beyond_noise"] is True
    assert paired["difference"] == pytest.approx(0.011)
    assert paired["t"] == pytest.approx(0.011 / (0.001 / 3 ** 0.5))       # sd of (11, 10, 12) e-3
    assert paired["p"] == pytest.approx(0.0030, abs=3e-4)                  # t = 19.05, df = 2
    # a pair with a missing side is left out; too few pairs: no test
    assert compare([0.5, None, 0.6], [0.4, 0.5, 0.5], paired=True)["difference"] == pytest.approx(0.1)
    assert compare([0.5, None, None], [0.4, 0.5, 0.5], paired=True)["p"] is None
    assert compare([0.5, 0.6], [0.4, 0.5, 0.5], paired=False)["test"] == "welch"
    with pytest.raises(ValueError, match="pairs need one value per seed"):
        compare([0.5, 0.6], [0.4, 0.5, 0.5], paired=True)

import math

import pytest
import torch
from torch import nn

from dnnlab.analysis.mc_dropout import (
    enable_mc_dropout,
    expected_calibration_error,
    mc_dropout_eval,
    mc_predict,
    mutual_information,
    plain_eval,
    plain_predict,
    predictive_entropy,
)
from dnnlab.config import ModelConfig
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp


def _net(**kw):
    cfg = ModelConfig(depth=2, width=16, **kw)
    return build_mlp(cfg, 8, 3, seed=0)


def test_bn_stays_in_eval_while_dropout_samples():
    model = _net(batch_norm="before", dropout=0.3)
    x = torch.randn(64, 8)
    model.train()  # exercise a BN update first so the running stats are not the defaults
    model(x)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with enable_mc_dropout(model) as drops:
        assert len(drops) == 2 and all(d.training for d in drops)
        assert all(not b.bn.training for b in model.hidden)
        a, b = model(x), model(x)
    assert not torch.equal(a, b)  # dropout samples differ between passes
    for k, v in model.state_dict().items():
        if "running" in k:
            assert torch.equal(v, stats[k]), k  # running statistics untouched


def test_bn_only_model_is_deterministic_under_mc_dropout():
    model = _net(batch_norm="after")
    model.train()
    model(torch.randn(32, 8))
    x = torch.randn(16, 8)
    with enable_mc_dropout(model) as drops:
        assert drops == []
        a, b = model(x), model(x[:5])
    torch.testing.assert_close(a[:5], b, rtol=0, atol=1e-6)  # per-example: running stats, not batch stats
    with pytest.raises(DnnlabError, match="dropout"):
        mc_predict(model, x, 3)


def test_alpha_dropout_included_and_modes_restored():
    model = _net(activation="selu", init="lecun_normal", dropout=0.2, dropout_kind="alpha",
                 input_dropout=0.1)
    model.train()
    model.hidden[0].act.eval()  # a mixed state must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    with enable_mc_dropout(model) as drops:
        assert sorted(type(d).__name__ for d in drops) == ["AlphaDropout"] * 3
        assert not model.training and not model.hidden[0].training
    assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()
    with pytest.raises(RuntimeError):
        with enable_mc_dropout(model):
            raise RuntimeError("boom")
    assert not any(m.training for m in model.modules())


def test_mc_predict_shapes_seed_and_mean_close_to_plain():
    model = _net(dropout=0.1)
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    p = mc_predict(model, x, n_samples=100, batch_size=25, seed=3)
    assert p.shape == (100, 50, 3)
    torch.testing.assert_close(p.sum(-1), torch.ones(100, 50))
    assert torch.equal(p, mc_predict(model, x, n_samples=100, batch_size=25, seed=3))
    assert not torch.equal(p[0], p[1])
    assert model.training  # build_mlp returns a module in training mode; it stays so
    plain = plain_predict(model, x)
    # one pass is noisy; the average of 100 lies much closer to the eval-mode output
    assert (p.mean(0) - plain).abs().mean() < 0.5 * (p[0] - plain).abs().mean()


def test_entropy_and_ece_values():
    uniform = torch.full((4, 5), 0.2)
    torch.testing.assert_close(predictive_entropy(uniform), torch.full((4,), math.log(5)))
    onehot = torch.eye(3)
    torch.testing.assert_close(predictive_entropy(onehot), torch.zeros(3))
    stacked = torch.stack([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])])
    torch.testing.assert_close(predictive_entropy(stacked), torch.tensor([math.log(2)]))
    # two predictions at confidence 0.9 (bin 14), one right one wrong: |0.5 - 0.9| = 0.4 over 2 of 4
    # two at 0.6 (bin 9), both right: |1 - 0.6| = 0.4 over 2 of 4 -> ECE 0.4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = torch.tensor([0, 1, 0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)
    assert expected_calibration_error(onehot, torch.arange(3)) == 0.0


def test_eval_dicts():
    torch.manual_seed(0)
    model = _net(dropout=0.2)
    x, y = torch.randn(40, 8), torch.randint(0, 3, (40,))
    mc = mc_dropout_eval(model, x, y, n_samples=4, seed=0)
    pl = plain_eval(model, x, y)
    for d in (mc, pl):
        assert set(d) == {"accuracy", "nll", "ece", "entropy", "seconds", "n_samples"}
        assert 0 <= d["accuracy"] <= 1 and 0 <= d["ece"] <= 1 and d["seconds"] >= 0
        assert 0 <= d["entropy"] <= math.log(3) + 1e-6
    assert mc["n_samples"] == 4 and pl["n_samples"] == 0
    with pytest.raises(DnnlabError):
        mc_predict(model, x, 0)


def test_custom_dropout_subclass_is_switched_on():
    class MyDrop(nn.Dropout):
        pass

    model = nn.Sequential(nn.Linear(4, 4), MyDrop(0.5), nn.BatchNorm1d(4)).eval()
    with enable_mc_dropout(model) as drops:
        assert drops == [model[1]] and model[1].training and not model[2].training


def test_mutual_information():
    agree = torch.tensor([[[0.7, 0.3]], [[0.7, 0.3]]])
    torch.testing.assert_close(mutual_information(agree), torch.zeros(1))
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])   # each pass certain, they disagree
    torch.testing.assert_close(mutual_information(disagree), torch.tensor([math.log(2)]))
    with pytest.raises(DnnlabError):
        mutual_information(torch.full((3, 2), 0.5))

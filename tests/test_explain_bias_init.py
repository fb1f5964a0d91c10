"""bias-init: random biases vs zeros stay within seed noise; the verdict follows the numbers."""


import pytest
import torch

from dnnlab.analysis.stats import mean_std, pm
from dnnlab.config import RunConfig, replace
from dnnlab.nn import build_mlp
from dnnlab.studies.explain import bias_init, run_topic
from dnnlab.studies.explain.bias_init import set_biases


def test_set_biases():
    cfg = replace(RunConfig(), **{"model.depth": 2, "model.width": 50})
    model = build_mlp(cfg.model, 20, 3)
    layers = [b.linear for b in model.hidden] + [model.head]
    set_biases(model, "constant 1", 0)
    assert all(torch.all(l.bias == 1) for l in layers)
    set_biases(model, "random (like weights)", 0)
    first = layers[0].bias.detach()
    assert first.std() == pytest.approx((2 / 20) ** 0.5, rel=0.4)   # He std for fan_in 20
    set_biases(model, "zeros", 0)
    assert all(torch.all(l.bias == 0) for l in layers)


@pytest.fixture(scope="module")
def finding(tmp_path_factory):
    out = tmp_path_factory.mktemp("bias")
    return out, run_topic("bias-init", out, quick=True)


def test_random_biases_are_within_seed_noise_of_zeros(finding):
    _, f = finding
    assert len(f.per_seed) == bias_init.TOPIC.quick["seeds"] == 5
    random, one = f.verdicts
    assert random.test == "paired t" and random.p >= 0.05 and random.outcome != "refuted"
    assert all(len(v) == 5 for v in random.evidence.values())
    # p >= 0.05 alone does not confirm "no difference": only an interval within the noise does
    assert ("000 answer 2 (book)" in f.confirms) == (random.outcome == "supported")
    assert "000 answer 2 (book)" not in f.refutes
    if one.outcome == "refuted":
        assert any(a.startswith("004 answer 2") for a in f.refutes)
        assert "did worse" in f.verdict or "beat zeros" in f.verdict


def test_finding_fields_and_figure(finding):
    out, f = finding
    assert f.topic == "bias-init" and f.question == bias_init.QUESTION
    assert f.figure == out / "bias_init.png" and f.figure.stat().st_size > 10_000
    zeros = [r["zeros_accuracy"] for r in f.per_seed]
    assert f"zeros {pm(*mean_std(zeros))} %" in f.verdict

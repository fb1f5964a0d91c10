import numpy as np
import torch

from dnnlab.errors import DataError
from dnnlab.studies.explain import mc_dropout as topic
from dnnlab.studies.explain import run_topic


def test_auroc_values():
    assert topic.auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert topic.auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert topic.auroc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5   # ties count half
    assert topic.auroc(np.array([0.1, 0.3]), np.array([0.2, 0.4])) == 0.75


def test_ood_fallback_is_pixel_shuffled_mnist(monkeypatch):
    def missing(*a, **k):
        raise DataError("not found")
    monkeypatch.setattr(topic, "load_dataset", missing)
    x = torch.rand(10, 784)
    ood, source = topic.ood_inputs(x, 4, seed=0)
    assert source == topic.SHUFFLED and ood.shape == (4, 784)
    torch.testing.assert_close(ood.sort(1).values, x[:4].sort(1).values)   # same pixels...
    assert not torch.equal(ood, x[:4])                                      # ...moved around


def test_mc_dropout_quick(tmp_path):
    f = run_topic("mc-dropout", tmp_path, quick=True, seed=0)
    n = f.numbers
    assert f.topic == "mc-dropout" and f.question == topic.QUESTION
    assert f.figure == tmp_path / "mc_dropout.png" and f.figure.stat().st_size > 10_000
    assert n["ood_source"] in (topic.FASHION, topic.SHUFFLED)
    assert n["ood_source"] in f.verdict
    assert sorted(n["mc"]) == [1, 2, 5, 10, 20] and sorted(n["stages"]) == [2, 4]
    # one dropout pass is a noisy, thinned net: worse than plain inference; averaging recovers
    assert n["mc_1_accuracy"] < n["plain_accuracy"]
    assert n["mc"][20]["accuracy"] > n["mc_1_accuracy"]
    # the MC average is less certain than plain inference, more so on out-of-distribution inputs
    assert n["entropy_in"] > n["plain_entropy_in"]
    assert n["entropy_ood"] > n["entropy_in"] and n["auroc"]["mc_entropy"] > 0.5
    # the verdict's words follow the numbers
    better_acc = n["mc"][10]["accuracy"] > n["plain_accuracy"]
    assert f.verdict.startswith("Yes" if better_acc else "No")
    assert ("002 answer 7 (MC Dropout improves model calibration)" in f.confirms) == (
        n["mc_ece"] < n["plain_ece"])
    assert set(f.confirms).isdisjoint(f.refutes)

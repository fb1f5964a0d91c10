"""selu: mean activation nearer 0 than ReLU, no dying units, self-normalization and what breaks it."""

import pytest

from dnnlab.studies.explain import run_topic
from dnnlab.studies.explain.selu import DEPTH, settle_layer


def test_settle_layer():
    ok, off = {"mean": 0.0, "std": 1.0}, {"mean": 0.5, "std": 1.0}
    assert settle_layer([off, off, ok, ok]) == 3
    assert settle_layer([ok, off, ok, ok]) == 3
    assert settle_layer([ok, ok, ok, off]) is None


@pytest.fixture(scope="module")
def finding(tmp_path_factory):
    out = tmp_path_factory.mktemp("selu")
    return out, run_topic("selu", out, quick=True)


def test_self_normalization_and_its_conditions(finding):
    _, f = finding
    d = f.numbers["depth"]
    assert all(len(v["std"]) == DEPTH for v in d.values())
    good = d["SELU, LeCun, standardized"]
    assert good["settles_at_layer"] is not None and good["settles_at_layer"] <= DEPTH // 3
    assert abs(good["last_mean"]) < 0.15 and abs(good["last_std"] - 1) < 0.15
    assert d["He init"]["settles_at_layer"] is None and d["He init"]["last_std"] > 2
    assert d["plain dropout 0.2"]["settles_at_layer"] is None
    assert d["plain dropout 0.2"]["last_std"] > 1.3
    assert d["alpha dropout 0.2"]["settles_at_layer"] is not None
    assert d["no standardization"]["std"][0] < 0.7          # raw pixels start far from std 1


def test_mean_activation_and_dying_units(finding):
    _, f = finding
    t = f.numbers["trained"]
    assert t["selu lr=0.001"]["mean_abs_mean_at_init"] < t["relu lr=0.001"]["mean_abs_mean_at_init"]
    assert t["selu lr=0.001"]["mean_abs_mean"] < t["relu lr=0.001"]["mean_abs_mean"]
    assert t["selu lr=0.01"]["dead_fraction"] == 0.0
    assert t["relu lr=0.01"]["dead_fraction"] > t["selu lr=0.01"]["constant_fraction"]
    assert any(a.startswith("002 answer 3") for a in f.refutes)


def test_finding_fields_and_figure(finding):
    out, f = finding
    assert f.topic == "selu" and (out / "selu.png").stat().st_size > 10_000
    dying = f.verdicts[1]
    assert "than ReLUs die" in dying.claim and "than ReLUs die" in f.verdict
    assert dying.evidence["ReLU dead"][0] == f.numbers["relu_dead_fraction_lr1e-2"]
    assert len(dying.evidence["ReLU dead"]) == len(f.per_seed) == 3

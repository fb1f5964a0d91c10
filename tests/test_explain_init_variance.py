"""init-variance: N(0, 1) weights blow the signal up or down through 30 layers; Glorot/He keep it."""

import pytest

from dnnlab.studies.explain import run_topic
from dnnlab.studies.explain.init_variance import DEPTH, classify


def test_classify():
    assert classify(1.0) == "preserved"
    assert classify(1e-3) == "vanishing"
    assert classify(1e3) == "exploding"
    assert classify(float("nan")) == "exploding"


@pytest.fixture(scope="module")
def finding(tmp_path_factory):
    out = tmp_path_factory.mktemp("initvar")
    return out, run_topic("init-variance", out, quick=True)


def test_direction(finding):
    _, f = finding
    r = {k: v["at_init"] for k, v in f.numbers["results"].items()}
    assert len(r) == 9 and all(len(v["std"]) == DEPTH for v in r.values())
    assert r["relu / He"]["preserved"] and r["tanh / Glorot"]["preserved"]
    assert r["relu / N(0, 1)"]["forward"] == "exploding"
    assert r["relu / N(0, 1)"]["forward_ratio"] > 1e10
    assert r["tanh / N(0, 1)"]["backward"] == "exploding"
    assert r["relu / Glorot"]["forward"] == "vanishing"
    assert r["sigmoid / Glorot"]["backward"] == "vanishing"
    assert f.verdict.startswith("Yes") and f.confirms and not f.refutes


def test_finding_fields_and_figure(finding):
    out, f = finding
    assert f.topic == "init-variance"
    assert (out / "init_variance.png").stat().st_size > 10_000
    assert "relu / N(0, 1)" in f.numbers["diverged_after_steps"]
    assert f"x{f.numbers['results']['relu / He']['at_init']['forward_ratio']:.1e}" in f.verdict

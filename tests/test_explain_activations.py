"""activations: hidden activations by accuracy and time; output activations' measured ranges."""

import pytest
import torch

from dnnlab.studies.explain import run_topic
from dnnlab.studies.explain.activations import output_ranges


def test_output_ranges_on_extreme_logits():
    r = output_ranges(torch.tensor([[-200.0, 0.0, 30.0], [1.0, 2.0, 3.0]]))
    assert r["tanh"]["min"] == -1.0 and r["tanh"]["in_range"]
    assert r["sigmoid"]["exactly_0_or_1"] == pytest.approx(2 / 6)   # float32 rounds to 0 and 1
    assert r["softmax"]["max_abs_row_sum_minus_1"] < 1e-6
    assert r["softplus"]["exactly_0"] == pytest.approx(1 / 6)       # softplus(-200) underflows
    assert r["softplus"]["min_logit"] == -200.0


@pytest.fixture(scope="module")
def finding(tmp_path_factory):
    out = tmp_path_factory.mktemp("act")
    return out, run_topic("activations", out, quick=True)


def test_hidden_activations_measured(finding):
    _, f = finding
    h = f.numbers["hidden"]
    assert set(h) == {"sigmoid", "tanh", "relu", "leaky_relu"}
    assert all(0 < v["test_accuracy"] <= 1 and v["seconds_per_epoch"] > 0 for v in h.values())
    assert f.numbers["best_test_accuracy"] == max(v["test_accuracy"] for v in h.values())


def test_output_ranges_on_real_outputs(finding):
    _, f = finding
    r = f.numbers["output_ranges"]
    assert -1 <= r["tanh"]["min"] and r["tanh"]["max"] <= 1
    assert 0 <= r["sigmoid"]["min"] and r["sigmoid"]["max"] <= 1
    assert r["softmax"]["max_abs_row_sum_minus_1"] < 1e-5
    assert r["softplus"]["min"] >= 0
    assert any(a.startswith("000 answer 4 (book: tanh for outputs") for a in f.confirms)


def test_finding_fields_and_figure(finding):
    out, f = finding
    assert f.topic == "activations" and (out / "activations.png").stat().st_size > 10_000
    assert f.numbers["best_hidden"] in f.verdict

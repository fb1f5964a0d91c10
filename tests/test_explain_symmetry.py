"""symmetry: equal initial weights keep every hidden layer's neurons identical through training."""

import pytest
import torch

from dnnlab import cli
from dnnlab.config import RunConfig, replace
from dnnlab.io import read_json
from dnnlab.nn import build_mlp
from dnnlab.studies.explain.symmetry import DEPTH, collapse, fill_equal, max_neuron_difference


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """`dnnlab explain symmetry --quick`, through the command line."""
    out = tmp_path_factory.mktemp("explain")
    assert cli.main(["explain", "symmetry", "--quick", "--out", str(out)]) == 0
    return out, read_json(out / "results.json")["symmetry"]


def test_equal_weights_stay_equal_up_to_float_rounding(result):
    """Blocked matrix kernels may round two identical columns differently (~1e-9), never more."""
    _, r = result
    runs = r["numbers"]["runs"]
    for name in ("equal: constant 0.01", "equal: one He draw copied"):
        assert runs[name]["max_neuron_diff_before"] == [0.0] * DEPTH
        assert max(runs[name]["max_neuron_diff_after"]) < 1e-6
    assert min(runs["independent He"]["max_neuron_diff_after"]) > 0.05


def test_equal_weights_are_a_one_neuron_net(result):
    _, r = result
    n = r["numbers"]
    for name in ("equal: constant 0.01", "equal: one He draw copied"):
        run = n["runs"][name]
        assert run["collapsed_test_accuracy"] == pytest.approx(run["test_accuracy"], abs=1e-3)
        assert run["test_accuracy"] < n["runs"]["independent He"]["test_accuracy"] - 0.2
    assert n["one_neuron_per_layer_test_accuracy"] < n["runs"]["independent He"]["test_accuracy"]


def test_finding_fields_and_figure(result):
    out, r = result
    assert (out / "symmetry.png").stat().st_size > 10_000
    assert r["verdict"].startswith("No:") and "identical" in r["verdict"]
    assert "000 answer 1 (book)" in r["confirms"]
    assert any(a.startswith("002 answer 1") for a in r["refutes"])
    assert (out / "report.html").exists()


def test_collapse_computes_the_same_function():
    cfg = replace(RunConfig(), **{"model.depth": DEPTH, "model.width": 16})
    model = build_mlp(cfg.model, 7, 4, seed=1)
    fill_equal(model, [0.3, -0.2, 0.1, 0.05])
    with torch.no_grad():
        for b in model.hidden:
            b.linear.bias.fill_(0.1)
        model.head.bias.copy_(torch.arange(4.0))
    assert all(max_neuron_difference(b.linear) == 0.0 for b in model.hidden)
    x = torch.randn(10, 7)
    with torch.no_grad():
        torch.testing.assert_close(collapse(model, cfg)(x), model(x), rtol=1e-5, atol=1e-5)

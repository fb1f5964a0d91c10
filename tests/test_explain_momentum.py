"""momentum: 0.99999 overshoots and oscillates where 0.9 converges."""

import pytest

from dnnlab.studies.explain import run_topic
from dnnlab.studies.explain.momentum import START, quadratic_run


def test_quadratic_trajectories():
    lo, hi = quadratic_run(0.9, 500), quadratic_run(0.99999, 500)
    assert lo["converged_at_step"] is not None and lo["converged_at_step"] < 300
    assert hi["converged_at_step"] is None and hi["final_loss_ratio"] > 0.1
    assert hi["overshoot"] > 0.9 > 0.5 > lo["overshoot"]
    assert hi["crossings"] > 3 * lo["crossings"]
    assert len(hi["trajectory"]) == 501 and hi["trajectory"][0] == list(START)


def test_no_momentum_never_overshoots_and_converges():
    q = quadratic_run(0.0, 3000)
    assert q["overshoot"] == 0.0 and q["crossings"] == 0
    assert q["converged_at_step"] is not None


@pytest.fixture(scope="module")
def finding(tmp_path_factory):
    out = tmp_path_factory.mktemp("mom")
    return out, run_topic("momentum", out, quick=True)


def test_direction_on_the_real_net(finding):
    _, f = finding
    n = f.numbers
    assert n["net_final_train_loss_0.99999"] > n["net_final_train_loss_0.9"]
    assert n["converged_at_step_0.99999"] == -1 and n["converged_at_step_0.9"] > 0
    assert "000 answer 5 (book)" in f.confirms
    assert f.verdict.startswith("It overshoots and oscillates")


def test_finding_fields_and_figure(finding):
    out, f = finding
    assert f.topic == "momentum" and (out / "momentum.png").stat().st_size > 10_000
    assert len(f.numbers["net"]["0.9"]["train_loss"]) == 4

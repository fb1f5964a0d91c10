import pytest

from dnnlab.studies.explain import dropout_cost as topic
from dnnlab.studies.explain import run_topic


def test_epochs_to_target():
    h = {"epoch": [1, 2, 3, 4], "val_loss": [0.9, 0.5, 0.3, 0.4], "seconds": [1.0, 2.0, 3.0, 4.0]}
    assert topic.epochs_to(h, 0.5) == (2, 3.0)
    assert topic.epochs_to(h, 0.3) == (3, 6.0)
    assert topic.epochs_to(h, 0.1)[0] == -1


def test_dropout_cost_quick(tmp_path):
    f = run_topic("dropout-cost", tmp_path, quick=True, seed=0)
    n = f.numbers
    assert f.topic == "dropout-cost" and f.question == topic.QUESTION
    assert f.figure == tmp_path / "dropout_cost.png" and f.figure.stat().st_size > 10_000
    # inference in eval mode is the same deterministic forward pass
    assert n["eval_deterministic"] is True
    # MC Dropout does N passes: it costs several times plain inference (timing noise allowed)
    assert n["mc_10_slowdown"] > 3
    assert n["mc"][10]["n_samples"] == 10 and n["mc"][1]["n_samples"] == 1
    # dropout 0.5 converges more slowly in epochs than no dropout (the heavier the noise, the slower)
    rows = n["per_rate"]
    assert rows[0.5]["epochs_to_target"] >= rows[0.5]["no_dropout_epochs_to_target"] > 0
    assert rows[0.5]["epochs_ratio"] >= 1.0
    for r in topic.RATES:
        assert rows[r]["target_val_loss"] == pytest.approx(max(n["no_dropout_best_val_loss"],
                                                               rows[r]["best_val_loss"]))
    # the verdict's wording follows the numbers
    slower = any(rows[r]["seconds_ratio"] > 1.1 for r in topic.RATES)
    assert f.verdict.startswith("Yes" if slower else "Not here")
    assert ("001 answer 7 (learner: dropout speeds up training)" in f.refutes) == slower
    assert set(f.confirms).isdisjoint(f.refutes)

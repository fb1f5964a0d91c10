import pytest

from dnnlab.studies.explain import run_topic
from dnnlab.studies.explain import sparsity as topic


def test_sparsity_quick(tmp_path):
    f = run_topic("sparsity", tmp_path, quick=True, seed=0)
    n = f.numbers
    assert f.topic == "sparsity" and f.question == topic.QUESTION
    assert f.figure == tmp_path / "sparsity.png" and f.figure.stat().st_size > 10_000
    # dropout leaves no weight at exactly zero: 002 answer 6 is refuted by the measurement
    assert n["dropout_exact_zeros"] == 0.0
    assert "002 answer 6 (dropout makes a model sparse)" in f.refutes
    assert "Dropout is not one of them" in f.verdict
    assert "Refuted: dropout leaves more weights exactly 0 than plain training (+0 pts" in f.verdict
    # L1 brings weights near zero (far more than without it), pruning makes them exact zeros
    assert n["l1_near_zero"] > 5 * n["dense_near_zero"]
    for row in n["l1"]:
        assert row["sparsity"] == pytest.approx(row["near_zero"], abs=1e-4)
    # the pruning curves reach their targets; FTRL's L1 gives exact zeros out of the optimizer
    assert [round(p["sparsity"], 3) for p in n["magnitude_pruning"][1:]] == [0.5, 0.8, 0.9, 0.95]
    assert n["gradual_pruning"][0]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert n["ftrl"][0]["sparsity"] > 0.3
    # the verdict's lists follow the outcomes
    book = [v for v in f.verdicts if "000 answer 6 (book)" in v.asserted_by]
    assert len(book) == 3
    assert ("000 answer 6 (book)" in f.confirms) == any(v.outcome == "supported" for v in book)

"""The one rule from per-seed numbers to an answer: planted numbers on each side of the noise give
supported / refuted / not settled, a verdict flips when its numbers flip, and what a verdict
confirms or refutes follows from its outcome alone ("not settled" claims nothing)."""

import pytest

from dnnlab.analysis.verdict import (
    NOT_SETTLED,
    REFUTED,
    SUPPORTED,
    Verdict,
    differs,
    every_seed,
    same,
    sources,
    spread,
)

BOOK, WRONG = ("000 answer 1 (book)",), ("002 answer 1 (wrong)",)
BASE = [0.900, 0.905, 0.895, 0.902]


def test_a_clear_gain_is_supported_its_mirror_refuted_and_a_gain_inside_the_noise_not_settled():
    up = [b + 0.05 for b in BASE]
    v = differs("BN is better", up, BASE, paired=True, asserted_by=BOOK, denied_by=WRONG)
    assert v.outcome == SUPPORTED and v.test == "paired t"
    assert v.effect == pytest.approx(0.05) and v.interval[0] > 0 < v.interval[1]
    assert v.confirms == list(BOOK) and v.refutes == list(WRONG)
    flipped = differs("BN is better", BASE, up, paired=True, asserted_by=BOOK, denied_by=WRONG)
    assert flipped.outcome == REFUTED
    assert flipped.confirms == list(WRONG) and flipped.refutes == list(BOOK)
    noisy = differs("BN is better", [0.91, 0.89, 0.93, 0.88], BASE, asserted_by=BOOK, denied_by=WRONG)
    assert noisy.outcome == NOT_SETTLED and noisy.p > 0.05
    assert noisy.confirms == [] and noisy.refutes == []


def test_no_verdict_from_fewer_than_three_seeds_however_large_the_gap():
    v = differs("a > b", [0.99, 0.98], [0.1, 0.11], asserted_by=BOOK)
    assert v.outcome == NOT_SETTLED and v.confirms == [] and v.refutes == []
    assert every_seed("holds", [True, True]).outcome == NOT_SETTLED


def test_an_effect_smaller_than_the_measured_floor_refutes_a_directional_claim():
    tiny = [b + 0.0001 for b in BASE[:3]] + [BASE[3] - 0.0001]
    v = differs("a > b", tiny, BASE, paired=True, margin=spread(BASE))
    assert v.outcome == REFUTED and v.interval[1] < spread(BASE)
    assert differs("a > b", tiny, BASE, paired=True).outcome == NOT_SETTLED   # no floor: untold


def test_sameness_is_supported_inside_the_noise_floor_refuted_beyond_it_else_not_settled():
    near = [b + d for b, d in zip(BASE, (0.0005, -0.0004, 0.0003, -0.0002))]
    v = same("zeros are fine", near, BASE, paired=True, margin=spread(BASE), asserted_by=BOOK)
    assert v.outcome == SUPPORTED and v.confirms == list(BOOK)
    far = [b - 0.04 for b in BASE]
    assert same("zeros are fine", far, BASE, paired=True, margin=spread(BASE)).outcome == REFUTED
    wide = [0.95, 0.85, 0.92, 0.88]
    undecided = same("zeros are fine", wide, BASE, margin=spread(BASE), asserted_by=BOOK)
    assert undecided.outcome == NOT_SETTLED and undecided.confirms == undecided.refutes == []


def test_a_constant_side_is_a_one_sample_test():
    v = differs("ratio above 1", [1.5, 1.6, 1.55], 1.0)
    assert v.outcome == SUPPORTED and v.test == "one-sample t"
    assert differs("ratio above 1", [0.5, 0.6, 0.55], 1.0).outcome == REFUTED


def test_every_seed_must_agree():
    assert every_seed("deterministic", [True] * 3).outcome == SUPPORTED
    assert every_seed("deterministic", [False] * 3).outcome == REFUTED
    assert every_seed("deterministic", [True, False, True]).outcome == NOT_SETTLED


def test_outcome_is_one_of_three_and_round_trips_through_json():
    with pytest.raises(ValueError, match="outcome"):
        Verdict(claim="x", outcome="probably", test="none")
    v = differs("a > b", [2.0, 2.1, 2.2], [1.0, 1.1, 1.0], asserted_by=BOOK, unit="pts", scale=100)
    back = Verdict.from_json(v.to_json())
    assert back == v and back.to_json()["confirms"] == list(BOOK)
    assert v.sentence().startswith("Supported: a > b (+107 pts [")


def test_sources_collect_confirms_and_refutes_once_each():
    a = differs("x", [2.0, 2.1, 2.2], [1.0, 1.1, 1.0], asserted_by=BOOK, denied_by=WRONG)
    b = every_seed("y", [False] * 3, asserted_by=BOOK + ("003 card",))
    c = every_seed("z", [True, False, True], asserted_by=("004 answer 1",))
    confirms, refutes = sources([a, b, c])
    assert confirms == list(BOOK) and refutes == list(WRONG) + list(BOOK) + ["003 card"]


def test_a_report_row_keeps_the_whole_interval():
    v = differs("a > b", [2.0, 2.1, 2.2], [1.0, 1.1, 1.0], unit="pts", scale=100)
    row = v.row()
    assert row["effect [95% interval]"] == v.effect_text() and row["effect [95% interval]"].endswith("]")
    assert row["outcome"] == SUPPORTED and row["test"] == "Welch's t, 3 seeds"
    assert every_seed("x", [True] * 3).row()["effect [95% interval]"] == "held at 3 of 3 seeds"

"""The doctor's checks are pure functions of records and curves: each fires on numbers past its
threshold and stays quiet on the same numbers moved back inside it (both branches reached)."""

import math

import pytest

from dnnlab.config import RunConfig, replace
from dnnlab.doctor import diagnose as dx
from dnnlab.doctor.report import format_findings


def _rows(epoch=1, n=4, **cols):
    """One record of ``n`` hidden layers plus the output layer; ``cols`` maps a column to a list
    (one value per hidden layer) or a scalar."""
    base = {"act_mean": 0.0, "act_std": 1.0, "dead_frac": 0.0, "saturated_frac": 0.0,
            "grad_rms": 1e-3, "out_grad_rms": 1e-3, "update_ratio": 1e-3}
    rows = []
    for i in range(n + 1):
        row = {"epoch": epoch, "step": epoch * 100, "layer": i + 1, "name": f"l{i}", "units": 10,
               "output": i == n, **base}
        for k, v in cols.items():
            if i < n:
                row[k] = v[i] if isinstance(v, list) else v
        rows.append(row)
    return rows


CFG = RunConfig()


def test_gradient_ratio_flips_both_ways():
    assert dx.check_unstable_gradients(_rows(out_grad_rms=[1e-3, 1e-3, 1e-3, 1e-3]), CFG) is None
    low = dx.check_unstable_gradients(_rows(out_grad_rms=[1e-6, 1e-5, 1e-4, 1e-3]), CFG)
    assert low.kind == "vanishing_gradients" and low.value == pytest.approx(1e-3)
    high = dx.check_unstable_gradients(_rows(out_grad_rms=[1.0, 1e-1, 1e-2, 1e-3]), CFG)
    assert high.kind == "exploding_gradients" and high.value == pytest.approx(1e3)
    # just inside the thresholds: quiet
    assert dx.check_unstable_gradients(_rows(out_grad_rms=[1.01e-5, 1, 1, 1e-3]), CFG) is None
    # no signal at all is dead/saturated units, not a ratio
    assert dx.check_unstable_gradients(_rows(out_grad_rms=[0, 0, 0, 1e-3]), CFG) is None


def test_remedy_follows_the_config():
    sig = replace(CFG, **{"model.activation": "sigmoid", "model.init": "glorot_normal"})
    f = dx.check_unstable_gradients(_rows(out_grad_rms=[1e-9, 1e-6, 1e-4, 1e-3]), sig)
    assert f.remedy == ["model.activation=elu", "model.init=he_normal"]
    assert ["model.init=glorot_normal"] not in f.alternatives   # already so: not suggested
    relu = replace(CFG, **{"model.activation": "relu", "model.init": "normal", "model.init_value": 1.0})
    assert dx.check_unstable_gradients(_rows(out_grad_rms=[1, 1e-1, 1e-2, 1e-3]), relu).remedy == \
        ["model.init=he_normal"]


def test_dead_and_saturated_flip():
    assert dx.check_dead_units(_rows(dead_frac=[0.1, 0.49, 0, 0]), CFG) is None
    f = dx.check_dead_units(_rows(dead_frac=[0.1, 0.6, 0, 0]), CFG)
    assert f.layer == 2 and f.remedy == ["model.activation=leaky_relu"]
    neg = replace(CFG, **{"model.bias_init": "constant", "model.bias_value": -5.0})
    assert dx.check_dead_units(_rows(dead_frac=1.0), neg).remedy == ["model.bias_init=zeros"]
    sig = replace(CFG, **{"model.activation": "sigmoid", "model.init": "glorot_normal"})
    assert dx.check_saturated_units(_rows(saturated_frac=0.29), sig) is None
    assert dx.check_saturated_units(_rows(saturated_frac=[0, 0, 0.5, 0]), sig).layer == 3
    # ELU's negative tail is its off state, not saturation (the default config is He/ELU)
    assert dx.check_saturated_units(_rows(saturated_frac=[0, 0, 0.5, 0]), CFG) is None


def test_self_normalization_judgement_and_causes():
    selu = replace(CFG, **{"model.activation": "selu", "model.init": "lecun_normal",
                           "data.standardize": True})
    good = _rows(epoch=0, n=6, act_mean=0.05, act_std=[0.9, 0.95, 1, 1, 1.05, 1])
    assert dx.check_self_normalization(good, selu) is None
    bad = _rows(epoch=0, n=6, act_mean=0.05, act_std=[0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert dx.check_self_normalization(bad, selu).remedy == ["model.init=lecun_normal"]
    raw = replace(selu, **{"data.standardize": False})
    assert dx.check_self_normalization(bad, raw).remedy == ["data.standardize=true"]
    # not a SELU net: the check does not apply
    assert dx.check_self_normalization(bad, CFG) is None
    assert dx.settle_layer([0, 0, 0], [0.5, 1, 1]) == 2
    assert dx.self_normalizes([0] * 6, [0.5, 1, 1, 1, 1, 1])          # settles at 2 <= 6/3
    assert not dx.self_normalizes([0] * 6, [0.5, 0.5, 0.5, 1, 1, 1])   # settles at 4 > 2


def test_learning_rate_checks_flip():
    hist = {"epoch": [1, 2, 3, 4], "loss": [2.0, 1.0, 0.5, 0.3]}
    calm = _rows(0) + _rows(1, update_ratio=1e-3)
    assert dx.check_learning_rate_too_high(calm, hist, CFG) is None
    jump = _rows(0) + _rows(1, update_ratio=[0.5, 0.01, 0.01, 0.01])
    f = dx.check_learning_rate_too_high(jump, hist, CFG)
    assert f.kind == "learning_rate_too_high" and float(f.remedy[0].split("=")[1]) < CFG.optim.lr
    osc = {"epoch": [1, 2, 3, 4, 5], "loss": [2.0, 2.5, 1.8, 2.4, 1.7]}
    assert dx.check_learning_rate_too_high(calm, osc, CFG).measure.startswith("share")
    flat = {"epoch": [1, 2, 3, 4, 5], "loss": [2.3, 2.301, 2.3, 2.302, 2.3]}
    assert dx.check_learning_rate_too_high(calm, flat, CFG) is None
    assert dx.check_learning_rate_too_high(calm, {}, CFG, "diverged", "nan").value == math.inf
    slow = _rows(0) + _rows(1, update_ratio=5e-6)
    still = {"epoch": [1, 2], "loss": [2.3, 2.2]}
    low = dx.check_learning_rate_too_low(slow, still, CFG)
    assert low is not None and float(low.remedy[0].split("=")[1]) > CFG.optim.lr
    assert dx.check_learning_rate_too_low(calm, still, CFG) is None           # weights move
    assert dx.check_learning_rate_too_low(slow, hist, CFG) is None            # loss fell 85%


def test_overfitting_flips():
    epochs = list(range(1, 11))
    train = [1.0 / e for e in epochs]
    rising = [1.0, 0.8, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05]
    f = dx.check_overfitting({"epoch": epochs, "loss": train, "val_loss": rising}, CFG)
    assert f.epoch == 10 and f.value == pytest.approx(0.5)
    assert f.remedy == ["model.dropout=0.5"]          # early stopping on (patience 10): regularize
    assert ["data.limit=none"] not in f.alternatives   # no limit was set: none to lift
    capped = replace(CFG, **{"data.limit": 1000})
    assert ["data.limit=none"] in dx.check_overfitting(
        {"epoch": epochs, "loss": train, "val_loss": rising}, capped).alternatives
    no_stop = replace(CFG, **{"train.patience": None})
    assert dx.check_overfitting({"epoch": epochs, "loss": train, "val_loss": rising},
                                no_stop).remedy == ["train.patience=3"]
    flat = [1.0, 0.8, 0.7, 0.72, 0.71, 0.73, 0.72, 0.74, 0.73, 0.75]   # +7%: within noise
    assert dx.check_overfitting({"epoch": epochs, "loss": train, "val_loss": flat}, CFG) is None
    early = rising[:3] + [0.8, 0.9, 1.0]                                # 3 epochs past the best
    assert dx.check_overfitting({"epoch": epochs[:6], "loss": train[:6], "val_loss": early},
                                CFG) is None


def test_diagnose_is_empty_when_healthy_and_ranks_by_tier_where_no_cause_links():
    hist = {"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.3], "val_loss": [0.9, 0.6, 0.5]}
    assert dx.diagnose(_rows(0) + _rows(1), hist, CFG) == []
    # no epoch-0 record: whether the units died during training is unknown, so the learning rate
    # is not named as their cause and the tiers decide (signal, units, then the curves)
    sick = _rows(1, out_grad_rms=[1e-7, 1e-5, 1e-4, 1e-3], dead_frac=0.7)
    found = dx.diagnose(sick, hist, CFG, "diverged", "nan loss")
    assert [f.kind for f in found] == ["dead_units", "vanishing_gradients", "learning_rate_too_high"]
    assert found[1].follows_from[0][0] == "dead_units"      # dead units pass no gradient: always
    assert found[2].follows_from == []


OSCILLATING = {"epoch": [1, 2, 3, 4, 5], "loss": [2.0, 2.5, 1.8, 2.4, 1.7]}
SIGMOID = replace(CFG, **{"model.activation": "sigmoid", "model.init": "glorot_normal"})


def _kinds_and_causes(found):
    return [(f.kind, [c for c, _ in f.follows_from]) for f in found]


def test_an_oscillating_loss_explains_saturation_that_grew_during_training():
    """Healthy at init, saturated and vanishing after training, the loss bouncing: the learning
    rate comes first, saturation follows from it, and the vanishing gradient from both."""
    records = _rows(0) + _rows(5, saturated_frac=0.6, out_grad_rms=[1e-7, 1e-6, 1e-4, 1e-3])
    found = dx.diagnose(records, OSCILLATING, SIGMOID)
    assert _kinds_and_causes(found) == [
        ("learning_rate_too_high", []), ("saturated_units", ["learning_rate_too_high"]),
        ("vanishing_gradients", ["learning_rate_too_high", "saturated_units"])]
    assert "oversized steps moved the weights there during training" in found[1].follows_from[0][1]
    # the same symptoms present at initialization are not the learning rate's doing
    at_init = _rows(0, saturated_frac=0.6, out_grad_rms=[1e-7, 1e-6, 1e-4, 1e-3]) + records[5:]
    found = dx.diagnose(at_init, OSCILLATING, SIGMOID)
    assert [f.kind for f in found][-1] == "learning_rate_too_high"
    assert all("learning_rate_too_high" not in [c for c, _ in f.follows_from] for f in found)


def test_a_bad_init_comes_before_the_dead_units_and_vanishing_gradients_it_explains():
    relu = replace(CFG, **{"model.activation": "relu", "model.init": "normal", "model.init_value": 1.0})
    sick = dict(dead_frac=[0.0, 0.2, 0.6, 0.8], out_grad_rms=[1e-8, 1e-6, 1e-4, 1e-3])
    found = dx.diagnose(_rows(0, **sick) + _rows(1, **sick), {}, relu)
    assert _kinds_and_causes(found) == [
        ("bad_initialization", []), ("dead_units", ["bad_initialization"]),
        ("vanishing_gradients", ["bad_initialization", "dead_units"])]
    assert found[0].remedy == ["model.init=he_normal"] and found[0].epoch == 0
    assert found[0].measure.startswith("at initialization, ")
    # the same records with He init: no set-up finding, nothing follows from one
    he = replace(relu, **{"model.init": "he_normal"})
    assert [f.kind for f in dx.diagnose(_rows(0, **sick) + _rows(1, **sick), {}, he)] == \
        ["dead_units", "vanishing_gradients"]
    # negative biases and a mismatched init: both set-up fixes, biases first
    both = replace(relu, **{"model.bias_init": "constant", "model.bias_value": -5.0})
    assert dx.check_initialization(_rows(0, dead_frac=1.0), both).remedy == \
        ["model.bias_init=zeros", "model.init=he_normal"]
    # a sound set-up broken at init (deep sigmoid, Glorot) is the activation's finding, not the init's
    assert dx.check_initialization(_rows(0, out_grad_rms=[1e-9, 1e-6, 1e-4, 1e-3]), SIGMOID) is None


def test_the_cause_relation_is_declared_acyclic_and_names_known_findings():
    kinds = set(dx.TIERS)
    assert {r.cause for r in dx.EXPLAINS} | {r.symptom for r in dx.EXPLAINS} <= kinds
    assert {r.when for r in dx.EXPLAINS} <= set(dx.CONDITIONS)
    edges = {(r.cause, r.symptom) for r in dx.EXPLAINS}
    reach = set(edges)
    while True:
        more = {(a, d) for a, b in reach for c, d in edges if b == c} - reach
        if not more:
            break
        reach |= more
    assert all(a != b for a, b in reach)


def test_the_printed_findings_say_what_a_symptom_follows_from():
    records = _rows(0) + _rows(5, saturated_frac=0.6, out_grad_rms=[1e-7, 1e-6, 1e-4, 1e-3])
    text = format_findings(dx.diagnose(records, OSCILLATING, SIGMOID))
    block2 = text.split("\n2. ")[1].split("\n3. ")[0]
    assert block2.splitlines()[1].startswith(
        "   follows from finding 1 (Learning rate too high: the loss oscillates): overshooting steps")
    assert "remedy if it stays once that is fixed: --set model.activation=elu" in block2
    assert "\n   remedy:   --set optim.lr=" in text.split("\n2. ")[0]

"""dnnlab doctor on planted pathologies, on real MNIST: each finding is named in a net that has the
pathology, not in its healthy twin, and goes away once the doctor's own remedy is applied."""

from functools import cache

import pytest

from dnnlab.config import RunConfig, apply_overrides, from_dict, replace
from dnnlab.data import load_dataset
from dnnlab.doctor.probe import probe_run
from dnnlab.doctor.report import examine, format_findings

BASE = {"model.depth": 5, "model.width": 100, "train.epochs": 3, "train.batch_size": 32,
        "train.patience": None, "train.progress": False, "train.device": "cpu",
        "data.limit": 2000, "data.valid_size": 1000}


@cache
def _mnist(limit: int, standardize: bool):
    return load_dataset("mnist", limit=limit, valid_size=1000, standardize=standardize,
                        progress=False)


def _cfg(**settings) -> RunConfig:
    return replace(RunConfig(), **{**BASE, **settings})


def _diagnose(cfg: RunConfig, tmp_path, tag: str):
    data = _mnist(cfg.data.limit, cfg.data.standardize)
    run_dir = tmp_path / tag
    probe_run(cfg, run_dir, data=data)
    return examine(run_dir, report=False).findings


def _kinds(findings) -> set[str]:
    return {f.kind for f in findings}


def _check(tmp_path, kind: str, sick: RunConfig, healthy: RunConfig):
    """The pathology is named in ``sick``, not in ``healthy``, and the remedy removes it."""
    found = _diagnose(sick, tmp_path, "sick")
    assert kind in _kinds(found), [f.evidence() for f in found]
    assert kind not in _kinds(_diagnose(healthy, tmp_path, "healthy"))
    finding = next(f for f in found if f.kind == kind)
    cured = from_dict(apply_overrides(sick.to_dict(), finding.remedy))
    assert cured.to_dict() != sick.to_dict(), finding.remedy
    after = _diagnose(cured, tmp_path, "cured")
    assert kind not in _kinds(after), (finding.set_args(), [f.evidence() for f in after])
    return finding


def test_healthy_he_elu_net_has_no_findings(tmp_path):
    assert _diagnose(_cfg(), tmp_path, "run") == []


def test_vanishing_gradients_20_sigmoid_layers_glorot(tmp_path):
    f = _check(tmp_path, "vanishing_gradients",
               _cfg(**{"model.depth": 20, "model.activation": "sigmoid", "model.init": "glorot_normal"}),
               _cfg(**{"model.depth": 20}))
    assert f.value < 1e-6 and "model.activation=elu" in f.remedy


def test_saturated_units_sigmoid_with_unit_normal_init(tmp_path):
    f = _check(tmp_path, "saturated_units",
               _cfg(**{"model.depth": 10, "model.activation": "sigmoid", "model.init": "normal",
                       "model.init_value": 1.0}),
               _cfg(**{"model.depth": 10, "model.activation": "sigmoid", "model.init": "glorot_normal"}))
    assert f.value > 0.3


def test_exploding_gradients_relu_with_unit_normal_init(tmp_path):
    f = _check(tmp_path, "exploding_gradients",
               _cfg(**{"model.depth": 10, "model.activation": "relu", "model.init": "normal",
                       "model.init_value": 1.0}),
               _cfg(**{"model.depth": 10, "model.activation": "relu"}))
    assert f.remedy == ["model.init=he_normal"]


def test_dead_relus_from_a_large_negative_bias(tmp_path):
    f = _check(tmp_path, "dead_units",
               _cfg(**{"model.activation": "relu", "model.bias_init": "constant",
                       "model.bias_value": -5.0}),
               _cfg(**{"model.activation": "relu"}))
    assert f.value == 1.0 and f.remedy == ["model.bias_init=zeros"]


SELU = {"model.depth": 20, "model.activation": "selu", "model.init": "lecun_normal",
        "train.epochs": 1}


def test_selu_without_standardized_inputs(tmp_path):
    f = _check(tmp_path, "broken_self_normalization", _cfg(**SELU),
               _cfg(**SELU, **{"data.standardize": True}))
    assert f.remedy == ["data.standardize=true"]


def test_selu_with_plain_dropout(tmp_path):
    f = _check(tmp_path, "broken_self_normalization",
               _cfg(**SELU, **{"data.standardize": True, "model.dropout": 0.2}),
               _cfg(**SELU, **{"data.standardize": True, "model.dropout": 0.2,
                               "model.dropout_kind": "alpha"}))
    assert f.remedy == ["model.dropout_kind=alpha"]


def test_learning_rate_too_high(tmp_path):
    f = _check(tmp_path, "learning_rate_too_high", _cfg(**{"optim.lr": 1.0}), _cfg())
    assert float(f.remedy[0].split("=")[1]) < 0.1


def test_learning_rate_too_low(tmp_path):
    f = _check(tmp_path, "learning_rate_too_low", _cfg(**{"optim.lr": 1e-6}), _cfg())
    assert float(f.remedy[0].split("=")[1]) > 1e-5


def test_overfitting_on_a_tiny_training_set_trained_long(tmp_path):
    long = {"data.limit": 200, "train.epochs": 25}
    f = _check(tmp_path, "overfitting", _cfg(**long), _cfg(**{**long, "model.dropout": 0.5}))
    assert f.value > 0.1 and f.remedy == ["train.patience=3"]


@pytest.mark.slow
def test_overfitting_alternative_remedy_dropout_also_cures(tmp_path):
    long = {"data.limit": 200, "train.epochs": 25, "train.patience": 10}
    found = _diagnose(_cfg(**long), tmp_path, "sick")
    f = next(f for f in found if f.kind == "overfitting")
    assert f.remedy == ["model.dropout=0.5"]     # early stopping already on: regularize
    cured = from_dict(apply_overrides(_cfg(**long).to_dict(), f.remedy))
    assert "overfitting" not in _kinds(_diagnose(cured, tmp_path, "cured"))


def test_a_bad_init_ranks_above_the_exploding_gradients_it_causes(tmp_path):
    """Two findings at once on a real net: N(0, 1) weights under ReLU explode the gradient from
    the first record on; the init is named first, and the explosion says it follows from it."""
    found = _diagnose(_cfg(**{"model.depth": 10, "model.activation": "relu", "model.init": "normal",
                              "model.init_value": 1.0}), tmp_path, "sick")
    assert found[0].kind == "bad_initialization" and found[0].remedy == ["model.init=he_normal"]
    exploding = next(f for f in found if f.kind == "exploding_gradients")
    assert [c for c, _ in exploding.follows_from] == ["bad_initialization"]
    assert "   follows from finding 1 (Bad initialization: the net is broken before its first step): " \
           "an init whose variance" in format_findings(found)
    assert "   remedy:   the same as finding 1's" in format_findings(found)   # not repeated

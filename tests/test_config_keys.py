"""The one table of config keys: it covers every field, the derived lists say what the table says,
degenerate settings are refused with the real bound, and deep nesting ends in one ConfigError."""

import dataclasses
import re
import time
import typing
from pathlib import Path

import pytest

from dnnlab import config, keysdoc
from dnnlab.cli_common import KEYS_DOC, keys_epilog
from dnnlab.config import (
    DATA_KEYS,
    KEYS,
    MAX_NESTING,
    OPTIM_HYPERS,
    PER_MODEL_KEYS,
    RESUME_KEYS,
    ModelConfig,
    RunConfig,
    describe_keys,
    fingerprint,
    from_dict,
    group_key,
    load_config,
    replace,
    shape_of,
    stack_signature,
)
from dnnlab.errors import ConfigError
from dnnlab.optim.flat import hypers_of

ROOT = Path(__file__).resolve().parents[1]


def _fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], name)
        else:
            yield name, hints[f.name], f


def test_the_table_covers_every_field_with_its_type_and_default():
    fields = list(_fields(RunConfig))
    assert [n for n, _, _ in fields] == list(KEYS)
    defaults = config.flatten(dataclasses.asdict(RunConfig()))
    for name, tp, _ in fields:
        k = KEYS[name]
        assert k.name == name and k.type == tp
        assert k.default == defaults[name], name
        assert k.help and "\n" not in k.help, name
    assert KEYS["optim.schedule.values"].type == list[float]
    assert KEYS["train.patience"].default == 10 and KEYS["model.hidden"].default is None


def test_flags_of_specific_keys():
    assert "optim.lr" in PER_MODEL_KEYS and "model.dropout" in PER_MODEL_KEYS
    assert "optim.schedule.max_lr" in PER_MODEL_KEYS and "train.min_delta" in PER_MODEL_KEYS
    # the ftrl update takes one power for the whole stack: lr_power is a column of the
    # optimizer but shapes the stack
    assert "lr_power" in OPTIM_HYPERS and "optim.lr_power" not in PER_MODEL_KEYS
    assert "data.name" in DATA_KEYS and "data.name" not in PER_MODEL_KEYS
    assert set(DATA_KEYS) == {k for k in KEYS if k.startswith("data.")}
    assert {"data.path", "data.label"} <= set(DATA_KEYS)
    assert not PER_MODEL_KEYS & set(DATA_KEYS)
    for shaping in ("model.depth", "model.activation", "model.batch_norm", "optim.name",
                    "optim.nesterov", "train.batch_size", "train.seed"):
        assert shaping not in PER_MODEL_KEYS, shaping
    assert "train.epochs" in RESUME_KEYS and "data.data_dir" in RESUME_KEYS
    assert "train.patience" in RESUME_KEYS and "train.patience" in PER_MODEL_KEYS
    assert "optim.lr" not in RESUME_KEYS and "data.name" not in RESUME_KEYS
    assert set(RESUME_KEYS) >= {"name", "tune"}


def test_optimizer_hypers_are_optims_plain_numbers():
    assert OPTIM_HYPERS == ("lr", "momentum", "beta1", "beta2", "rho", "eps", "weight_decay",
                            "l1", "l2", "lr_power", "initial_accumulator")
    h = hypers_of([config.OptimConfig(lr=0.1), config.OptimConfig(lr=0.2, beta1=0.5)])
    assert set(h) == set(OPTIM_HYPERS)
    assert h["lr"].tolist() == [0.1, 0.2] and h["beta1"].tolist() == [0.9, 0.5]


def test_shape_of_is_the_model_keys_that_are_not_per_model():
    shape = shape_of(ModelConfig())
    model_shaping = {k.split(".", 1)[1] for k in KEYS
                     if k.startswith("model.") and k not in PER_MODEL_KEYS}
    assert set(shape) == model_shaping - {"depth", "width"}
    assert shape_of(ModelConfig(depth=2, width=3)) == shape_of(ModelConfig(hidden=[3, 3]))
    assert shape_of(ModelConfig(dropout=0.5, l2=0.01)) == shape_of(ModelConfig())
    assert shape_of(ModelConfig(bn_epsilon=0.01)) != shape_of(ModelConfig())


def test_stack_signature_includes_data_and_excludes_per_model_keys():
    base = RunConfig()
    sig = stack_signature(base)
    assert "data.name" in sig and "data.limit" in sig and "optim.lr" not in sig
    assert "name" not in sig and "tune" not in sig
    assert group_key(replace(base, **{"optim.lr": 0.01, "model.dropout": 0.2})) == group_key(base)
    assert group_key(replace(base, **{"name": "other"})) == group_key(base)
    assert group_key(replace(base, **{"data.name": "fashion-mnist"})) != group_key(base)
    assert group_key(replace(base, **{"data.limit": 100})) != group_key(base)
    assert group_key(replace(base, **{"optim.lr_power": -1.0})) != group_key(base)
    folded = replace(base, **{"model.depth": 2, "model.width": 3})
    assert group_key(folded) == group_key(replace(base, **{"model.hidden": [3, 3]}))
    assert len(group_key(base)) == 12


def test_fingerprint_covers_exactly_the_keys_a_resume_may_not_change():
    base = RunConfig()
    for k in ("train.epochs", "data.data_dir", "name", "train.device"):
        value = {"train.epochs": 3, "data.data_dir": "/x", "name": "y", "train.device": "cpu"}[k]
        assert fingerprint(replace(base, **{k: value})) == fingerprint(base), k
    for k, value in (("optim.lr", 0.01), ("data.name", "cifar10"), ("train.seed", 1)):
        assert fingerprint(replace(base, **{k: value})) != fingerprint(base), k
    # the same hash as before the table existed: runs started then (whose config.toml says
    # valid_size = 5000, the old default) still resume
    assert fingerprint(replace(base, **{"data.valid_size": 5000})) == "9d94a8205e913f51"


def test_help_texts_come_from_the_table():
    epilog = keys_epilog()
    for k in KEYS:
        head, _, tail = k.rpartition(".")
        assert tail in epilog, k
    per_model = epilog.split("may differ between the models of one stack")[1].split("may change")[0]
    assert "lr_power" not in per_model and "initial_accumulator" in per_model
    resume = epilog.split("may change on train --resume")[1]
    assert re.search(r"\bepochs\b", resume) and not re.search(r"\bbatch_size\b", resume)
    detail = describe_keys(lambda k: k.name == "optim.beta2", detail=True)
    assert detail == ("  optim.beta2 = 0.999; in [0, 1): adam family: decay of the second moment")
    doc = (ROOT / KEYS_DOC).read_text(encoding="utf-8")
    assert doc == keysdoc.text(), f"{KEYS_DOC} is stale: regenerate it with {keysdoc.COMMAND}"
    assert describe_keys(detail=True) in doc


@pytest.mark.parametrize("raw, message", [
    ({"optim": {"lr": 0}}, r"optim.lr = 0.0 is out of range; it must be in \(0, 10\]"),
    ({"optim": {"lr": 1e30}}, r"optim.lr = 1e\+30 is out of range; it must be in \(0, 10\]"),
    ({"optim": {"beta1": 1}}, r"optim.beta1 = 1.0 is out of range; it must be in \[0, 1\)"),
    ({"optim": {"beta2": 1.0}}, r"optim.beta2 = 1.0 is out of range; it must be in \[0, 1\)"),
    ({"optim": {"rho": 1}}, r"optim.rho = 1.0 is out of range; it must be in \[0, 1\)"),
    ({"optim": {"momentum": 1}}, r"optim.momentum = 1.0 is out of range; it must be in \[0, 1\)"),
    ({"optim": {"name": "adagrad", "eps": 0}}, r"optim.eps = 0.0 is out of range; it must be > 0"),
    ({"optim": {"name": "adam", "eps": 0}}, r"optim.eps = 0.0 is out of range; it must be > 0"),
    ({"model": {"bn_momentum": 1}}, r"model.bn_momentum = 1.0 .* in \[0, 1\)"),
    ({"model": {"batch_norm": "before", "bn_epsilon": 0}},
     r"model.bn_epsilon = 0.0: batch norm divides .* must be > 0"),
    ({"model": {"input_batch_norm": True, "bn_epsilon": 0}}, r"model.bn_epsilon = 0.0"),
    ({"model": {"activation": "elu", "activation_param": -0.5}},
     r"model.activation_param = -0.5: the elu alpha must be >= 0"),
    ({"model": {"activation": "leaky_relu", "activation_param": -0.1}},
     r"model.activation_param = -0.1: the leaky_relu slope must be >= 0"),
    ({"model": {"l2": 1e6}}, r"model.l2 = 1000000.0 is out of range; it must be in \[0, 1\]"),
    ({"model": {"l1": 2}}, r"model.l1 = 2.0 is out of range; it must be in \[0, 1\]"),
    ({"model": {"init": "normal", "init_value": 0}}, r"model.init_value = 0.0: .* must be > 0"),
    ({"model": {"init_value": 1e6}}, r"model.init_value = 1000000.0 .* in \[-100, 100\]"),
    ({"optim": {"schedule": {"name": "piecewise", "boundaries": [2], "values": [0.1, 1e30]}}},
     r"optim.schedule.values\[1\] = 1e\+30 is out of range; it must be in \(0, 10\]"),
    ({"optim": {"schedule": {"name": "piecewise", "boundaries": [2], "values": [0.1, 0]}}},
     r"optim.schedule.values\[1\] = 0.0 is out of range; it must be in \(0, 10\]"),
    ({"optim": {"schedule": {"max_lr": 0}}}, r"optim.schedule.max_lr = 0.0 .* in \(0, 10\]"),
    ({"optim": {"schedule": {"div_factor": 0.5}}}, r"div_factor = 0.5 .* in \[1, 1000000\]"),
    ({"optim": {"lr_power": -5}}, r"optim.lr_power = -5.0 .* in \[-1, 0\]"),
    ({"optim": {"name": "ftrl", "initial_accumulator": 0}},
     r"optim.initial_accumulator = 0.0: ftrl divides .* must be > 0"),
    ({"optim": {"name": "adamw", "lr": 5, "weight_decay": 0.5}},
     r"optim.weight_decay = 0.5 with a rate of 5.0: adamw .* must stay > 0"),
    ({"optim": {"name": "sgd", "nesterov": True}}, r"optim.nesterov = true needs optim.momentum > 0"),
    ({"data": {"valid_size": 0}}, r"train.monitor = 'val_loss' needs a validation split but "
                                  r"data.valid_size = 0: .* train.monitor = 'loss'"),
    ({"data": {"valid_size": 0}, "train": {"monitor": "val_accuracy", "patience": 3}},
     r"train.monitor = 'val_accuracy' needs a validation split"),
    ({"data": {"valid_size": 0}, "train": {"monitor": "loss"},
      "optim": {"schedule": {"name": "performance"}}}, r"'performance' watches val_loss"),
    ({"train": {"monitor": "lr"}}, r"train.monitor = 'lr' is not allowed; choose one of: val_loss"),
    ({"data": {"name": "file"}}, r"data.name = 'file' needs data.path"),
    ({"data": {"path": "x.npz"}}, r"data.path is read only when data.name = 'file'"),
    ({"data": {"name": "file", "path": "x.txt"}}, r"data.path = 'x.txt': expected a file ending"),
    ({"data": {"name": "file", "path": "x.npz", "label": "y"}},
     r"data.label = 'y' names the label column .* a .npz holds its labels in y_train"),
])
def test_degenerate_settings_are_refused_with_the_bound(raw, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)


def test_sensible_neighbours_of_the_bounds_are_accepted():
    cfg = from_dict({"optim": {"lr": 10, "beta2": 0.9999, "eps": 1e-12, "name": "adagrad",
                               "initial_accumulator": 0.0},
                     "model": {"activation": "prelu", "activation_param": -0.25, "l2": 1.0,
                               "bn_epsilon": 0.0},
                     "data": {"valid_size": 0, "name": "file", "path": "d.csv", "label": "y"},
                     "train": {"monitor": "loss"}})
    assert cfg.optim.lr == 10.0 and cfg.model.bn_epsilon == 0.0 and cfg.data.label == "y"


DEEP = 10_000


@pytest.mark.parametrize("text", [
    "a" + ".a" * DEEP + " = 1\n",                               # dotted keys
    "[" + ".".join(["a"] * DEEP) + "]\nb = 1\n",                # a table header
    "[tune]\nx = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n",  # inline tables
    "[model]\nhidden = " + "[" * DEEP + "]" * DEEP + "\n",      # arrays
])
def test_a_toml_nested_10000_deep_is_one_config_error(tmp_path, text):
    p = tmp_path / "deep.toml"
    p.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"deep.*{MAX_NESTING}"):
        load_config(p)
    assert time.perf_counter() - start < 1.0       # refused before tomllib's quadratic work


def test_deep_python_structures_are_measured_without_recursion():
    value: list = [1]
    for _ in range(DEEP):
        value = [value]
    with pytest.raises(ConfigError, match=f"nest deeper than {MAX_NESTING}"):
        from_dict({"tune": {"x": value}})
    with pytest.raises(ConfigError, match=f"nest deeper than {MAX_NESTING}"):
        config.apply_overrides({"tune": {"x": value}}, ["optim.lr=0.1"])
    # a key path deeper than MAX_NESTING inside a string is a string, not a key
    assert load_config(None, ["name=" + repr(".".join("a" * 40))]).name == ".".join("a" * 40)


def test_a_table_another_command_reads_is_named_with_its_command():
    """An ablation config ([[variant]] tables) given to train or explain: the error says which
    command reads those tables instead of only listing the allowed keys."""
    with pytest.raises(ConfigError, match=r"unknown key 'variant' in the top level; .*"
                       r"\[\[variant\]\] tables are read by dnnlab study ablation only"):
        from_dict({"variant": [{"name": "wide", "model.width": 64}]})
    with pytest.raises(ConfigError) as plain:
        from_dict({"varient": 1})
    assert "study ablation" not in str(plain.value)

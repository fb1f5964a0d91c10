"""Every config value is range-checked, when built from TOML, --set or Python alike."""

import pytest

from dnnlab import cli
from dnnlab.config import (
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    changed_keys,
    fingerprint,
    from_dict,
    load_config,
    replace,
)
from dnnlab.errors import ConfigError


@pytest.mark.parametrize("raw, message", [
    ({"optim": {"lr": float("nan")}}, r"optim.lr = nan: expected a finite number"),
    ({"model": {"dropout": float("nan")}}, r"model.dropout = nan: expected a finite"),
    ({"optim": {"beta1": float("inf")}}, r"optim.beta1 = inf: expected a finite"),
    ({"optim": {"eps": -1e-7}}, r"optim.eps = -1e-07 is out of range"),
    ({"model": {"max_norm": -1.0}}, r"model.max_norm = -1.0 is out of range; it must be > 0"),
    ({"model": {"max_norm": 0}}, r"model.max_norm = 0.0 is out of range; it must be > 0"),
    ({"train": {"epochs": 10**30}}, r"train.epochs = 1000000000000000000000000000000: too large"),
    ({"train": {"batch_size": 10**12}}, r"train.batch_size = 1000000000000 is out of range"),
    ({"model": {"width": 0}}, r"model.width = 0 is out of range"),
    ({"model": {"hidden": [8, -2]}}, r"model.hidden\[1\] = -2 is out of range"),
    ({"train": {"seed": -1}}, r"train.seed = -1 is out of range"),
    ({"optim": {"schedule": {"factor": 0}}}, r"optim.schedule.factor = 0.0 is out of range"),
    ({"optim": {"lr_power": 0.5}}, r"optim.lr_power = 0.5 is out of range"),
    ({"name": "a\nb"}, r"name = 'a\\nb': give a name"),
])
def test_out_of_range_values_are_refused(raw, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)


def test_configs_validate_when_built_in_python():
    with pytest.raises(ConfigError, match=r"model.depth = -3 is out of range"):
        RunConfig(model=ModelConfig(activation="relu", depth=-3))
    with pytest.raises(ConfigError, match=r"model.activation = 'foo' is not allowed"):
        RunConfig(model=ModelConfig(activation="foo"))
    with pytest.raises(ConfigError, match=r"optim.lr = nan"):
        OptimConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer"):
        TrainConfig(epochs="ten")
    cfg = RunConfig(model={"depth": 3}, optim=OptimConfig(lr=1))   # a table, an int for a float
    assert cfg.model.depth == 3 and isinstance(cfg.optim.lr, float)
    assert replace(cfg, **{"optim.lr": 0.1}).optim.lr == 0.1 and cfg.optim.lr == 1.0


def test_models_too_big_for_memory_are_refused():
    with pytest.raises(ConfigError, match=r"need at least .* GiB of memory but .* GiB are available"):
        from_dict({"model": {"width": 2**20, "depth": 1000}})


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "{a=" * 3000 + "1" + "}" * 3000])
def test_deep_nesting_is_one_clean_error(tmp_path, text):
    with pytest.raises(ConfigError, match="nest"):
        load_config(None, [f"model.hidden={text}"])
    p = tmp_path / "c.toml"
    p.write_text(f"[model]\nhidden = {text}\n")
    with pytest.raises(ConfigError, match="nest"):
        load_config(p)
    with pytest.raises(ConfigError, match="at most 3 parts"):
        load_config(None, ["a." * 2000 + "b=1"])


@pytest.mark.parametrize("setting", ["optim.lr=nan", "model.dropout=nan", "optim.eps=-1",
                                     "model.max_norm=-2", "train.epochs=99999999999999999999",
                                     "model.width=1048576", "model.hidden=" + "[" * 3000])
def test_cli_bad_values_are_one_line_exit_2(tmp_path, capsys, setting):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n[model]\ndepth = 1000\n')
    code = cli.main(["train", str(cfg), "--set", setting, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("dnnlab: error:"), err
    assert not (tmp_path / "r").exists()                 # refused before any work


def test_fingerprint_covers_what_shapes_a_run():
    a = RunConfig()
    assert fingerprint(a) == fingerprint(replace(a, **{"train.epochs": 99, "name": "other",
                                                       "train.device": "cpu"}))
    for key, value in {"optim.lr": 0.5, "model.width": 7, "data.name": "fashion-mnist",
                       "train.seed": 1, "optim.schedule.name": "1cycle"}.items():
        b = replace(a, **{key: value})
        assert fingerprint(b) != fingerprint(a) and changed_keys(a, b) == [key]

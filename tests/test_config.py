import pytest

from dnnlab.config import RunConfig, apply_overrides, from_dict, load_config, replace, to_toml
from dnnlab.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    cfg = replace(RunConfig(), **{"model.hidden": [50, 20], "optim.schedule.name": "1cycle"})
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert load_config(p) == cfg


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError) as e:
        from_dict({"model": {"widht": 10}})
    msg = str(e.value)
    assert "model.widht" in msg and "width" in msg and "activation" in msg


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"model.activation = 'elux'.*choose one of: sigmoid"):
        from_dict({"model": {"activation": "elux"}})


def test_range_and_type_errors():
    with pytest.raises(ConfigError, match=r"model.dropout = 1.5 is out of range"):
        from_dict({"model": {"dropout": 1.5}})
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer"):
        from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"piecewise needs"):
        from_dict({"optim": {"schedule": {"name": "piecewise", "boundaries": [5], "values": [0.1]}}})


def test_overrides_parse_toml_values():
    raw = apply_overrides({}, ["optim.lr=3e-4", "model.hidden=[10, 20]", "model.activation=selu",
                               "train.restore_best=false"])
    cfg = from_dict(raw)
    assert cfg.optim.lr == 3e-4 and cfg.model.hidden == [10, 20]
    assert cfg.model.activation == "selu" and cfg.train.restore_best is False
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["optim.lr"])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nwidth=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_none_survives_replace_and_toml(tmp_path):
    cfg = replace(RunConfig(), **{"train.patience": None})
    cfg = replace(cfg, **{"optim.lr": 0.01})          # a second replace keeps the None
    assert cfg.train.patience is None
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert 'patience = "none"' in p.read_text()
    assert load_config(p).train.patience is None
    assert load_config(None, ['train.patience="none"']).train.patience is None

import csv

import pytest

from dnnlab import cli
from dnnlab.config import replace
from dnnlab.errors import ConfigError
from dnnlab.runs.sweep import grid, split_values, sweep


def test_grid_is_every_combination_and_keeps_lists_whole():
    assert split_values("[10, 20],[30]") == ["[10, 20]", "[30]"]
    g = grid(["optim.lr=1e-4,1e-3", "model.hidden=[8,8],[16]"])
    assert len(g) == 4
    assert {"optim.lr": 1e-4, "model.hidden": [16]} in g
    with pytest.raises(ConfigError, match="empty item"):
        grid(["optim.lr=1e-4,,1e-3"])


def test_sweep_writes_one_run_per_variant_and_groups_shapes(tiny, tiny_cfg, tmp_path, monkeypatch):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    cfg = replace(tiny_cfg, **{"train.epochs": 2})
    out = sweep(cfg, ["optim.lr=1e-3,1e-2", "model.width=8,16"], seeds=2, out=tmp_path / "sw",
                progress=False)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 8
    assert all(r["status"] == "completed" for r in rows)
    losses = [float(r["best_val_loss"]) for r in rows]
    assert losses == sorted(losses)                     # best first
    for r in rows:
        run = out / r["run"]
        assert (run / "metrics.csv").exists() and (run / "model.safetensors").exists()
    assert (out / "report.html").exists()


def test_sweep_with_128_models_loses_none(tiny, tiny_cfg, tmp_path, monkeypatch):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    lrs = ",".join(f"{1e-4 * 1.1 ** i:.6g}" for i in range(64))
    cfg = replace(tiny_cfg, **{"train.epochs": 1})
    out = sweep(cfg, [f"optim.lr={lrs}"], seeds=2, out=tmp_path / "big", progress=False)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 128 and len({r["run"] for r in rows}) == 128
    assert sum(1 for p in out.iterdir() if p.is_dir()) == 128


def test_sweep_cli_bad_value_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n')
    assert cli.main(["sweep", str(cfg), "--set", "model.activation=elu,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.activation = 'nope'" in err

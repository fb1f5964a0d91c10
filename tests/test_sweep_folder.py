"""A sweep owns its folder, fails honestly and hints only at flags that exist (issue 26, point 5).

A second sweep with other settings into the same --out overwrote the first's variants (or left
its own beside them, and report mixed both); a sweep into a finished train run's folder wrote into
it; a sweep whose every variant failed exited 0; an interrupted sweep or tune said "continue with
--resume RUN_DIR", which neither command has."""

import pytest

from cli_helpers import run_cli
from dnnlab import commands, commands_plot
from dnnlab.tune import cli as tune_cli

CONFIG = ('name = "sw"\n[data]\nname = "synthetic"\nlimit = 200\n[model]\ndepth = 1\nwidth = 4\n'
          '[train]\nepochs = 1\nprogress = false\ndevice = "cpu"\n'
          '[tune]\n"optim.lr" = {low = 1e-4, high = 1e-2, log = true}\n')


def _files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.fixture()
def cfg(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG)
    return str(tmp_path / "c.toml")


def test_a_sweep_with_other_settings_into_a_sweep_folder_is_refused(cfg, tmp_path):
    out = str(tmp_path / "sw")
    code, _, err = run_cli(["sweep", cfg, "--set", "optim.lr=1e-3,1e-2", "--out", out])
    assert code == 0, err
    before = _files(tmp_path / "sw")
    for other in (["--set", "optim.lr=1e-3,3e-2"], ["--set", "model.width=4,8"],
                  ["--set", "optim.lr=1e-3,1e-2", "--seeds", "2"]):
        code, _, err = run_cli(["sweep", cfg, *other, "--out", out])
        assert code == 2 and "holds another sweep" in err and len(err.strip().splitlines()) == 1, err
        assert _files(tmp_path / "sw") == before
    code, _, err = run_cli(["sweep", cfg, "--set", "optim.lr=1e-3,1e-2", "--out", out])
    assert code == 0, err                                       # the same sweep again: its own


def test_a_sweep_into_a_train_run_or_a_foreign_folder_is_refused(cfg, tmp_path):
    run = tmp_path / "run"
    assert run_cli(["train", cfg, "--out", str(run)])[0] == 0
    before = _files(run)
    code, _, err = run_cli(["sweep", cfg, "--set", "optim.lr=1e-3,1e-2", "--out", str(run)])
    assert code == 2 and "run directory of 'dnnlab train'" in err, err
    assert _files(run) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    code, _, err = run_cli(["sweep", cfg, "--set", "optim.lr=1e-3,1e-2", "--out", str(tmp_path / "mine")])
    assert code == 2 and "holds files of no sweep" in err, err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_sweep_whose_every_variant_failed_exits_non_zero(cfg, tmp_path):
    (tmp_path / "f.toml").write_text(CONFIG.replace('name = "synthetic"\nlimit = 200',
                                                    f'name = "file"\npath = "{tmp_path / "no1.npz"}"'))
    code, out, err = run_cli(["sweep", str(tmp_path / "f.toml"), "--set",
                              f"data.path={tmp_path / 'no1.npz'},{tmp_path / 'no2.npz'}",
                              "--out", str(tmp_path / "sw")])
    assert code == 1, (out, err)
    assert "every variant of the sweep failed" in err and "runs.csv" in err


@pytest.mark.parametrize("argv,flag", [
    (["sweep", "CFG", "--set", "optim.lr=1e-3,1e-2"], "--storage"),
    (["sweep", "CFG", "--set", "optim.lr=1e-3,1e-2", "--storage", "sqlite:///x.db"], "--storage"),
    (["tune", "CFG", "--trials", "1"], "--storage"),
    (["train", "CFG", "--out", "R"], "dnnlab train --resume R")])
def test_an_interrupted_command_hints_only_at_its_own_flags(cfg, monkeypatch, argv, flag):
    def stop(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(commands_plot, "sweep", stop)
    monkeypatch.setattr(commands.runs, "train_run", stop)
    monkeypatch.setattr(tune_cli, "tune", stop)
    code, _, err = run_cli([cfg if a == "CFG" else a for a in argv])
    assert code == 130 and "interrupted" in err, err
    assert flag in err and ("--resume" not in err or argv[0] == "train"), err

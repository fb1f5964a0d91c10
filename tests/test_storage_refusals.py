"""Storage and tune refusals are one line, before any trial or folder (issue 26, point 7): the URL
without its password, advice for its backend (no "check the server is running" for SQLite), an
in-memory SQLite refused (workers cannot share it), --grace / --heartbeat / [tune] step / --folds
checked first."""

import pytest

from cli_helpers import run_cli

CONFIG = ('name = "t"\n[data]\nname = "synthetic"\nlimit = 200\n[model]\ndepth = 1\nwidth = 4\n'
          '[train]\nepochs = 1\nprogress = false\ndevice = "cpu"\n'
          '[tune]\n"optim.lr" = {low = 1e-4, high = 1e-2%s}\n')


def _refused(tmp_path, argv, *needles, absent=()):
    code, _, err = run_cli([a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "o")])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    for n in absent:
        assert n not in lines[0], (n, lines[0])
    assert not (tmp_path / "o").exists()              # no folder, no failed trial left behind
    return lines[0]


@pytest.fixture()
def cfg(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG % ", log = true")
    (tmp_path / "step0.toml").write_text(CONFIG % ", step = 0")
    return tmp_path


@pytest.mark.parametrize("command", [["tune", "{tmp}/c.toml", "--trials", "1"],
                                     ["sweep", "{tmp}/c.toml", "--set", "optim.lr=1e-3,1e-2"]])
def test_storage_errors_are_one_line_with_advice_for_the_backend(cfg, command):
    line = _refused(cfg, [*command, "--storage", "sqlite:///{tmp}/no/such/dir/x.db"],
                    "sqlite:///", "folder exists and is writable", absent=("server",))
    assert "unable to open database file" in line
    _refused(cfg, [*command, "--storage", "sqlite://"], "in-memory", "sqlite:///")
    _refused(cfg, [*command, "--storage", "sqlite:///:memory:"], "in-memory")
    _refused(cfg, [*command, "--storage", "nosuch://u:hunter2@h/db"], "nosuch://u:***@h/db",
             "sqlite:///FILE.db", absent=("hunter2",))


@pytest.mark.parametrize("argv,needle", [
    (["sweep", "{tmp}/c.toml", "--set", "optim.lr=1e-3,1e-2", "--grace", "inf"], "--grace inf"),
    (["sweep", "{tmp}/c.toml", "--set", "optim.lr=1e-3,1e-2", "--grace", "1e308"], "--grace"),
    (["sweep", "{tmp}/c.toml", "--set", "optim.lr=1e-3,1e-2", "--grace", "nan"], "--grace"),
    (["tune", "{tmp}/c.toml", "--folds", "1"], "--folds 1"),
    (["tune", "{tmp}/c.toml", "--folds", "1000"], "--folds 1000"),
    (["tune", "{tmp}/step0.toml"], "step = 0"),
    (["tune", "{tmp}/c.toml", "--heartbeat", "100000000"], "--heartbeat")])
def test_bad_tune_and_sweep_settings_are_refused_before_any_trial(cfg, argv, needle):
    _refused(cfg, argv, needle)

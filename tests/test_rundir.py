"""Run directories: one writer, honest status, safe names and modes, checked resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dnnlab import cli, io, rundir
from dnnlab.config import replace
from dnnlab.errors import DnnlabError
from dnnlab.report import read_summary
from dnnlab.runs import single as run_mod
from dnnlab.runs.single import train_run
from dnnlab.train import state as run_state
from dnnlab.train.callbacks import Callback

HOLDER = """
import sys, time
from dnnlab import rundir
with rundir.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold_in_child(path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_fails_naming_holder_and_dead_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    child = _hold_in_child(run)
    try:
        assert rundir.is_held(run)
        with pytest.raises(DnnlabError, match=rf"in use by process {child.pid} on "):
            with rundir.hold(run):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not rundir.is_held(run)                   # the kernel dropped the dead holder's lock
    assert rundir.read_lock(run)["pid"] == child.pid  # its record is still there ...
    with rundir.hold(run):                           # ... and is taken over
        assert rundir.read_lock(run)["pid"] == os.getpid()
        with rundir.hold(run):                       # re-entrant in one process
            pass
        assert rundir.is_held(run)
    assert not (run / rundir.LOCK_NAME).exists()


def test_report_shows_a_dead_running_run_as_interrupted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    (run / "summary.json").write_text(json.dumps({"name": "r", "status": "running"}))
    assert read_summary(run)["status"] == "interrupted"
    child = _hold_in_child(run)
    try:
        assert read_summary(run)["status"] == "running"
    finally:
        child.kill()
        child.wait()
    assert read_summary(run)["status"] == "interrupted"


def test_safe_names_stay_in_their_folder_and_are_bounded(tmp_path):
    for name in ("../../x", "/abs/x", "..", ".", "a/../../b", "\x00", ""):
        p = rundir.child(tmp_path, name)
        assert p.parent == tmp_path and p.name not in ("", ".", "..") and "/" not in p.name
    a, b = "v" * 300 + "1", "v" * 300 + "2"
    na, nb = rundir.safe_name(a), rundir.safe_name(b)
    assert len(na) <= rundir.MAX_NAME and na != nb
    assert rundir.safe_name("lr=0.001_seed=42") == "lr=0.001_seed=42"
    # default output paths from a config's name: one rule (train, sweep, lr-find)
    p = rundir.named(tmp_path, "../" * 40 + "n" * 300, "lr-find.png")
    assert p.parent == tmp_path and p.name.endswith("-lr-find.png") and len(p.name) <= 112
    stamped = rundir.named(tmp_path, "mnist 5x100").name
    assert stamped.startswith("mnist-5x100-") and len(stamped) == len("mnist-5x100-20261207-043015")


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_get_the_umask_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = io.write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def _cfg(tiny_cfg, **kw):
    return replace(tiny_cfg, **{"data.limit": 200, "data.valid_size": 60, "train.epochs": 2, **kw})


def test_config_name_cannot_leave_the_runs_folder(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = train_run(_cfg(tiny_cfg, name="../../escape"))
    assert res.run_dir.resolve().parent == (tmp_path / "runs").resolve()
    assert not (tmp_path.parent / "escape").exists()


def _cli(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("kind", ["file", "long", "readonly"])
def test_bad_out_is_one_line_naming_the_path(tiny_cfg, tmp_path, capsys, kind):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nlimit = 100\nvalid_size = 50\n[train]\nprogress = false\n')
    if kind == "file":
        out = cfg
    elif kind == "long":
        out = tmp_path / ("x" * 300)
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "run"
    code, err = _cli(["train", str(cfg), "--out", str(out), "--epochs", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and str(out)[:100] in err, err


def _run(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    train_run(_cfg(tiny_cfg), run)
    return run


def test_resume_refuses_a_changed_run_and_names_the_keys(tiny_cfg, tmp_path, capsys):
    run = _run(tiny_cfg, tmp_path)
    code, err = _cli(["train", "--resume", str(run), "--set", "optim.lr=0.5"], capsys)
    assert code == 2 and "optim.lr" in err and err.count("\n") == 1
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("width = 16", "width = 17"))
    code, err = _cli(["train", "--resume", str(run), "--epochs", "3"], capsys)
    assert code == 2 and "model.width" in err and "config.toml" in err
    (run / "config.toml").write_text(text)
    other = tmp_path / "other.toml"
    other.write_text(text.replace('name = "nadam"', 'name = "sgd"'))
    code, err = _cli(["train", str(other), "--resume", str(run)], capsys)
    assert code == 2 and "optim.name" in err


def test_resume_applies_allowed_changes_and_writes_them(tiny_cfg, tmp_path, capsys):
    run = _run(tiny_cfg, tmp_path)
    code, err = _cli(["train", "--resume", str(run), "--epochs", "4", "--set", "train.patience=3"],
                     capsys)
    assert code == 0, err
    text = (run / "config.toml").read_text()
    assert "epochs = 4" in text and "patience = 3" in text
    assert read_summary(run)["epochs_run"] == 4


def test_resume_with_damaged_start_record_is_refused(tiny_cfg, tmp_path, capsys):
    run = _run(tiny_cfg, tmp_path)
    start = run / run_state.START
    data = json.loads(start.read_text())
    data["config"]["optim"]["lr"] = 0.5                  # edited without the fingerprint
    start.write_text(json.dumps(data))
    code, err = _cli(["train", "--resume", str(run), "--epochs", "3"], capsys)
    assert code == 2 and "fingerprint" in err and str(start) in err


class _Raise(Callback):
    def __init__(self, exc):
        self.exc = exc

    def on_epoch_end(self, run, epoch, logs):
        raise self.exc


@pytest.mark.parametrize("exc, status", [(KeyboardInterrupt(), "interrupted"),
                                         (OSError(28, "No space left on device", "x"), "failed"),
                                         (ValueError("boom"), "failed")])
def test_summary_ends_interrupted_or_failed(tiny_cfg, tmp_path, monkeypatch, exc, status):
    real_fit = run_mod.fit
    monkeypatch.setattr(run_mod, "fit", lambda *a, **k: real_fit(*a, **k, callbacks=[_Raise(exc)]))
    run = tmp_path / "run"
    with pytest.raises((KeyboardInterrupt, DnnlabError, ValueError)):
        train_run(_cfg(tiny_cfg), run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == status and summary["message"]
    assert not rundir.is_held(run)


def test_two_cli_trainers_on_one_out(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n[model]\ndepth = 1\nwidth = 8\n'
                   '[train]\nprogress = false\nepochs = 100000\npatience = "none"\ndevice = "cpu"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-m", "dnnlab", "train", str(cfg), "--out",
                              str(tmp_path / "run")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if rundir.is_held(tmp_path / "run"):
                break
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "dnnlab", "train", str(cfg), "--out",
                                 str(tmp_path / "run")], env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and f"process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()

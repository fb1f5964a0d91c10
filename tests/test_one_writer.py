"""One writer per run directory (issue 18, point 4) and the paths of point 6.

* The lock is on the run directory itself: deleting ``.lock`` does not free it.
* doctor and report on a run that another process holds write a folder of their own; prune,
  export and a second ``train --resume`` are refused; every refused command leaves the run's files
  byte for byte and mtime for mtime as they were (:func:`snapshot`).
* SIGTERM and SIGHUP end ``dnnlab train`` "interrupted", as Ctrl-C does, with exit code 128 + N.
* ``--out ''`` is refused by every command that has ``--out``; lr-find keeps its plot in its folder.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli
from dnnlab import cli, rundir
from dnnlab.config import replace
from dnnlab.errors import DnnlabError
from dnnlab.runs import train_run

HOLDER = """
import sys, time
from dnnlab import rundir
with rundir.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def hold_in_child(path: Path) -> subprocess.Popen:
    """A second process holding ``path`` (through :func:`rundir.hold`) until it is killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                         text=True, env=ENV)
    assert p.stdout.readline().strip() == "held"
    return p


def snapshot(folder: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every path under ``folder``: a file's bytes and mtime (ns), None for a folder."""
    out: dict[str, tuple[bytes, int] | None] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = None if p.is_dir() else (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def assert_unchanged(folder: Path, before: dict) -> None:
    after = snapshot(folder)
    assert sorted(after) == sorted(before), (set(after) ^ set(before))
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"changed by a refused command: {changed}"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run with layer records (what doctor, report, prune and export read)."""
    from dnnlab.config import RunConfig
    cfg = replace(RunConfig(), **{"model.depth": 2, "model.width": 16, "train.epochs": 2,
                                  "train.batch_size": 32, "train.progress": False,
                                  "train.patience": None, "train.device": "cpu",
                                  "train.record_every": 1, "data.name": "synthetic",
                                  "data.limit": 200, "data.valid_size": 60})
    run = tmp_path_factory.mktemp("finished") / "run"
    train_run(cfg, run)
    return run


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of the finished run."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture(scope="module")
def held(finished, tmp_path_factory):
    """A copy of the finished run that another process holds for the whole module."""
    run = Path(shutil.copytree(finished, tmp_path_factory.mktemp("held") / "run"))
    child = hold_in_child(run)
    yield run, child.pid
    child.kill()
    child.wait()


# -- the lock ----------------------------------------------------------------------------------

def test_deleting_the_lock_file_does_not_free_the_run(tmp_path):
    run = tmp_path / "run"
    child = hold_in_child(run)
    try:
        (run / rundir.LOCK_NAME).unlink()            # the holder's record, not the lock
        assert rundir.is_held(run)
        with pytest.raises(DnnlabError, match=r"in use by another process"):
            with rundir.hold(run):
                pass
        assert not (run / rundir.LOCK_NAME).exists()  # the refused hold wrote nothing
    finally:
        child.kill()
        child.wait()
    assert not rundir.is_held(run)
    with rundir.hold(run):
        assert rundir.read_lock(run)["pid"] == os.getpid()


def test_check_free_names_the_held_folder_around_a_path(tmp_path):
    run = tmp_path / "run"
    child = hold_in_child(run)
    try:
        with pytest.raises(DnnlabError, match=rf"lies in {run}, which is in use by process "
                                              rf"{child.pid} on "):
            rundir.check_free(run / "sub" / "model.onnx")
        assert rundir.check_free(tmp_path / "other") == tmp_path / "other"
    finally:
        child.kill()
        child.wait()
    with rundir.hold(run):                           # a folder this process holds is free to it
        assert rundir.check_free(run / "x.png") == run / "x.png"


# -- refused commands change nothing; readers write elsewhere -----------------------------------

@pytest.mark.parametrize("argv", [
    ["prune", "{run}", "--sparsity", "0.5", "--epochs", "0"],
    ["export", "{run}"],
    ["export", "{run}", "--out", "{tmp}/m.onnx"],
    ["train", "--resume", "{run}", "--epochs", "4"],
    ["report", "{run}", "--out", "{run}/report"],
    ["doctor", "{run}", "--out", "{run}/doctor"],
    ["lr-find", "{tmp}/c.toml", "--out", "{run}"],
], ids=lambda a: " ".join(a[:3]))
def test_a_command_on_a_held_run_is_refused_and_changes_nothing(held, tmp_path, argv):
    run, pid = held
    (tmp_path / "c.toml").write_text('[data]\nname = "synthetic"\n')
    before = snapshot(run)
    code, out, err = run_cli([a.format(run=run, tmp=tmp_path) for a in argv])
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and f"in use by process {pid} on " in err, err
    assert_unchanged(run, before)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("command, written", [("report", ["report.html", "curves.png"]),
                                               ("doctor", ["doctor.html", "findings.json"])])
def test_report_and_doctor_of_a_held_run_write_a_folder_of_their_own(held, command, written):
    run, _ = held
    before = snapshot(run)
    code, out, err = run_cli([command, str(run)])
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1].removeprefix("report: "))
    assert path.name == written[0] and path.parent != run and not path.is_relative_to(run)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(written)
    assert_unchanged(run, before)
    shutil.rmtree(path.parent)


@pytest.mark.parametrize("command, written", [("report", "report.html"),
                                               ("doctor", "findings.json")])
def test_report_and_doctor_of_a_free_run_write_into_it(run, command, written):
    code, out, err = run_cli([command, str(run)])
    assert code == 0, err
    assert (run / written).is_file() and f"report: {run}" in out
    assert not rundir.is_held(run) and not (run / rundir.LOCK_NAME).exists()


@pytest.mark.parametrize("extra, damage", [
    (["--set", "optim.lr=0.5"], None),              # refused by the config check
    (["--epochs", "1"], None),                      # fewer epochs than it has run: the trainer
    (["--out", "{tmp}/other"], None),               # a resume writes where the run is
    (["--epochs", "4"], "checkpoints/last.safetensors"),   # a damaged checkpoint
], ids=["changed-config", "fewer-epochs", "other-out", "damaged-checkpoint"])
def test_a_refused_resume_changes_nothing(run, tmp_path, extra, damage):
    if damage:
        path = run / damage
        path.write_bytes(path.read_bytes()[:-100])
    before = snapshot(run)
    code, _, err = run_cli(["train", "--resume", str(run)] + [a.format(tmp=tmp_path) for a in extra])
    assert code == 2 and err.count("\n") == 1, err
    assert_unchanged(run, before)
    assert not (tmp_path / "other").exists()


# -- signals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_ends_training_interrupted(tmp_path, sig):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n[model]\ndepth = 1\nwidth = 8\n'
                   '[train]\nprogress = false\nepochs = 100000\npatience = "none"\ndevice = "cpu"\n')
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "dnnlab", "train", str(cfg), "--out", str(run)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads((run / "summary.json").read_text())["status"] == "running":
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 128 + sig, (out, err)
    assert f"interrupted ({signal.Signals(sig).name})" in err and "Traceback" not in err, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "--resume" in summary["message"]
    assert not rundir.is_held(run)


def test_signals_restore_their_handlers_and_an_ignored_hangup_stays_ignored():
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)           # as under nohup
    old_term = signal.getsignal(signal.SIGTERM)
    try:
        with rundir.interrupt_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            with pytest.raises(rundir.Interrupted) as caught:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)                                        # the handler runs first
        assert isinstance(caught.value, KeyboardInterrupt)
        assert rundir.exit_code(caught.value) == 143 and rundir.exit_code(KeyboardInterrupt()) == 130
        assert signal.getsignal(signal.SIGTERM) is old_term
    finally:
        signal.signal(signal.SIGHUP, old_hup)


# -- paths ---------------------------------------------------------------------------------------

def _with_out(parser: argparse.ArgumentParser, prefix: list[str]):
    """(argv prefix, --out action) of every (sub)command that has --out."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _with_out(sub, prefix + [name])
        elif "--out" in action.option_strings:
            yield prefix, action


def test_every_out_refuses_empty_with_one_line():
    found = list(_with_out(cli.build_parser(), []))
    commands = {" ".join(prefix) for prefix, _ in found}
    assert {"train", "report", "lr-find", "sweep", "export", "doctor", "tune", "explain",
            "study transfer", "study cifar10"} <= commands
    for prefix, action in found:
        assert action.type is rundir.out_arg, prefix     # the one check, on every --out
        for empty in ("", "  "):
            code, out, err = run_cli(prefix + ["--out", empty])
            assert code == 2 and err.count("\n") == 1, (prefix, err)
            assert "empty --out would write into the current folder" in err, (prefix, err)


@pytest.mark.parametrize("name", ["../../escape", "/abs/escape"])
def test_lr_find_keeps_its_plot_in_its_folder(tmp_path, monkeypatch, name):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    cfg = work / "c.toml"
    cfg.write_text(f'name = "{name}"\n[data]\nname = "synthetic"\nlimit = 300\n'
                   '[train]\nprogress = false\nbatch_size = 16\n')
    code, out, err = run_cli(["lr-find", str(cfg), "--steps", "20"])
    assert code == 0, err
    plot = Path(out.strip().splitlines()[-1].removeprefix("plot: "))
    assert plot.is_file() and plot.resolve().parent == (work / "runs").resolve()
    assert plot.name.endswith("escape-lr-find.png")
    assert not (tmp_path / "escape-lr-find.png").exists()
    assert not Path("/abs").exists()

"""Many workers, one job: `dnnlab sweep --storage` shared by processes through Optuna's storage (one
SIGKILLed mid-group, its trial failed and retried, every variant in the summary exactly once), a
sweep that resumes, and a `dnnlab tune` worker killed mid-trial whose trial is failed, retried and
not counted."""

import csv
import os
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from dnnlab.storage import open_storage
from test_tune_workers import postgres_url  # noqa: F401  (the PostgreSQL server fixture)

CONFIG = """
name = "sw"
[data]
name = "synthetic"
limit = 600
valid_size = 100
[model]
depth = 2
[train]
epochs = 60
batch_size = 16
patience = "none"
progress = false
device = "cpu"
checkpoint_every = 0
"""
WIDTHS = [4, 5, 6, 7]            # 4 groups (a width is a shape), 2 learning rates in each
LRS = [0.01, 0.02]
EPOCHS = 60                      # about 3 s a group here: long enough to be killed in one
AXES = ["--set", "model.width=" + ",".join(map(str, WIDTHS)), "--set",
        "optim.lr=" + ",".join(map(str, LRS)), "--set", f"train.epochs={EPOCHS}"]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": "1"}


def _worker(config, storage, out, grace=3):
    return subprocess.Popen([sys.executable, "-m", "dnnlab", "sweep", str(config), *AXES,
                             "--storage", storage, "--out", str(out), "--grace", str(grace)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())


def _trials(storage):
    """The sweep study's trials (none before a worker has created it); ``storage`` is opened
    once by the caller (:func:`open_storage`), not per look."""
    names = optuna.study.get_all_study_names(storage=storage)
    if not names:
        return []
    assert len(names) == 1 and names[0].startswith("dnnlab-sweep-")
    return optuna.load_study(study_name=names[0], storage=storage).get_trials()


def _check_summary(out):
    runs = list(csv.DictReader(open(out / "runs.csv")))
    names = sorted(r["run"] for r in runs)
    expected = sorted(f"width={w}_lr={lr}_seed=42" for w in WIDTHS for lr in LRS)
    assert names == expected                       # every variant, exactly once
    assert "epochs" not in "".join(names)          # a one-value --set is not an axis
    assert all(r["status"] == "completed" and r["epochs_run"] == str(EPOCHS) for r in runs)
    for name in names:
        assert (out / name / "model.safetensors").is_file()
    variants = list(csv.DictReader(open(out / "summary.csv")))
    assert sorted(v["variant"] for v in variants) == sorted(n.removesuffix("_seed=42") for n in names)


def test_two_postgres_workers_one_killed_every_variant_once(tmp_path, postgres_url):  # noqa: F811
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    out = tmp_path / "sweep"
    victim = _worker(config, postgres_url, out)
    db = open_storage(postgres_url, 1)
    deadline = time.time() + 90
    while True:            # the victim has trained a group for half a second (past its first
        running = [t for t in _trials(db) if t.state == TrialState.RUNNING     # heartbeat) and
                   and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]  # is still at it
        if running:
            time.sleep(0.5)
            if _trials(db)[running[0].number].state == TrialState.RUNNING:
                break
        assert time.time() < deadline and victim.poll() is None, victim.stdout.read()
        time.sleep(0.05)
    killed_group = running[0].user_attrs["group"]
    survivor = _worker(config, postgres_url, out)
    victim.send_signal(signal.SIGKILL)             # mid-group: its trial stays RUNNING
    victim.wait()
    text, _ = survivor.communicate(timeout=240)
    assert survivor.returncode == 0, text
    _check_summary(out)
    trials = _trials(db)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["group"] for t in complete) == sorted(
        {t.user_attrs["group"] for t in trials if "group" in t.user_attrs})   # each group once
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["group"] for t in failed] == [killed_group]          # the killed one
    redone = [t for t in complete if t.user_attrs["group"] == killed_group]
    assert redone[0].user_attrs["worker"].endswith(f":{survivor.pid}")
    assert redone[0].system_attrs.get("failed_trial") == failed[0].number    # Optuna's retry


def test_sqlite_sweep_resumes_without_retraining(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    out = tmp_path / "sweep"
    first = _worker(config, storage, out)
    text, _ = first.communicate(timeout=180)
    assert first.returncode == 0, text
    _check_summary(out)
    stamp = (out / "width=4_lr=0.01_seed=42" / "model.safetensors").stat().st_mtime_ns
    again = _worker(config, storage, out)
    text, _ = again.communicate(timeout=180)
    assert again.returncode == 0, text
    _check_summary(out)
    assert (out / "width=4_lr=0.01_seed=42" / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(_trials(open_storage(storage, 1))) == len(WIDTHS)   # nothing enqueued or run again


TUNE = """
name = "tk"
[data]
name = "synthetic"
valid_size = 100
limit = 2000
[model]
depth = 1
width = 8
[train]
epochs = 300
batch_size = 16
patience = "none"
progress = false
device = "cpu"
checkpoint_every = 0
[tune]
"optim.lr" = {low = 1e-3, high = 1e-2, log = true}
"""


def test_killed_tune_worker_trial_is_retried_and_not_counted(tmp_path):
    config = tmp_path / "t.toml"
    config.write_text(TUNE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def start(name):
        return subprocess.Popen([sys.executable, "-m", "dnnlab", "tune", str(config), "--trials",
                                 "2", "--folds", "2", "--storage", storage, "--study-name", "s",
                                 "--heartbeat", "1", "--out", str(tmp_path / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=_env())

    victim = start("a")
    deadline = time.time() + 60
    while True:
        try:
            study = optuna.load_study(study_name="s", storage=storage)
            if study.get_trials(states=(TrialState.RUNNING,)):
                break
        except Exception:  # noqa: BLE001 - the study does not exist yet
            pass
        assert time.time() < deadline and victim.poll() is None
        time.sleep(0.2)
    time.sleep(2)              # past its first heartbeat: a trial without one is never stale
    assert victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(4)              # past the grace of 3 missed heartbeats: the dead trial is stale
    survivor = start("b")
    text, _ = survivor.communicate(timeout=240)
    assert survivor.returncode == 0, text
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(failed) == 1 and len(finished) >= 2
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == failed[0].number]
    assert retried and retried[0].params == failed[0].params   # the dead trial, run again

"""Study stages shared across workers through an Optuna storage (``dnnlab study ... --storage``):
two workers on one quick ablation study on synthetic data, one SIGKILLed mid-stage; the other
retries its stage after the heartbeat goes stale, and every stage ends done exactly once."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from dnnlab.storage import open_storage
from dnnlab.studies.ablation.stages import stages
from dnnlab.studies.engine import RECORD_ATTR, STAGE_ATTR
from test_tune_workers import postgres_url  # noqa: F401  (the PostgreSQL server fixture)

CONFIG = """
name = "synth"
[data]
name = "synthetic"
limit = 1200
valid_size = 200
[model]
depth = 4
width = 32
[train]
epochs = 3
patience = 2
"""


def _worker(config: Path, out: Path, storage: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dnnlab", "study", "ablation", str(config), "--quick",
         "--seeds", "2", "--device", "cpu", "--out", str(out), "--storage", storage,
         "--heartbeat", "1"], stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        content = path.read_text()
        if text in content:
            return content
        assert proc.poll() is None, content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen in {path}: {path.read_text()}")


def test_two_workers_one_killed_mid_stage_every_stage_done_once(tmp_path, postgres_url):  # noqa: F811
    config = tmp_path / "ablation.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"                         # one folder both workers reach
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = _worker(config, out, postgres_url, logs[0])
    seen = _wait_for(logs[0], "started", a)        # worker a is inside a stage: kill it there
    b = _worker(config, out, postgres_url, logs[1])
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    killed_stage = seen.split("started")[0].rsplit("] ", 1)[1].rstrip(": ")
    assert b.wait(timeout=600) == 0, logs[1].read_text()

    names = [s.name for s in stages()]
    summaries = optuna.get_all_study_summaries(open_storage(postgres_url))
    assert len(summaries) == 1 and summaries[0].study_name.startswith("ablation-")
    study = optuna.load_study(study_name=summaries[0].study_name,
                              storage=open_storage(postgres_url))
    trials = study.get_trials(deepcopy=False)
    done = collections.Counter(t.user_attrs[STAGE_ATTR] for t in trials
                               if t.state == TrialState.COMPLETE)
    assert done == collections.Counter(names)                 # every stage exactly once
    assert all(RECORD_ATTR in t.user_attrs for t in trials if t.state == TrialState.COMPLETE)
    failed = [t.user_attrs.get(STAGE_ATTR) for t in trials if t.state == TrialState.FAIL]
    assert killed_stage in failed, (killed_stage, failed)     # a's stage died with it, was retried
    completed_by = {t.user_attrs[STAGE_ATTR]: t.user_attrs["worker"] for t in trials
                    if t.state == TrialState.COMPLETE}
    assert completed_by[killed_stage].endswith(str(b.pid))    # ... by worker b
    saved = json.loads((out / "results.json").read_text())
    assert saved["storage"] and saved["baseline"]["val_accuracy_mean"] > 0.3

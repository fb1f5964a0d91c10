"""Kill a training process with SIGKILL at random moments, resume each time, and check that
the run finishes, that every checkpoint on disk loads, and that (deterministic, CPU) the final
weights equal those of an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time

import torch

from dnnlab.config import load_config
from dnnlab.data import load_from_config
from dnnlab.train import fit
from dnnlab.train.checkpoint import load, load_model

CONFIG = """
name = "kill"
[data]
name = "synthetic"
limit = 800
[model]
depth = 3
width = 64
dropout = 0.1
[optim]
name = "adam"
lr = 1e-3
[train]
epochs = 250
batch_size = 16
patience = 1000
checkpoint_every = 7
deterministic = true
progress = false
device = "cpu"
"""


def _start(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "dnnlab", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _epochs_logged(run) -> int:
    try:
        return max(0, len((run / "metrics.csv").read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _kill_at_a_random_moment(p, run, rng, startup: float, epoch_seconds: list[float]) -> bool:
    """SIGKILL ``p`` while it starts up (a quarter of the kills), or a random part of an epoch
    after it has logged 1-8 more epochs (mid-epoch or mid-checkpoint). The moments follow the
    process's own progress, not a clock, so a slow or loaded machine changes nothing.
    False when the run ended first."""
    if rng.random() < 0.25:
        time.sleep(rng.uniform(0, 0.8 * startup))
    else:
        target = _epochs_logged(run) + rng.randint(1, 8)
        last = None
        while (n := _epochs_logged(run)) < target:
            if p.poll() is not None:
                return False
            if last is not None and n > last[0]:
                epoch_seconds.append(time.perf_counter() - last[1])
            if last is None or n > last[0]:
                last = (n, time.perf_counter())
            time.sleep(0.005)
        time.sleep(rng.uniform(0, min(epoch_seconds[-5:], default=0.05)))
    if p.poll() is not None:
        return False
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return True


def test_sigkill_twenty_times_then_resume_matches_uninterrupted(tmp_path):
    cfg_path = tmp_path / "kill.toml"
    cfg_path.write_text(CONFIG)
    run = tmp_path / "run"
    rng = random.Random(0)

    t0 = time.perf_counter()
    p = _start([str(cfg_path), "--out", str(run)])
    while not (run / "checkpoints" / "last.safetensors").exists():
        assert p.poll() is None, p.stderr.read().decode()
        time.sleep(0.02)
    startup = time.perf_counter() - t0          # import + data + first epoch
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    kills, epoch_seconds = 1, []
    while kills < 20:
        p = _start(["--resume", str(run)])
        if not _kill_at_a_random_moment(p, run, rng, startup, epoch_seconds):
            break                                 # finished before the kill
        kills += 1
        for ckpt in (run / "checkpoints").glob("*.safetensors"):
            load(ckpt)                            # every checkpoint on disk loads
    assert kills == 20, "the run finished before 20 kills; make it longer"
    done = subprocess.run([sys.executable, "-m", "dnnlab", "train", "--resume", str(run)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "run directory" in done.stdout

    for ckpt in (run / "checkpoints").glob("*.safetensors"):
        load(ckpt)
    assert not list(run.rglob(".*.tmp"))
    cfg = load_config(cfg_path)
    reference = fit(cfg, load_from_config(cfg.data))
    resumed = load_model(run / "model.safetensors")
    for (k, a), b in zip(reference.model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 250

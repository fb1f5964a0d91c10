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
    kills = 1
    while kills < 20:
        p = _start(["--resume", str(run)])
        time.sleep(startup * 0.8 + rng.uniform(0, startup * 0.4))
        if p.poll() is not None:                  # finished before the kill: too late to kill
            break
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
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

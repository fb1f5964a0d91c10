"""How long the command line takes to start, against ``python -c "import torch"``.

Measured in one run, interleaved round by round (so a busy machine slows every contender alike),
the median over ``--rounds``, each a fresh process:

- ``import torch``: the floor every training command pays;
- ``dnnlab --version`` and ``dnnlab --help``: need no torch (target: under 0.5 s);
- ``dnnlab train`` on a tiny generated config (1 epoch, 200 rows, a 1 x 8 network), whole;
- the same command until its first step: the child stops where the trainer's loop starts
  (``Trainer.run``) and the time from launching it to there is taken; beyond ``import torch``
  it is what the command spends before training (target: at most 0.7 s).

    python benchmarks/startup.py --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """name = "startup"
[data]
name = "synthetic"
limit = 200
valid_size = 100
[model]
depth = 1
width = 8
[train]
epochs = 1
progress = false
"""


FIRST_STEP = """import os, sys, time
import dnnlab_launch
import dnnlab.train.driver as driver
def stop(self):
    print("first step at", time.time(), flush=True)
    os._exit(0)
driver.Trainer.run = stop
dnnlab_launch.main(sys.argv[1:])
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from launch to exit, or to the first step for the FIRST_STEP child."""
    t = time.time()
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("first step at"):
            return float(line.split()[-1]) - t
    return time.time() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="processes per contender (median)")
    ap.add_argument("--src", default=str(ROOT / "src"), help="the dnnlab source tree to time "
                    "(default this checkout's src/; another checkout's, to compare)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": args.src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    dnnlab = [sys.executable, "-c", "import sys, dnnlab_launch; sys.exit(dnnlab_launch.main())"]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "startup.toml"
        config.write_text(CONFIG)
        contenders = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "dnnlab --version": [*dnnlab, "--version"],
            "dnnlab --help": [*dnnlab, "--help"],
            "dnnlab train (1 tiny epoch)": [*dnnlab, "train", str(config), "--out", ""],
            "dnnlab train, to its first step": [sys.executable, "-c", FIRST_STEP, "train",
                                                str(config), "--out", ""],
        }
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for r in range(args.rounds):
            for name, cmd in contenders.items():
                if cmd[-1] == "":
                    cmd = [*cmd[:-1], str(Path(tmp) / f"{name[:12].replace(' ', '')}{r}")]
                times[name].append(timed(cmd, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_s = med["python -c 'import torch'"]
    print(f"{'command':32} {'median s':>9} {'beyond import torch':>20}   (rounds: {args.rounds})")
    for name, s in med.items():
        print(f"{name:32} {s:9.3f} {s - torch_s:+20.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

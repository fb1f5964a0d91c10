"""How long the command line takes to start, against ``python -c "import torch"``.

Measured in one run, interleaved round by round (so a busy machine slows every contender alike),
the median over ``--rounds``, each a fresh process:

- ``import torch``: the floor every training command pays;
- ``dnnlab --version`` and ``dnnlab --help``: need no torch (target: under 0.5 s);
- ``dnnlab train`` on a tiny generated config (1 epoch, 200 rows, a 1 x 8 network), whose
  training takes milliseconds: its time beyond ``import torch`` bounds what the command spends
  before its first step (target: at most 0.7 s).

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


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="processes per contender (median)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    dnnlab = [sys.executable, "-c", "import sys, dnnlab_launch; sys.exit(dnnlab_launch.main())"]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "startup.toml"
        config.write_text(CONFIG)
        contenders = {
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "dnnlab --version": [*dnnlab, "--version"],
            "dnnlab --help": [*dnnlab, "--help"],
            "dnnlab train (1 tiny epoch)": [*dnnlab, "train", str(config), "--out", ""],
        }
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for r in range(args.rounds):
            for name, cmd in contenders.items():
                if cmd[-1] == "":
                    cmd = [*cmd[:-1], str(Path(tmp) / f"run{r}")]
                times[name].append(timed(cmd, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_s = med["python -c 'import torch'"]
    print(f"{'command':32} {'median s':>9} {'beyond import torch':>20}   (rounds: {args.rounds})")
    for name, s in med.items():
        print(f"{name:32} {s:9.3f} {s - torch_s:+20.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

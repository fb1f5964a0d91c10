"""How close dnnlab's train step comes to this machine's own matrix-product rate.

    python benchmarks/roofline.py                    # 3 interleaved rounds, 1 and 2 threads
    python benchmarks/roofline.py --rounds 5 --threads 1,2 --steps 300
    python benchmarks/roofline.py --against /tmp/old/src/dnnlab/train/stacked.py   # old vs new

The work of one step of the chapter's exercise is fixed: a 20 x 100 ELU MLP on 3,072 inputs, 10
classes, batch 32, ~76 MFLOP of matrix products (forward, kernel gradients, signal gradients). The
fastest this CPU can do that arithmetic is its rate on a large single-precision product (sgemm,
``--n`` x ``--n`` x ``--n``), so ``step FLOP / step time / sgemm rate`` says how much of the
machine a step uses, whatever the machine and whatever else slows it down today.

Everything runs in one process, interleaved: each round measures the sgemm rate and then the step
at every thread count in turn, so a drift of the machine (a shared virtual machine's speed moves
by 2x over minutes) falls on both alike; each figure is the median over rounds of the ratio taken
within a round. The step is dnnlab's own: ``StackedMLP`` (K = 1) built from the exercise's MLP by
the trainer's backend, ``train_step`` (forward, loss, hand-written backward into the flat gradient)
and ``FlatOptimizer.step`` (Nadam), on batches drawn from a pool of random data of CIFAR-10's
shape. The update is compiled (``--update fused``, the default) as the trainer compiles it for a
run as long as the exercise's (``FlatOptimizer.fuse``: runs of at least 3e9 parameter-updates, ~6
epochs of this net), or eager (``--update eager``) as in the benchmarks' 4-epoch runs.
``GOMP_SPINCOUNT`` is the ``dnnlab`` command's (``dnnlab_launch.OPENMP_ENV``), set before torch is
imported. The dnnlab measured is the one ``PYTHONPATH`` puts first (so two trees compare by running
the script under each, alternately).

It prints the per-op breakdown of one step at 1 thread (torch.profiler, self CPU time per op and
shape; the profiler's own cost inflates the small ops a little) and, as its last line,
``step at A% (1 thread), B% (2 threads) of this machine's sgemm rate``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dnnlab_launch import OPENMP_ENV  # noqa: E402

for _key, _value in OPENMP_ENV.items():       # before torch loads libgomp, as the command does
    os.environ.setdefault(_key, _value)

import common  # noqa: E402

DEPTH, WIDTH, FEATURES, CLASSES, BATCH = 20, 100, 3072, 10, 32


def step_flop(depth: int = DEPTH, width: int = WIDTH, features: int = FEATURES,
              classes: int = CLASSES, batch: int = BATCH) -> float:
    """The matrix products' FLOP of one step (2 per multiply-add): every layer's forward product
    and kernel gradient, and the signal gradient of every layer but the first (the input needs
    none)."""
    shapes = [(features, width)] + [(width, width)] * (depth - 1) + [(width, classes)]
    forward = sum(2 * batch * a * b for a, b in shapes)
    signal = sum(2 * batch * a * b for a, b in shapes[1:])
    return 2 * forward + signal


def sgemm_rate(n: int, reps: int) -> float:
    """FLOP/s of an n x n x n float32 product at the current thread count (median of ``reps``)."""
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)                                   # warm-up: pages, packing buffers
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


class Step:
    """The exercise's train step through dnnlab's trainer objects: a StackedMLP of one model and
    the flat Nadam optimizer, with a pool of batches to cycle through."""

    def __init__(self, update: str = "fused", stacked=None, seed: int = 0, pool: int = 64):
        import torch

        from dnnlab.config import RunConfig, replace
        from dnnlab.nn.mlp import build_mlp
        from dnnlab.optim.flat import FlatOptimizer
        from dnnlab.train.stacked import StackedMLP
        if stacked is not None:                         # another version's module (--against)
            StackedMLP = stacked.StackedMLP             # noqa: N806
        cfg = replace(RunConfig(), **{"model.depth": DEPTH, "model.width": WIDTH,
                                      "model.activation": "elu", "model.init": "he_normal",
                                      "optim.name": "nadam", "optim.lr": 1e-3})
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(pool, BATCH, FEATURES, generator=g)
        self.y = torch.randint(0, CLASSES, (pool, BATCH), generator=g)
        self.model = StackedMLP.from_models([build_mlp(cfg.model, FEATURES, CLASSES, seed)], "cpu")
        self.opt = FlatOptimizer.from_configs([cfg.optim], self.model.flat, self.model.grad)
        if update == "fused":
            self.opt.fuse()
        self.lr_steps = 10_000
        self.table = self.opt.table(torch.full((self.lr_steps, 1), 1e-3).numpy())
        self.i = 0

    def __call__(self) -> None:
        i = self.i % len(self.x)
        self.model.train_step(self.x[i], self.y[i])
        self.opt.step(self.table[self.i % self.lr_steps])
        self.i += 1

    def seconds(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps (after a few unmeasured ones)."""
        for _ in range(5):
            self()
        t0 = time.perf_counter()
        for _ in range(steps):
            self()
        return (time.perf_counter() - t0) / steps


def load_stacked(path: str):
    """Another version's ``dnnlab/train/stacked.py`` as a module of its own (it imports the rest
    of dnnlab from the tree being measured), to time its step beside this tree's."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("dnnlab_stacked_against", path)
    if spec is None or spec.loader is None:
        sys.exit(f"--against {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                 # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def breakdown(step: Step, steps: int) -> list[tuple[str, float]]:
    """(op and shapes, microseconds per step) of the step's ops, by self CPU time, at the current
    thread count, largest first."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(5):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        shapes = [s for s in e.input_shapes if s]
        label = f"{e.key} {' '.join('x'.join(map(str, s)) for s in shapes[:3])}"
        rows.append((label, e.count / steps, e.self_cpu_time_total / steps))
    rows.sort(key=lambda r: -r[2])
    return [(f"{label} ({calls:g}/step)", us) for label, calls, us in rows if us > 0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="thread counts to measure (default 1,2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median is kept)")
    p.add_argument("--steps", type=int, default=200, help="steps timed per measurement")
    p.add_argument("--n", type=int, default=2048, help="size of the sgemm (n x n x n)")
    p.add_argument("--reps", type=int, default=3, help="sgemm products per measurement")
    p.add_argument("--update", default="fused", choices=["fused", "eager"],
                   help="the optimizer update compiled (as the exercise's long runs) or eager")
    p.add_argument("--against", metavar="STACKED_PY",
                   help="another version's src/dnnlab/train/stacked.py: its step is timed right "
                        "after this tree's in every round (old/new within one process)")
    p.add_argument("--profile-steps", type=int, default=50)
    p.add_argument("--top", type=int, default=16, help="rows of the per-op breakdown")
    p.add_argument("--out", default=str(common.RESULTS / "roofline_cpu.json"))
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    import torch
    torch.set_num_interop_threads(1)
    flop = step_flop()
    info = common.machine("cpu", max(threads))
    print(f"machine: {info['cpu']} ({info['cpu_count']} CPUs), torch {info['torch']}, "
          f"load average {info['load_average_at_start']:.1f}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    print(f"step: {DEPTH} x {WIDTH} ELU MLP, {FEATURES} inputs, batch {BATCH}, Nadam, K = 1: "
          f"{flop / 1e6:.1f} MFLOP of products; {args.update} update; sgemm {args.n}^3\n")
    step = Step(args.update)
    other = Step(args.update, load_stacked(args.against)) if args.against else None
    against: dict[int, list[float]] = {t: [] for t in threads}
    rates: dict[int, list[float]] = {t: [] for t in threads}
    secs: dict[int, list[float]] = {t: [] for t in threads}
    shares: dict[int, list[float]] = {t: [] for t in threads}
    for rnd in range(args.rounds):
        for t in threads:
            torch.set_num_threads(t)
            rate = sgemm_rate(args.n, args.reps)
            s = step.seconds(args.steps)
            rates[t].append(rate)
            secs[t].append(s)
            shares[t].append(flop / s / rate)
            print(f"round {rnd + 1}/{args.rounds}, {t} thread{'s' * (t > 1)}: sgemm "
                  f"{rate / 1e9:6.1f} GFLOP/s, step {s * 1e3:6.3f} ms = {flop / s / 1e9:5.1f} "
                  f"GFLOP/s = {100 * flop / s / rate:5.1f}% of sgemm", flush=True)
            if other is not None:
                s_other = other.seconds(args.steps)
                against[t].append(s / s_other)
                print(f"  --against's step {s_other * 1e3:6.3f} ms: this tree's / its "
                      f"{s / s_other:.3f}", flush=True)

    torch.set_num_threads(1)
    rows = breakdown(step, args.profile_steps)
    total = sum(us for _, us in rows)
    print(f"\nper-op breakdown of one step, 1 thread (torch.profiler, self CPU time, "
          f"{total:.0f} us/step in all):")
    print(common.table([[label, f"{us:.1f}", f"{100 * us / total:.1f}%"]
                        for label, us in rows[:args.top]], ["op, input shapes", "us/step", "share"]))
    print()
    summary = []
    for t in threads:
        pct = 100 * statistics.median(shares[t])
        summary.append(f"{pct:.0f}% ({t} thread{'s' * (t > 1)})")
        print(f"{t} thread{'s' * (t > 1)}: sgemm {statistics.median(rates[t]) / 1e9:.1f} GFLOP/s, "
              f"step {statistics.median(secs[t]) * 1e3:.3f} ms (median of {args.rounds} rounds)"
              + (f", {statistics.median(against[t]):.3f} of --against's" if other else ""))
    common.save(args.out, {
        "benchmark": "roofline", "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": info,
        "step_mflop": flop / 1e6, "sgemm_n": args.n, "update": args.update,
        "against": args.against,
        "rounds": {t: {"sgemm_flops": rates[t], "step_seconds": secs[t], "share": shares[t],
                       "step_over_against": against[t]}
                   for t in threads},
        "breakdown_1_thread_us": dict(rows)})
    print(f"results written to {args.out}")
    print(f"step at {', '.join(summary)} of this machine's sgemm rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())

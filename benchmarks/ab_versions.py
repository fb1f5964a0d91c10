"""Old code against new code on the same machine: one measurement, two source trees, interleaved.

    python benchmarks/ab_versions.py --old /tmp/oldmain/src --new src --rounds 4
    python benchmarks/ab_versions.py --old A/src --new B/src --only fit --threads 1,2

A change to the trainer must not slow it down (issue 19.6: within 5%). Timings taken an hour apart
on a shared virtual machine differ by more than that, so the two versions are measured in the same
session: every measurement is a fresh subprocess whose ``PYTHONPATH`` puts one tree's ``src`` ahead
of the installed dnnlab, and the versions alternate (old-new, then new-old in the next round, so
a slow drift of the machine falls on both alike). Each case keeps every round; the table gives the
median and the spread over rounds and the ratio new/old of the medians.

The workload is the chapter's CIFAR-10 exercise on the real images (``$DNNLAB_DATA_DIR/
cifar10.npz``, pixels / 255): the 20x100 ELU MLP, He normal, Nadam, batch 32, trained by ``fit``
(K = 1) and by ``train_many`` with K = 8 seeds and rates (log-spaced in [1e-4, 1e-3], as
sweep_speed.py). ``--n-train`` images make a few hundred steps an epoch; ``--warmup`` epochs are
dropped and the median of the rest is a measurement (the trainer's own per-epoch clock, training
pass + validation). The total stays under the trainer's 3e9 parameter-updates at which it compiles
the update, so no compile time enters either version.

Threads are fixed (``OMP_NUM_THREADS`` and ``torch.set_num_threads``) so that the new adaptive
thread policy, which a fixed count switches off, does not change the comparison; the policy's own
cost is a separate case (``--policy``: the new tree with no fixed count, against the new tree at a
fixed 2, interleaved the same way). Beside each case: the share of the CPU other processes took.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

BASE = {"model.depth": 20, "model.width": 100, "model.activation": "elu",
        "model.init": "he_normal", "optim.name": "nadam", "optim.lr": 1e-3,
        "train.batch_size": 32, "train.patience": None, "train.progress": False,
        "train.checkpoint_every": 0, "train.device": "cpu"}
POLICY = 0            # the threads value of a case run under the new code's adaptive policy


def load_cifar10(n_train: int, n_valid: int):
    """The first ``n_train`` training images and ``n_valid`` from the last 5,000 (the split the
    chapter validates on), flattened to float32 in [0, 1]."""
    import numpy as np
    path = Path(os.environ.get("DNNLAB_DATA_DIR", "/work/shared/data")) / "cifar10.npz"
    with np.load(path, allow_pickle=False) as d:
        x, y = d["x_train"], d["y_train"].astype(np.int64)
    flat = lambda a: (a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    return flat(x[:n_train]), y[:n_train], flat(x[45_000:45_000 + n_valid]), y[45_000:45_000 + n_valid]


def worker(args) -> None:
    """One measurement in this process, with whichever dnnlab ``PYTHONPATH`` put first. Only the
    entry points both versions share are called (no callbacks: their protocol changed)."""
    import torch

    import dnnlab
    from dnnlab.config import RunConfig, replace
    from dnnlab.data import from_arrays
    from dnnlab.train import Variant, fit, train_many
    if args.threads != POLICY:
        torch.set_num_threads(args.threads)
    data = from_arrays(*load_cifar10(args.n_train, args.n_valid))
    cfg = replace(RunConfig(), **BASE, **{"train.epochs": args.warmup + args.epochs})
    if args.k == 1:
        seconds = list(fit(cfg, data, run_dir=None, evaluate_test=False).history["seconds"])
    else:
        lrs = [1e-4 * 10 ** (i / (args.k - 1)) for i in range(args.k)]
        variants = [Variant(seed=i, overrides={"optim.lr": lr}) for i, lr in enumerate(lrs)]
        results = train_many(cfg, data, variants, device="cpu", progress=False)
        seconds = list(max(results, key=lambda r: len(r.history["seconds"])).history["seconds"])
    common.write_result(args.result, {"seconds": seconds[args.warmup:], "dnnlab": dnnlab.__file__,
                                      "threads_at_end": torch.get_num_threads()})


def commit_of(src: Path) -> str:
    """The commit a tree's checkout is at (``?`` for an exported tree without .git)."""
    r = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", help="the old tree's src folder (required)")
    p.add_argument("--new", help="the new tree's src folder (required)")
    p.add_argument("--only", default="fit,k8", help="cases: fit (K = 1) and/or k8 (K = 8)")
    p.add_argument("--threads", default="1,2", help="fixed thread counts to compare at")
    p.add_argument("--no-policy", dest="policy", action="store_false",
                   help="skip the new tree's adaptive threads against its fixed 2")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--n-train", type=int, default=4_800, help="150 steps of 32 an epoch")
    p.add_argument("--n-valid", type=int, default=1_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--omp-wait-policy", default=None, choices=["ACTIVE", "PASSIVE"],
                   help="OMP_WAIT_POLICY for every process of both trees (default: unset, "
                        "torch's spinning workers; PASSIVE on a machine others are using)")
    p.add_argument("--out", default=str(common.RESULTS / "ab_versions_cpu.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.threads = int(args.threads)
        worker(args)
        return 0
    if not (args.old and args.new):
        p.error("give both --old and --new: the src folders of the two trees to compare")

    trees = {"old": Path(args.old).resolve(), "new": Path(args.new).resolve()}
    ks = {"fit": 1, "k8": 8}
    cases = []                    # (name, k, threads, [(label, tree), ...]) in the order run
    for name in args.only.split(","):
        for t in map(int, args.threads.split(",")):
            cases.append((f"{name} @{t}", ks[name], t, [("old", "old"), ("new", "new")]))
        if args.policy:
            cases.append((f"{name} policy vs @2", ks[name], None,
                          [("new @2", "new"), ("new policy", "new")]))
    print(f"machine: {common.cpu_model()} ({os.cpu_count()} CPUs), load average "
          f"{os.getloadavg()[0]:.1f}; old {trees['old']} ({commit_of(trees['old'])}), "
          f"new {trees['new']} ({commit_of(trees['new'])})")
    times: dict[tuple[str, str], list[float]] = {}
    others: dict[tuple[str, str], list[float]] = {}
    for rnd in range(args.rounds):
        for name, k, t, pair in cases:
            for label, tree in (pair if rnd % 2 == 0 else pair[::-1]):
                threads = POLICY if label == "new policy" else (t or 2)
                env = dict(os.environ, PYTHONPATH=str(trees[tree]), PYTHONUNBUFFERED="1")
                for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                    env.pop(var, None)
                if args.omp_wait_policy:
                    env["OMP_WAIT_POLICY"] = args.omp_wait_policy
                if threads != POLICY:
                    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
                wargs = ["--worker", "--k", str(k), "--threads", str(threads),
                         "--n-train", str(args.n_train), "--n-valid", str(args.n_valid),
                         "--epochs", str(args.epochs), "--warmup", str(args.warmup)]
                r = common.run_worker(Path(__file__), wargs, env, timeout=600)
                if "seconds" not in r:
                    sys.exit(f"{name} {label} failed: {r['error']}\n{r['log_tail']}")
                if not r["dnnlab"].startswith(str(trees[tree])):
                    sys.exit(f"{label} imported {r['dnnlab']}, not the tree {trees[tree]}")
                s = statistics.median(r["seconds"])
                times.setdefault((name, label), []).append(s)
                others.setdefault((name, label), []).append(r["others_cpu_share"] or 0.0)
                print(f"round {rnd + 1}/{args.rounds} {name:<18} {label:<10} {s:6.3f} s/epoch "
                      f"(epochs {', '.join(f'{x:.3f}' for x in r['seconds'])}; threads at end "
                      f"{r['threads_at_end']}; others {common.pct(r['others_cpu_share'])})",
                      flush=True)

    rows, out = [], []
    for name, k, t, pair in cases:
        (a, _), (b, _) = pair
        ta, tb = times[(name, a)], times[(name, b)]
        ma, mb = statistics.median(ta), statistics.median(tb)
        spread = lambda xs: f"{min(xs):.3f}-{max(xs):.3f}"  # noqa: E731
        share = max(others[(name, a)] + others[(name, b)])
        rows.append([name, f"{a}: {ma:.3f}", spread(ta), f"{b}: {mb:.3f}", spread(tb),
                     f"{mb / ma:.3f}", common.pct(share)])
        out.append({"case": name, "k": k, "threads": t, a: ta, b: tb, "ratio": mb / ma,
                    "others_cpu_share_max": share})
    print()
    print(common.table(rows, ["case", "A median s/epoch", "A range", "B median s/epoch",
                              "B range", "B/A", "others' CPU (max)"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "benchmark": "ab_versions", "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"cpu": common.cpu_model(), "cpu_count": os.cpu_count()},
        "trees": {k: f"{v} ({commit_of(v)})" for k, v in trees.items()},
        "workload": {"n_train": args.n_train, "n_valid": args.n_valid, "epochs": args.epochs,
                     "warmup": args.warmup, "rounds": args.rounds,
                     "omp_wait_policy": args.omp_wait_policy}, "cases": out}, indent=1))
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

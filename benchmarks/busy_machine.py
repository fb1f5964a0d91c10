"""dnnlab's default thread policy against every fixed thread count, quiet and beside a busy process.

    python benchmarks/busy_machine.py                   # 3 interleaved rounds, both workloads
    python benchmarks/busy_machine.py --rounds 1 --quick --workloads readme   # a smoke test

A user's machine is rarely quiet. With one core busy, torch's default of one thread per core made
the README example 100x slower (issue 19), because every parallel region waits for the worker the
busy process holds. dnnlab instead follows the free cores (:mod:`dnnlab.train.threads`). This
script checks that the policy is as fast as the best fixed choice in both conditions:

* workloads: ``readme``, the README's first example (examples/mnist_5x100.toml: 5x100 ELU, Nadam,
  batch 32, MNIST 0-4), and ``exercise``, the chapter's CIFAR-10 net (examples/cifar10_20x100.toml:
  20x100 ELU, Nadam, batch 32; CIFAR-10 from $DNNLAB_DATA_DIR), each cut to ``--n-train`` images;
* conditions: ``quiet``, and ``busy`` beside one ``python -c "while True: pass"``;
* contenders: ``policy`` (dnnlab's default) and ``fixed N`` for N = 1 .. the usable cores.

Every measurement is a fresh subprocess (:func:`common.measure`), bounded by ``--timeout``, with the
OpenMP environment the ``dnnlab`` command sets (:mod:`dnnlab_launch`). The combinations run in
interleaved rounds; a contender's figure is the median over rounds of its median s/epoch (warm-up
dropped). The table gives each, and per workload and condition the ratio policy / best fixed count:
the target is at most 1.25 in both conditions.
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import dnnlab_launch  # noqa: E402   (imports no torch)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WORKLOADS = {"readme": EXAMPLES / "mnist_5x100.toml", "exercise": EXAMPLES / "cifar10_20x100.toml"}
CONDITIONS = ("quiet", "busy")
TARGET = 1.25
SPINNER = "while True: pass"


def worker(args) -> None:
    """One measurement in this process: the workload's config, cut to ``--n-train`` images, trained
    with the policy (``--threads 0``) or a fixed count; the epochs' wall and CPU seconds. The
    OpenMP settings come with the environment the parent gave (:func:`child_env`)."""
    import torch

    from dnnlab.config import load_config, replace
    from dnnlab.data import load_from_config
    from dnnlab.train import fit, threads
    from dnnlab.train.callbacks import Callback

    marks, chosen = [time.process_time()], []

    class Clock(Callback):                      # per-epoch CPU time and the thread count in use
        def on_epoch_end(self, run, epoch, logs):
            marks.append(time.process_time())
            chosen.append(torch.get_num_threads())

    name = args.worker.split("/")[1]
    cfg = replace(load_config(WORKLOADS[name]), **{
        "data.limit": args.n_train, "data.valid_size": args.n_valid,
        "train.epochs": args.warmup + args.epochs, "train.patience": None,
        "train.progress": False, "train.checkpoint_every": 0, "train.device": args.device})
    data = load_from_config(cfg.data, download=False, progress=False)
    with threads.fixed(args.threads or None):
        result = fit(cfg, data, run_dir=None, callbacks=[Clock()])
    common.write_result(args.result, {
        "seconds": list(result.history["seconds"]),
        "cpu_seconds": [b - a for a, b in zip(marks, marks[1:])], "threads_used": chosen})


def child_env(spin: bool) -> dict[str, str]:
    """The workers' environment: no fixed thread count (the policy would take it as the user's
    choice), and the OpenMP settings of the ``dnnlab`` command unless ``spin``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *dnnlab_launch.OPENMP_ENV)}
    env.update({} if spin else dnnlab_launch.OPENMP_ENV, PYTHONUNBUFFERED="1")
    return env


def contenders(cores: int) -> list[int]:
    """0 (the policy), then every fixed count 1 .. ``cores``."""
    return [0, *range(1, cores + 1)]


def label(threads: int) -> str:
    return "policy" if threads == 0 else f"fixed {threads}"


def measure_one(name: str, args, env: dict) -> dict:
    """``name`` = condition/workload/threads, measured in a fresh worker (beside a spinning
    process when the condition is busy: started just before, ended right after)."""
    condition, _workload, threads = name.split("/")
    wargs = copy.copy(args)
    wargs.threads = int(threads)
    spinner = (subprocess.Popen([sys.executable, "-c", SPINNER]) if condition == "busy" else None)
    try:
        r = common.measure(Path(__file__), name, wargs, env)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if "threads_used" in r:
        print(f"  threads used per epoch: {r['threads_used']}")
    return r


def median_of_rounds(r: dict) -> float | None:
    """The median over rounds of each round's median s/epoch (None: no round finished)."""
    rounds = r.get("rounds") or ([r] if "median" in r else [])
    return statistics.median(x["median"] for x in rounds) if rounds else None


def main(argv: list[str] | None = None) -> int:
    def own(p):
        p.add_argument("--workloads", default=",".join(WORKLOADS),
                       help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
        p.add_argument("--timeout", type=float, default=240.0,
                       help="seconds a measurement may take before it is stopped and reported "
                            "as slower than that (default 240)")
        p.add_argument("--spin", action="store_true",
                       help="leave libgomp's default spin-waiting (do not set GOMP_SPINCOUNT), to "
                            "compare with the dnnlab command's setting")
    p = common.parser(__doc__, "busy_machine", own)
    p.set_defaults(n_train=6_400, n_valid=1_000, epochs=2)
    args = common.parse(p, argv, worker)
    if args is None:                                # this process was a worker
        return 0
    workloads = common.choose(p, args.workloads, WORKLOADS, "workload")
    import torch  # the parent only reads the versions

    from dnnlab.train import threads as policy
    cores = policy.usable_cores()
    info = common.machine(args.device, 0)
    info.update(usable_cores=cores, openmp=("spinning (libgomp default)" if args.spin else
                                            ", ".join(f"{k}={v}" for k, v in
                                                      dnnlab_launch.OPENMP_ENV.items())))
    print(f"machine: {info['cpu']} ({cores} usable cores), torch {torch.__version__}, OpenMP "
          f"{info['openmp']}")
    print(f"workloads: {', '.join(workloads)}, {args.n_train} training images, {args.warmup} "
          f"warm-up + {args.epochs} measured epochs, {args.rounds} round(s), timeout "
          f"{args.timeout:.0f} s\n")

    env = child_env(args.spin)
    names = [f"{c}/{w}/{t}" for c in CONDITIONS for w in workloads for t in contenders(cores)]
    best = common.in_rounds(names, args.rounds, lambda n: measure_one(n, args, env),
                            lambda n: n.replace("/0", "/policy"))

    rows, verdicts, results = [], [], []
    for c in CONDITIONS:
        for w in workloads:
            figures = {t: median_of_rounds(best[f"{c}/{w}/{t}"]) for t in contenders(cores)}
            shown = {t: (f"{s:.2f}" if s is not None else f">{args.timeout:.0f} (timed out)")
                     for t, s in figures.items()}
            fixed = {t: s for t, s in figures.items() if t and s is not None}
            pol = figures[0]
            ratio = pol / min(fixed.values()) if pol is not None and fixed else None
            best_t = min(fixed, key=fixed.get) if fixed else None
            rows.append([f"{w}, {c}", *shown.values(), label(best_t) if best_t else "-",
                         f"{ratio:.2f}" if ratio is not None else "-"])
            verdicts.append(ratio is not None and ratio <= TARGET)
            results.append({"condition": c, "workload": w, "ratio": ratio,
                            "seconds_per_epoch": {label(t): s for t, s in figures.items()},
                            "runs": {label(t): best[f"{c}/{w}/{t}"] for t in contenders(cores)}})
    print()
    print(common.table(rows, ["workload, condition", *map(label, contenders(cores)),
                              "best fixed", "policy / best"]))
    ok = all(verdicts)
    print(f"\n(s/epoch, median of rounds) target: policy within {TARGET}x of the best fixed count "
          f"in every row: {'met' if ok else 'NOT met'}")
    common.save_results(args, "busy_machine", info, target=TARGET, met=ok,
                        workload={"n_train": args.n_train, "n_valid": args.n_valid,
                                  "warmup": args.warmup, "epochs": args.epochs,
                                  "rounds": args.rounds, "timeout": args.timeout},
                        results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model-epochs per second of the K-model engine, against training the K models one after another.

    python benchmarks/sweep_speed.py                 # K = 1, 8, 32, 64, 128 at full size
    python benchmarks/sweep_speed.py --quick         # 4,500 training images

A learning-rate search or a set of seeds trains K models of one shape. ``dnnlab.train.train_many``
trains them at once (stacked weights, batched matrix products); the alternative is K calls to
``dnnlab.train.fit``. The workload is the exercise's MLP (20x100 ELU, He normal, Nadam, batch 32)
on random data of CIFAR-10's shape; the K variants differ in seed and learning rate (spread
log-uniformly over [1e-4, 1e-3], a range where none diverges, so all K train every epoch).

The sequential figure is measured once, for one ``fit`` (K=1), and extrapolated: K sequential
fits take K times as long, so their throughput is 1 / (seconds per epoch of one fit) whatever K is.
Each measurement runs in a fresh subprocess with the same thread count; ``--warmup`` epochs are
dropped and the median of the rest is used. With ``--rounds R`` the fit and each K run R times,
interleaved, and each keeps its fastest round (the machine's speed drifts over minutes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from dnnlab.train.callbacks import Callback  # noqa: E402

BASE = {"model.depth": 20, "model.width": 100, "model.activation": "elu",
        "model.init": "he_normal", "optim.name": "nadam", "optim.lr": 1e-3,
        "train.batch_size": 32, "train.patience": None, "train.progress": False,
        "train.checkpoint_every": 0}


def _config(epochs: int, device: str):
    from dnnlab.config import RunConfig, replace
    return replace(RunConfig(), **BASE, **{"train.epochs": epochs, "train.device": device})


class CpuMarks(Callback):
    """Process CPU time at the start and at each epoch's end (a callback of fit and train_many)."""

    def __init__(self):
        self.marks = [time.process_time()]

    def on_epoch_end(self, run, epoch, logs):
        self.marks.append(time.process_time())

    def per_epoch(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def fit_epochs(data, epochs: int, device: str) -> dict:
    """One model trained by the single-model trainer."""
    from dnnlab.train import fit
    cpu = CpuMarks()
    result = fit(_config(epochs, device), data, run_dir=None, callbacks=[cpu])
    return {"seconds": list(result.history["seconds"]), "cpu_seconds": cpu.per_epoch(),
            "epochs_run": [result.epochs_run]}


def engine_epochs(data, k: int, epochs: int, device: str) -> dict:
    """K models trained at once by the engine; every model's history holds the shared epoch time."""
    from dnnlab.train import Variant, train_many
    lrs = [1e-4 * 10 ** (i / max(k - 1, 1)) for i in range(k)]
    variants = [Variant(seed=i, overrides={"optim.lr": lr}) for i, lr in enumerate(lrs)]
    cpu = CpuMarks()
    results = train_many(_config(epochs, device), data, variants, device=device, progress=False,
                         callbacks=[cpu])
    longest = max(results, key=lambda r: len(r.history["seconds"]))
    return {"seconds": list(longest.history["seconds"]), "cpu_seconds": cpu.per_epoch(),
            "epochs_run": [r.epochs_run for r in results]}


def worker(args) -> None:
    common.set_threads(args.threads)
    import peers
    from dnnlab.data import from_arrays
    data = from_arrays(*peers.make_data(args.n_train, args.n_valid))
    total = args.warmup + args.epochs
    if args.worker == "fit":
        out = fit_epochs(data, total, args.device)
    else:
        out = engine_epochs(data, int(args.worker.split(":")[1]), total, args.device)
    common.write_result(args.result, out)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, "sweep_speed", lambda p: p.add_argument(
        "--ks", default="1,8,32,64,128", help="numbers of models trained at once"))
    args = common.parse(p, argv, worker)
    if args is None:                                # this process was a worker
        return 0
    try:
        ks = [int(k) for k in args.ks.split(",")]
    except ValueError:
        p.error(f"--ks {args.ks!r}: expected integers separated by commas, e.g. 1,8,32")
    if any(k < 1 for k in ks):
        p.error("--ks: every K must be at least 1")
    info = common.machine(args.device, args.threads)
    print(f"machine: {info['cpu']} ({info['cpu_count']} CPUs), {args.threads} threads, "
          f"torch {info['torch']}" + (f", GPU {info['gpu']}" if "gpu" in info else ""))
    print(f"workload: 20x100 ELU MLP, Nadam, batch 32, {args.n_train} train + {args.n_valid} "
          f"valid images x 3072; {args.warmup} warm-up + {args.epochs} measured epochs, "
          f"device {args.device}\n")

    env = common.child_env(args.device, args.threads)

    def measure(name: str) -> dict:
        r = common.measure(Path(__file__), name, args, env)
        short = [n for n in r.get("epochs_run", []) if n < args.warmup + args.epochs]
        if short:
            print(f"  note: {len(short)} model(s) stopped before the last epoch; the stack shrank")
        return r

    runs = common.in_rounds(["fit", *(f"engine:{k}" for k in ks)], args.rounds, measure)

    single = runs["fit"].get("median")
    rows = []
    for k in ks:
        r = runs[f"engine:{k}"]
        if "median" not in r:
            rows.append([str(k), "-", "-", "-", "-"])
            continue
        r["k"] = k
        r["model_epochs_per_s"] = k / r["median"]
        seq_time = k * single if single else None
        r["sequential_seconds_extrapolated"] = seq_time
        r["speedup"] = seq_time / r["median"] if seq_time else None
        rows.append([str(k), f"{r['median']:.2f}", f"{r['model_epochs_per_s']:.3f}",
                     f"{seq_time:.1f}" if seq_time else "-",
                     f"{r['speedup']:.2f}x" if r["speedup"] else "-"])
    print()
    if single:
        print(f"one model with dnnlab.train.fit: {single:.2f} s/epoch = {1 / single:.3f} "
              "model-epochs/s (K sequential fits: K times this, extrapolated, not run)")
    print(common.table(rows, ["K", "engine s/epoch", "model-epochs/s",
                              "K fits s/epoch (extrap.)", "engine speed-up"]))

    common.save_results(
        args, "sweep_speed", info,
        workload={"model": "MLP 20x100 ELU, he_normal, softmax 10", "optimizer": "nadam",
                  "lr": "K values log-spaced in [1e-4, 1e-3]", "batch_size": 32,
                  "n_train": args.n_train, "n_valid": args.n_valid, "features": 3072,
                  "warmup": args.warmup, "epochs": args.epochs, "rounds": args.rounds},
        sequential="extrapolated: K x the measured seconds per epoch of one fit",
        single_fit=runs["fit"], engine=[runs[f"engine:{k}"] for k in ks])
    return 0


if __name__ == "__main__":
    sys.exit(main())

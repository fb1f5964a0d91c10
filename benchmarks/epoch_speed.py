"""Seconds per epoch of dnnlab and its peers on the chapter's CIFAR-10 exercise.

    python benchmarks/epoch_speed.py                 # full size, auto device
    python benchmarks/epoch_speed.py --quick         # 4,500 training images, for a smoke test
    KERAS_BACKEND=jax python benchmarks/epoch_speed.py --peers keras

The model is the exercise's MLP (20 hidden layers x 100 ELU units, He normal init, Nadam, 10-way
softmax, batch 32); one epoch is a training pass over 45,000 images of 3,072 float32 features
plus a validation pass over 5,000 (random data of CIFAR-10's shape: speed does not depend on
the pixel values). Each contender runs in its own fresh subprocess with the same thread count;
``--warmup`` epochs are dropped (graph tracing, allocator warm-up), then the median and the
minimum of ``--epochs`` epochs are reported, with how many times faster dnnlab is. With
``--rounds R`` the contenders run R times, interleaved, and each keeps its fastest round; the
share of CPU that other processes took during each run is reported beside it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CONTENDERS = ("dnnlab", "torch-dataloader", "torch-on-device", "lightning", "keras")


def dnnlab_epochs(x_tr, y_tr, x_va, y_va, epochs: int, device: str):
    """dnnlab's single-model trainer with the exercise's config. Wall time is its own per-epoch
    clock (training pass + validation pass); CPU time is read at each epoch's end by a callback."""
    import peers
    from dnnlab.config import RunConfig, replace
    from dnnlab.data import from_arrays
    from dnnlab.train import Callback, fit

    class CpuAtEpochEnd(Callback):
        def __init__(self):
            self.marks = [time.process_time()]

        def on_epoch_end(self, run, epoch, logs):
            self.marks.append(time.process_time())

    cfg = replace(RunConfig(), **{
        "model.depth": 20, "model.width": 100, "model.activation": "elu",
        "model.init": "he_normal", "optim.name": "nadam", "optim.lr": 1e-3,
        "train.batch_size": 32, "train.epochs": epochs, "train.patience": None,
        "train.progress": False, "train.checkpoint_every": 0, "train.device": device})
    data = from_arrays(x_tr, y_tr, x_va, y_va)
    cpu = CpuAtEpochEnd()
    result = fit(cfg, data, run_dir=None, callbacks=[cpu])
    clock = peers.EpochClock()
    clock.seconds = list(result.history["seconds"])
    clock.cpu_seconds = [b - a for a, b in zip(cpu.marks, cpu.marks[1:])]
    return clock


def versions(name: str) -> dict:
    import importlib.metadata as md
    out = {}
    wanted = ["torch"] + {"dnnlab": ["dnnlab-ch11"], "lightning": ["lightning"],
              "keras": ["keras", "tensorflow", "jax", "jaxlib"]}.get(name, [])
    for pkg in wanted:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def worker(args) -> None:
    """One contender in this process: generate the data, train, write the epoch times."""
    name = args.worker
    backend = common.backend_of_env() if name == "keras" else "torch"
    if backend == "tensorflow":
        import tensorflow as tf  # first, so its pools are sized before any op runs
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if backend == "torch":        # Keras on TensorFlow or JAX never imports torch here
        common.set_threads(args.threads)
    import peers
    data = peers.make_data(args.n_train, args.n_valid)
    fn = dnnlab_epochs if name == "dnnlab" else peers.PEERS[name]
    out = {"name": name, "versions": versions(name)}
    try:
        out.update(fn(*data, epochs=args.warmup + args.epochs, device=args.device).as_dict())
    except peers.PeerUnavailable as e:
        out = {"name": name, "skipped": str(e)}
    common.write_result(args.result, out)


def measure(name: str, args, env: dict) -> dict:
    """One fresh worker process for ``name``; its measured epochs, warm-up dropped."""
    r = common.measure(Path(__file__), name, args, env)
    r["name"], r["label"] = name, label(name)
    return r


def _faster(ratio: float) -> str:
    """How dnnlab compares, given peer time / dnnlab time."""
    return f"dnnlab is {ratio:.2f}x faster" if ratio >= 1 else f"dnnlab is {1 / ratio:.2f}x slower"


def label(name: str) -> str:
    return f"keras ({common.backend_of_env()})" if name == "keras" else name


def main(argv: list[str] | None = None) -> int:
    def own(p):
        p.add_argument("--peers", default=",".join(CONTENDERS),
                       help=f"comma-separated subset of: {', '.join(CONTENDERS)}")
    p = common.parser(__doc__, "epoch_speed", own)
    args = common.parse(p, argv, worker)
    if args is None:                                # this process was a worker
        return 0
    names = common.choose(p, args.peers, CONTENDERS, "peer")
    info = common.machine(args.device, args.threads)
    print(f"machine: {info['cpu']} ({info['cpu_count']} CPUs), {args.threads} threads, "
          f"torch {info['torch']}" + (f", GPU {info['gpu']}" if "gpu" in info else ""))
    print(f"workload: 20x100 ELU MLP, Nadam, batch 32, {args.n_train} train + {args.n_valid} "
          f"valid images x 3072; {args.warmup} warm-up + {args.epochs} measured epochs, "
          f"device {args.device}\n")
    if (info["load_average_at_start"] or 0) > 0.5 * (info["cpu_count"] or 1):
        print(f"note: the load average is {info['load_average_at_start']:.1f}; other work on this "
              "machine will slow every contender and blur the comparison\n")

    env = common.child_env(args.device, args.threads)
    best = common.in_rounds(names, args.rounds, lambda name: measure(name, args, env), label)
    runs = [best[name] for name in names]

    dn = next((r for r in runs if r["name"] == "dnnlab" and "median" in r), None)
    rows = []
    for r in runs:
        if "median" not in r:
            rows.append([r["label"], "-", "-", r.get("skipped", r.get("error", "")), "-", "-", ""])
            continue
        vs, cpu_vs = "n/a (dnnlab not run)", "-"
        if dn is r:
            vs = cpu_vs = "1.00x"
        elif dn is not None:
            r["dnnlab_speedup"] = r["median"] / dn["median"]
            r["dnnlab_cpu_speedup"] = r["cpu_median"] / dn["cpu_median"]
            vs, cpu_vs = _faster(r["dnnlab_speedup"]), _faster(r["dnnlab_cpu_speedup"])
        rows.append([r["label"], f"{r['median']:.2f}", f"{r['min']:.2f}", vs,
                     f"{r['cpu_median']:.2f}", cpu_vs, common.pct(r["others_cpu_share"])])
    print()
    print(common.table(rows, ["peer", "median s/epoch", "min s/epoch", "vs dnnlab (wall)",
                              "CPU s/epoch", "vs dnnlab (CPU)", "others' CPU"]))

    common.save_results(
        args, "epoch_speed", info,
        workload={"model": "MLP 20x100 ELU, he_normal, softmax 10", "optimizer": "nadam",
                  "lr": 1e-3, "batch_size": 32, "n_train": args.n_train,
                  "n_valid": args.n_valid, "features": 3072, "warmup": args.warmup,
                  "epochs": args.epochs, "rounds": args.rounds},
        results=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

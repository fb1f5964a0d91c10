"""What the two benchmark scripts share: the machine description, thread settings, the table.

Each contender runs in a fresh Python subprocess (``python -m`` style re-entry of the calling
script with ``--worker``), so TensorFlow, JAX and torch never share a process or fight over thread
pools, and each starts from the same cold state. Every child gets the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str, threads: int) -> dict:
    """CPU model, threads, torch version and (on CUDA) the GPU: printed and stored with results."""
    import torch
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": device,
            "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible; use --device cpu")
    return name


def child_env(device: str, threads: int, extra: dict | None = None) -> dict:
    """The environment of every worker: the same thread count for every library, the same
    visible devices, quiet TensorFlow."""
    env = dict(os.environ)
    n = str(threads)
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, TF_NUM_INTRAOP_THREADS=n,
               TF_NUM_INTEROP_THREADS=n,
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if device == "cpu":           # no peer may quietly use a GPU in a CPU comparison
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    env.update(extra or {})
    return env


def backend_of_env() -> str:
    """The backend Keras will load: $KERAS_BACKEND, else Keras 3's default, TensorFlow."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def set_threads(threads: int) -> None:
    """In a worker: size torch's intra-op and inter-op pools to ``threads``, as TensorFlow's
    are (by :func:`child_env` and the worker), so no library gets more cores than another."""
    import torch
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)


def _cpu_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have been busy (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def others_share(busy0: float | None, child0: float, wall: float) -> float | None:
    """The share of the machine's CPU time that processes other than the worker used while it
    ran: 0 on a quiet machine. Benchmarks on a shared box are only as good as this number."""
    busy1 = _cpu_busy_seconds()
    if busy0 is None or busy1 is None or wall <= 0:
        return None
    others = (busy1 - busy0) - (_children_cpu_seconds() - child0)
    return round(max(0.0, others) / (wall * (os.cpu_count() or 1)), 3)


def run_worker(script: Path, args: list[str], env: dict, verbose: bool = False,
               timeout: float | None = None) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter and return the JSON it wrote (an
    ``error`` instead when it fails or runs past ``timeout`` seconds, then killed)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), *args, "--result", str(result)]
        busy0, child0 = _cpu_busy_seconds(), _children_cpu_seconds()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, text=True, timeout=timeout,
                                  stdout=None if verbose else subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        except subprocess.TimeoutExpired as e:
            wall = time.perf_counter() - t0
            return {"error": f"timed out after {timeout:.0f} s", "timed_out": True,
                    "log_tail": "\n".join(str(e.stdout or "").splitlines()[-15:]),
                    "wall_seconds": wall, "others_cpu_share": others_share(busy0, child0, wall)}
        wall = time.perf_counter() - t0
        others = others_share(busy0, child0, wall)
        if proc.returncode != 0 or not result.exists():
            tail = "\n".join((proc.stdout or "").splitlines()[-15:])
            return {"error": f"worker exited with code {proc.returncode}", "log_tail": tail,
                    "wall_seconds": wall, "others_cpu_share": others}
        out = json.loads(result.read_text())
        out["wall_seconds"], out["others_cpu_share"] = wall, others
        return out


def write_result(path: str | Path, obj: dict) -> None:
    """A worker's answer to its parent, in the parent's temporary directory (deleted after).
    Plain json, not dnnlab.io, so that a peer's process imports nothing of dnnlab; the results
    the user keeps are written by :func:`save`, atomically."""
    Path(path).write_text(json.dumps(obj))


def summarize(seconds: list[float]) -> dict:
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds)}


def pct(share: float | None) -> str:
    """A share of the CPU as a percentage ("?" when it could not be read)."""
    return "?" if share is None else f"{100 * share:.0f}%"


def measure(script: Path, name: str, args, env: dict) -> dict:
    """One fresh worker process of ``script`` for ``name`` (the options both benchmarks share
    passed on); its measured epochs with the warm-up dropped, summarized and printed."""
    wargs = ["--worker", name, "--device", args.device, "--threads", str(args.threads),
             "--epochs", str(args.epochs), "--warmup", str(args.warmup),
             "--n-train", str(args.n_train), "--n-valid", str(args.n_valid)]
    r = run_worker(script, wargs, env, args.verbose, getattr(args, "timeout", None))
    if "seconds" in r:
        r["warmup_seconds"] = r["seconds"][:args.warmup]
        r["seconds"] = r["seconds"][args.warmup:]
        r["cpu_seconds"] = r["cpu_seconds"][args.warmup:]
        r.update(summarize(r["seconds"]))
        r["cpu_median"] = statistics.median(r["cpu_seconds"])
        print(f"  {r['median']:.2f} s/epoch (median of {len(r['seconds'])}), CPU "
              f"{r['cpu_median']:.2f} s/epoch, warm-up "
              f"{', '.join(f'{s:.2f}' for s in r['warmup_seconds'])} s, other processes used "
              f"{pct(r.get('others_cpu_share'))} of the CPU")
    elif "skipped" in r:
        print(f"  skipped: {r['skipped']}")
    else:
        print(f"  failed: {r['error']}\n{r['log_tail']}")
    return r


def best_round(tries: list[dict]) -> dict:
    """The round with the lowest median: interference from other work only ever adds time, so
    on a shared machine the fastest round is the closest to the contender's own speed."""
    timed = [r for r in tries if "median" in r]
    if not timed:
        return tries[-1]
    best = dict(min(timed, key=lambda r: r["median"]))
    best["rounds"] = [{k: r[k] for k in ("seconds", "cpu_seconds", "warmup_seconds", "median",
                                         "cpu_median", "others_cpu_share")}
                      for r in timed]
    return best


def in_rounds(names: list[str], rounds: int, measure, label=str) -> dict[str, dict]:
    """``measure(name)`` for every name, ``rounds`` times interleaved (a contender that was
    skipped or failed is not run again); each name's fastest round (:func:`best_round`)."""
    tries: dict[str, list[dict]] = {n: [] for n in names}
    for rnd in range(1, rounds + 1):
        for name in names:
            if tries[name] and "seconds" not in tries[name][-1]:
                continue
            print(f"running {label(name)}" + (f" (round {rnd}/{rounds})" if rounds > 1 else "")
                  + " ...", flush=True)
            tries[name].append(measure(name))
    return {n: best_round(tries[n]) for n in names}


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    line = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([fmt(header), line, *map(fmt, rows)])


def save(path: str | Path, obj: dict) -> Path:
    from dnnlab.io import write_json
    return write_json(path, obj)


def save_results(args, benchmark: str, info: dict, **fields) -> Path:
    """Write a benchmark's results to ``--out`` (default results/BENCHMARK_DEVICE.json), headed by
    the benchmark's name, the date and the machine (:func:`machine`), and say where."""
    out = Path(args.out) if args.out else RESULTS / f"{benchmark}_{args.device}.json"
    save(out, {"benchmark": benchmark, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
               "machine": info, **fields})
    print(f"\nresults written to {out}")
    return out


def choose(p: argparse.ArgumentParser, text: str, allowed, what: str) -> list[str]:
    """The comma-separated names in ``text``, each one of ``allowed`` (else a usage error)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        p.error(f"unknown {what} {unknown[0]!r}; choose from {', '.join(allowed)}")
    return names


def parser(doc: str, script: str, extra) -> argparse.ArgumentParser:
    """The options both benchmarks share, with ``extra(p)`` adding the script's own after
    ``--device``; ``parse`` then applies ``--quick``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    extra(p)
    p.add_argument("--rounds", type=int, default=1,
                   help="run every contender this many times, interleaved, and keep each one's "
                        "fastest round (use 2-3 on a machine shared with other work)")
    p.add_argument("--epochs", type=int, default=3, help="measured epochs (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="epochs run first and dropped (default 1)")
    p.add_argument("--n-train", type=int, default=45_000)
    p.add_argument("--n-valid", type=int, default=5_000)
    p.add_argument("--quick", action="store_true", help="4,500 training and 500 validation images")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for every process (default: torch's default here)")
    p.add_argument("--out", default=None,
                   help=f"JSON results (default results/{script}_<device>.json)")
    p.add_argument("--verbose", action="store_true", help="show the workers' own output")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None, worker) -> argparse.Namespace | None:
    """The parsed options with ``--quick`` applied and the device and threads resolved; in a
    worker process (``--worker``), runs ``worker(args)`` instead and returns None."""
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_valid = 4_500, 500
    if args.worker:
        worker(args)
        return None
    import torch
    args.device = resolve_device(args.device)
    args.threads = args.threads or torch.get_num_threads()
    return args

"""The chapter's CIFAR-10 exercise (8 a-e, plus 1cycle) end to end, answered with numbers.

>>> from dnnlab.studies.cifar10 import run
>>> results = run(Path("runs/cifar10"), data_dir="/data", quick=True)     # doctest: +SKIP
>>> results["batchnorm"]["val_accuracy_mean"], results["answers"]["batchnorm"]["text"]

For each variant of :mod:`~dnnlab.studies.cifar10_plan` (baseline, BN, SELU, alpha dropout,
1cycle) the study runs the LR finder, searches the learning rate (every candidate trained at once
with the K-model engine, best by validation loss), then trains ``seeds`` models at once with the
chosen rate under the book's protocol. It then evaluates MC Dropout on the alpha-dropout models,
measures the SELU net's layer statistics, answers the exercise's questions from the runs
(:mod:`~dnnlab.studies.cifar10_answers`) and writes ``results.json`` and ``report.html`` into
``out`` (:mod:`~dnnlab.studies.cifar10_report`). Trained models are kept in ``out/models``.

Each finished stage is saved in ``out/stages/<stage>.json``; ``resume=True`` reuses the stages a
killed run had finished (with the same protocol and seeds) and recomputes the rest. On the CPU the
stages run in worker processes with one torch thread each while they outnumber the cores, and take
the idle cores as threads when fewer are left (a :class:`~dnnlab.train.threads.Group`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from dnnlab import io
from dnnlab.data import Split, load_dataset, standardized
from dnnlab.errors import DnnlabError
from dnnlab.studies import common
from dnnlab.studies.cifar10_answers import batchnorm_answer, mc_dropout_answer, selu_answer
from dnnlab.studies.cifar10_plan import (BOOK, STAGE_VERSIONS, TRAINED, VARIANTS, Protocol,
                                         protocol, stage_fingerprint, variant_config)
from dnnlab.studies.cifar10_report import build_results, write_report
from dnnlab.studies.cifar10_stages import (load_models, lr_finder, mc_dropout, onecycle_candidates,
                                           search, selu_statistics, time_epochs, train_seeds)
from dnnlab.train import resolve_device
from dnnlab.train import threads as thread_policy

HELP = "the CIFAR-10 exercise (a-e + 1cycle): searches, seeds, answers, report"
DEFAULT_OUT = Path("runs/cifar10")
STANDARDIZED = ("selu", "alpha_dropout", "one_cycle")


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"[cifar10] {text}", file=sys.stderr, flush=True)


def _trim(ds, n: int | None):
    """``ds`` with its validation and test splits cut to their first ``n`` images (quick runs)."""
    if n is None:
        return ds
    cut = {k: Split(getattr(ds, k).x[:n], getattr(ds, k).y[:n]) for k in ("valid", "test")}
    return dataclasses.replace(ds, **cut)


def load_data(data_dir: str | Path | None, proto: Protocol, progress: bool):
    """CIFAR-10 twice: pixels / 255 (a-c) and standardized with training-split statistics (d-e)."""
    raw = load_dataset("cifar10", data_dir=data_dir, limit=proto.train_limit, progress=progress)
    raw = _trim(raw, proto.eval_limit)
    return raw, standardized(raw)


class _Stages:
    """Stage records in ``out/stages``, reused on resume when what the stage depends on matches:
    the seeds, the training images and the protocol fields it reads (``stage_fingerprint``)."""

    def __init__(self, out: Path, proto: Protocol, extra: dict[str, Any], resume: bool,
                 progress: bool):
        self.dir, self.proto, self.extra = out / "stages", proto, extra
        self.resume, self.progress = resume, progress
        self.reused: list[str] = []

    def fingerprint(self, name: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        fp = {"protocol": stage_fingerprint(self.proto, name), **self.extra}
        if name in STAGE_VERSIONS:
            fp["version"] = STAGE_VERSIONS[name]  # bumped when the stage's method changed
        if inputs:
            fp["inputs"] = inputs                # what the stage took from earlier stages
        return json.loads(json.dumps(fp))        # as it reads back from JSON (lists, not tuples)

    def lookup(self, name: str, inputs: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The saved record of stage ``name`` when resuming and it was made from the same
        protocol, seeds and inputs; else None (the stage must run)."""
        path = self.dir / f"{name}.json"
        if not (self.resume and path.is_file()):
            return None
        saved = io.read_json(path)
        if saved.get("fingerprint") != self.fingerprint(name, inputs):
            return None
        _say(self.progress, f"{name}: reusing the finished stage in {path}")
        self.reused.append(name)
        return saved["record"]

    def save(self, name: str, record: dict[str, Any], inputs: dict[str, Any] | None) -> None:
        io.write_json(self.dir / f"{name}.json",
                      {"fingerprint": self.fingerprint(name, inputs), "record": record})
        _say(self.progress, f"{name}: done in {record['stage_seconds']:.0f} s")


def _train_variant(name: str, data, proto: Protocol, seeds: int, *, device: str,
                   progress: bool, models_dir: Path, selu_lr: float | None = None,
                   dropout: float = 0.1, say: bool | None = None) -> dict[str, Any]:
    """Search (dropout rate, then) the learning rate of one variant, then train its seeds.

    ``progress`` shows the training bars, ``say`` (default: ``progress``) the stage's lines."""
    rec: dict[str, Any] = {"variant": name}
    kw = dict(device=device, progress=progress)
    progress = progress if say is None else say
    if name == "alpha_dropout":
        _say(progress, f"{name}: dropout-rate search, {len(proto.dropout_rates)} rates x "
                       f"{proto.search_epochs} epoch(s) at lr {selu_lr:.3g}")
        rec["rate_search"] = search(variant_config(name, proto, lr=selu_lr, device=device), data,
                                    "model.dropout", proto.dropout_rates, proto.search_epochs, **kw)
        dropout = rec["rate_search"]["best"]
    rec["dropout"] = dropout
    base = variant_config(name, proto, dropout=dropout, device=device)
    _say(progress, f"{name}: LR finder, {proto.finder_steps} steps")
    rec["finder"] = lr_finder(base, data, proto.finder_steps, device=device)
    if name == "one_cycle":
        peaks = onecycle_candidates(rec["finder"])
        _say(progress, f"{name}: peak-rate search around the LR finder's minimum: "
                       f"{', '.join(f'{p:.3g}' for p in peaks)}, whole {proto.onecycle_epochs}-epoch "
                       "cycles, trained at once")
        rec["search"] = search(base, data, "optim.schedule.max_lr", peaks, proto.onecycle_epochs,
                               **kw)
        lr = rec["max_lr"] = rec["search"]["best"]
    else:
        _say(progress, f"{name}: LR search, {len(proto.lr_grid)} rates x {proto.search_epochs} "
                       "epoch(s), trained at once")
        rec["search"] = search(base, data, "optim.lr", proto.lr_grid, proto.search_epochs, **kw)
        lr = rec["search"]["best"]
    rec["lr"] = lr
    cfg = variant_config(name, proto, lr=lr, dropout=dropout, max_lr=lr, device=device)
    _say(progress, f"{name}: lr {lr:.3g}; training {seeds} seeds at once for up to "
                   f"{cfg.train.epochs} epochs")
    rec["final"], _ = train_seeds(cfg, data, seeds, models_dir=models_dir, **kw)
    accs = ", ".join(f"{r['val_accuracy']:.4f}" for r in rec["final"]["runs"])
    _say(progress, f"{name}: validation accuracy per seed {accs}")
    return rec


# The stages and what each needs from earlier ones. Those without a path between them run at
# once, one per worker process: on a CPU the steps are chains of small kernels, so two threads do
# well under twice the work of one (K = 3 stacked 20x100 nets; figures: benchmarks/README.md)
# while two processes on two cores do about twice. A third process keeps both cores busy while a
# stage waits for the one it needs (alpha dropout for SELU's rate, 1cycle for alpha dropout's).
# ``timing`` needs everything else
# so that it runs alone (it measures). Ready stages start in this order, longest first (BN trains
# the longest, SELU heads the longest chain), so that the workers finish together.
NEEDS: dict[str, tuple[str, ...]] = {
    "batchnorm": (), "selu": (), "baseline": (), "alpha_dropout": ("selu",),
    "one_cycle": ("alpha_dropout",), "selu_stats": ("selu",), "mc_dropout": ("alpha_dropout",),
    "timing": ("baseline", "batchnorm", "selu", "alpha_dropout", "one_cycle", "selu_stats",
               "mc_dropout")}


def stage_inputs(name: str, done: dict[str, Any]) -> dict[str, Any] | None:
    """What stage ``name`` takes from the finished stages ``done`` (part of its fingerprint)."""
    if name == "alpha_dropout":
        return {"selu_lr": done["selu"]["lr"]}
    if name == "one_cycle":
        return {"dropout": done["alpha_dropout"]["dropout"]}
    if name == "selu_stats":
        return {"selu_lr": done["selu"]["lr"]}
    chosen = {n: {"lr": done[n]["lr"], "dropout": done[n]["dropout"]} for n in TRAINED
              if n in done}
    if name == "mc_dropout":
        return chosen["alpha_dropout"]
    if name == "timing":
        return chosen
    return None


_DATA: dict[str, tuple] = {}     # per process: the loaded datasets, reused by its next stages


_GROUP: thread_policy.Group | None = None   # per worker process: the workers sharing the cores


def _init_worker(group: thread_policy.Group) -> None:
    global _GROUP
    _GROUP = group


def _data(ctx: dict[str, Any]) -> tuple:
    """(raw, standardized) CIFAR-10 for ``ctx``, loaded once per process."""
    key = repr((ctx["data_dir"], ctx["proto"]))
    if key not in _DATA:
        _DATA[key] = load_data(ctx["data_dir"], ctx["proto"], ctx["progress"])
    return _DATA[key]


def run_stage(name: str, inputs: dict[str, Any] | None, ctx: dict[str, Any]) -> dict[str, Any]:
    """Compute stage ``name`` (in this process or a worker's): load the data once per process,
    train or measure, return the stage's JSON-able record with its ``stage_seconds``."""
    proto, seeds, dev = ctx["proto"], ctx["seeds"], ctx["device"]
    fixed = ctx["threads"] or (1 if name == "timing" else None)    # timing measures on one thread
    share = _GROUP.member() if fixed is None and _GROUP is not None else contextlib.nullcontext()
    with thread_policy.fixed(fixed), share:       # the policy: the free cores shared by running stages
        raw, std = _data(ctx)
        data_of = {n: std if n in STANDARDIZED else raw for n in TRAINED}
        kw = dict(device=dev, progress=ctx["bars"], models_dir=ctx["models_dir"],
                  say=ctx["progress"])
        inputs = inputs or {}
        started = time.time()
        t0 = time.perf_counter()
        if name in ("baseline", "batchnorm", "selu"):
            record = _train_variant(name, data_of[name], proto, seeds, **kw)
        elif name == "alpha_dropout":
            record = _train_variant(name, std, proto, seeds, selu_lr=inputs["selu_lr"], **kw)
        elif name == "one_cycle":
            record = _train_variant(name, std, proto, seeds, dropout=inputs["dropout"], **kw)
        elif name == "mc_dropout":
            _say(ctx["progress"], f"MC Dropout: {proto.mc_samples} passes per model")
            cfg = variant_config("alpha_dropout", proto, lr=inputs["lr"], dropout=inputs["dropout"],
                                 device=dev)
            record = mc_dropout(load_models(cfg, seeds, ctx["models_dir"], dev), std,
                                proto.mc_samples, device=dev)
        elif name == "selu_stats":
            _say(ctx["progress"], "SELU layer statistics: standardized/raw inputs x LeCun/He init")
            cfg = variant_config("selu", proto, lr=inputs["selu_lr"], device=dev)
            record = selu_statistics(cfg, raw, std, proto, device=dev, progress=ctx["bars"],
                                     final_model=load_models(cfg, seeds, ctx["models_dir"],
                                                             dev)[0])
        else:
            _say(ctx["progress"], f"timing: one model of each variant, {proto.timing_steps} steps "
                                  f"x {proto.timing_repeats}, in alternation")
            record = time_epochs(
                {n: variant_config(n, proto, lr=c["lr"], dropout=c["dropout"], max_lr=c["lr"],
                                   device=dev) for n, c in inputs.items()},
                data_of, proto.timing_steps, proto.timing_repeats, device=dev)
        record["stage_seconds"] = time.perf_counter() - t0
        record["stage_window"] = [started, time.time()]     # wall clock: the study's timeline
        return record


def run_stages(store: _Stages, ctx: dict[str, Any], workers: int) -> dict[str, Any]:
    """Every stage of :data:`NEEDS`, each as soon as what it needs is done, on ``workers``
    processes (in this one when 1); finished stages of a resumed run are reused."""
    done: dict[str, Any] = {}
    running: dict[Future, str] = {}
    pool = None
    if workers > 1:
        spawn = mp.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init_worker,
                                   initargs=(thread_policy.Group(workers, spawn),))
    try:
        while len(done) < len(NEEDS):
            for name in NEEDS:                          # start every stage that is ready
                if name in done or name in running.values():
                    continue
                if not all(n in done for n in NEEDS[name]):
                    continue
                inputs = stage_inputs(name, done)
                saved = store.lookup(name, inputs)
                if saved is not None:
                    done[name] = saved
                elif pool is None:
                    done[name] = run_stage(name, inputs, ctx)
                    store.save(name, done[name], inputs)
                else:
                    running[pool.submit(run_stage, name, inputs, ctx)] = name
            if running:                                 # wait for one to finish
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = running.pop(fut)
                    done[name] = fut.result()
                    store.save(name, done[name], stage_inputs(name, done))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return done


def run(out: Path = DEFAULT_OUT, *, data_dir: str | Path | None = None, quick: bool = False,
        seeds: int = 3, device: str = "auto", progress: bool = True, resume: bool = False,
        max_epochs: int | None = None, patience: int | None = None,
        search_epochs: int | None = None, threads: int | None = None,
        workers: int | None = None) -> dict[str, Any]:
    """Run the whole study; write ``out/results.json`` and ``out/report.html``; return the results.

    ``max_epochs``, ``patience`` and ``search_epochs`` change the protocol on purpose (the report
    and results.json then say the run was shortened). ``threads`` fixes torch's CPU threads per
    process (default: :mod:`dnnlab.train.threads` decides, the free cores shared out among the
    running stages); ``workers`` is how many stages train at once, in
    their own processes (default: the CPU's cores + 1, at most 4; 1 on CUDA).
    """
    out = Path(out)
    common.seed_list(seeds)
    for label, value in (("max_epochs", max_epochs), ("patience", patience),
                         ("search_epochs", search_epochs)):
        if value is not None and value < 1:
            raise DnnlabError(f"--{label.replace('_', '-')} {value}: must be at least 1")
    proto = protocol(quick, max_epochs=max_epochs, patience=patience, search_epochs=search_epochs)
    dev = resolve_device(device)
    if workers is None:   # one more than the cores: while one stage waits for another, the
        workers = min((os.cpu_count() or 1) + 1, 4) if dev.type == "cpu" else 1   # cores stay busy
    if workers < 1:
        raise DnnlabError(f"--workers {workers}: must be at least 1")
    t_start = time.perf_counter()
    ctx = {"proto": proto, "seeds": seeds, "device": str(dev), "threads": threads,
           "data_dir": data_dir, "models_dir": out / "models", "progress": progress,
           "bars": progress and workers == 1}       # bars of parallel workers would interleave
    raw, _ = _data(ctx)
    _say(progress, raw.summary())
    if workers > 1:
        each = f"{threads} torch thread(s) each" if threads else "the free cores shared out among them"
        _say(progress, f"{workers} worker processes, {each}; stages start as soon as what they "
                       "need is done")
    store = _Stages(out, proto, {"seeds": seeds, "train_images": len(raw.train)}, resume,
                    progress)
    stages = run_stages(store, ctx, workers)

    answers = {"batchnorm": batchnorm_answer(stages["baseline"]["final"], stages["batchnorm"]["final"],
                                             stages["timing"]["seconds_per_epoch"]),
               "selu": selu_answer(stages["selu_stats"]),
               "mc_dropout": mc_dropout_answer(stages["mc_dropout"])}
    wall = time.perf_counter() - t_start
    meta = {"study": "cifar10", "device": str(dev) if dev.type == "cpu" else
            f"{dev} ({_gpu_name()})", "threads": threads, "workers": workers,
            "wall_seconds": wall,
            "train_images": len(raw.train), "valid_images": len(raw.valid),
            "test_images": len(raw.test), "data_source": raw.source,
            "stage_seconds": {k: v.get("stage_seconds") for k, v in stages.items()},
            "stages_total_seconds": sum(v.get("stage_seconds") or 0.0 for v in stages.values()),
            "reused_stages": store.reused}
    results = build_results(stages, answers, proto, meta)
    common.write_results(out, results)
    report = write_report(out, results, stages, answers, proto)
    if progress:
        print(summary_text(results))
        print(f"results: {out / 'results.json'}\nreport: {report}")
    return results


def _gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "?"


def summary_text(results: dict[str, Any]) -> str:
    """The results table and the answers as printed at the end of a run."""
    lines = [f"{'variant':<14} {'lr':>9} {'val acc':>15} {'test acc':>15} {'book':>11} "
             f"{'best ep':>7} {'s/epoch':>8}"]
    for name in VARIANTS:
        r = results[name]
        lo, hi = BOOK[name]
        book = f"{100 * lo:.1f}" if lo == hi else f"{100 * lo:.1f}-{100 * hi:.1f}"
        spe = r["seconds_per_epoch"]
        lines.append(f"{name:<14} {r['lr']:>9.3g} "
                     f"{common.pm(r['val_accuracy_mean'], r['val_accuracy_std'], digits=1):>15} "
                     f"{common.pm(r['test_accuracy_mean'], r['test_accuracy_std'], digits=1):>15} "
                     f"{book:>11} {r['best_epoch_mean']:>7.1f} "
                     f"{spe if spe is not None else float('nan'):>8.2f}")
    if results["shortened"]:
        lines.append(f"(shortened run: at most {results['max_epochs']} epochs, patience "
                     f"{results['patience']}; the book's protocol is 100 and 20)")
    for key, title in (("batchnorm", "(c) BN"), ("selu", "(d) SELU"), ("mc_dropout", "(e) MC Dropout")):
        lines.append(f"{title}: {results['answers'][key]['text']}")
    line = f"wall time: {results['wall_seconds']:.0f} s on {results['device']}"
    if results.get("reused_stages"):
        line += (f" (resumed: {len(results['reused_stages'])} stages reused; all stages took "
                 f"{results['stages_total_seconds']:.0f} s when they ran)")
    lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line
# dnnlab.studies.cli adds --data-dir, --out, --quick, --seeds, --device and --threads (here: per
# worker process) to every study.
def add_arguments(sp) -> None:
    """The options of ``dnnlab study cifar10`` beyond the ones every study has."""
    sp.add_argument("--resume", action="store_true",
                    help="reuse the stages a previous run into --out finished")
    sp.add_argument("--max-epochs", type=int,
                    help="cap the final runs' epochs (default 100, the book's protocol; the report "
                         "and results.json say when it was shortened)")
    sp.add_argument("--patience", type=int, help="early-stopping patience (default 20)")
    sp.add_argument("--search-epochs", type=int,
                    help="epochs of each learning-rate / dropout-rate search (default 3)")
    sp.add_argument("--workers", type=int, help="stages trained at once, one process each "
                    "(default: the CPU's cores + 1, at most 4; 1 on CUDA)")


def main(args) -> int:
    run(Path(args.out or DEFAULT_OUT), data_dir=args.data_dir, quick=args.quick,
        seeds=args.seeds, device=args.device or "auto", resume=args.resume,
        max_epochs=args.max_epochs, patience=args.patience, search_epochs=args.search_epochs,
        threads=args.threads, workers=args.workers)
    return 0

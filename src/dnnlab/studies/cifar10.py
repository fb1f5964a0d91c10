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
study runs torch with one thread: the steps are chains of tiny kernels, and on a machine whose
cores are shared a second thread made an epoch ~30x slower when measured.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
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

    def get(self, name: str, compute: Callable[[], dict[str, Any]],
            inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        path = self.dir / f"{name}.json"
        fingerprint = self.fingerprint(name, inputs)
        if self.resume and path.is_file():
            saved = io.read_json(path)
            if saved.get("fingerprint") == fingerprint:
                _say(self.progress, f"{name}: reusing the finished stage in {path}")
                self.reused.append(name)
                return saved["record"]
        t0 = time.perf_counter()
        record = compute()
        record["stage_seconds"] = time.perf_counter() - t0
        io.write_json(path, {"fingerprint": fingerprint, "record": record})
        _say(self.progress, f"{name}: done in {record['stage_seconds']:.0f} s")
        return record


def _train_variant(name: str, data, proto: Protocol, seeds: int, *, device: str,
                   progress: bool, models_dir: Path, selu_lr: float | None = None,
                   dropout: float = 0.1) -> dict[str, Any]:
    """Search (dropout rate, then) the learning rate of one variant, then train its seeds."""
    rec: dict[str, Any] = {"variant": name}
    kw = dict(device=device, progress=progress)
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


def run(out: Path = DEFAULT_OUT, *, data_dir: str | Path | None = None, quick: bool = False,
        seeds: int = 3, device: str = "auto", progress: bool = True, resume: bool = False,
        max_epochs: int | None = None, patience: int | None = None,
        search_epochs: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run the whole study; write ``out/results.json`` and ``out/report.html``; return the results.

    ``max_epochs``, ``patience`` and ``search_epochs`` change the protocol on purpose (the report
    and results.json then say the run was shortened). ``threads`` sets torch's CPU threads
    (default: 1 on the CPU, untouched on CUDA).
    """
    out = Path(out)
    common.seed_list(seeds)
    for label, value in (("max_epochs", max_epochs), ("patience", patience),
                         ("search_epochs", search_epochs)):
        if value is not None and value < 1:
            raise DnnlabError(f"--{label.replace('_', '-')} {value}: must be at least 1")
    proto = protocol(quick, max_epochs=max_epochs, patience=patience, search_epochs=search_epochs)
    dev = resolve_device(device)
    if threads is None and dev.type == "cpu":
        threads = 1
    t_start = time.perf_counter()
    with common.torch_threads(threads):
        raw, std = load_data(data_dir, proto, progress)
        _say(progress, raw.summary())
        data_of = {name: std if name in STANDARDIZED else raw for name in TRAINED}
        store = _Stages(out, proto, {"seeds": seeds, "train_images": len(raw.train)}, resume,
                        progress)
        models_dir = out / "models"
        kw = dict(device=str(dev), progress=progress, models_dir=models_dir)
        stages: dict[str, Any] = {}
        for name in ("baseline", "batchnorm", "selu"):
            stages[name] = store.get(name, lambda n=name: _train_variant(
                n, data_of[n], proto, seeds, **kw))
        selu_lr = stages["selu"]["lr"]
        stages["alpha_dropout"] = store.get("alpha_dropout", lambda: _train_variant(
            "alpha_dropout", std, proto, seeds, selu_lr=selu_lr, **kw), {"selu_lr": selu_lr})
        dropout = stages["alpha_dropout"]["dropout"]
        stages["one_cycle"] = store.get("one_cycle", lambda: _train_variant(
            "one_cycle", std, proto, seeds, dropout=dropout, **kw), {"dropout": dropout})
        chosen = {n: {"lr": stages[n]["lr"], "dropout": stages[n]["dropout"]} for n in TRAINED}

        _say(progress, f"timing: one model of each variant, {proto.timing_steps} steps x "
                       f"{proto.timing_repeats}, in alternation")
        stages["timing"] = store.get("timing", lambda: time_epochs(
            {n: variant_config(n, proto, lr=stages[n]["lr"], dropout=stages[n]["dropout"],
                               max_lr=stages[n]["lr"], device=str(dev)) for n in TRAINED},
            data_of, proto.timing_steps, proto.timing_repeats, device=str(dev)), chosen)

        def saved(name: str) -> list:
            cfg = variant_config(name, proto, lr=stages[name]["lr"],
                                 dropout=stages[name]["dropout"], device=str(dev))
            return load_models(cfg, seeds, models_dir, str(dev))

        _say(progress, f"MC Dropout: {proto.mc_samples} passes per model")
        stages["mc_dropout"] = store.get("mc_dropout", lambda: mc_dropout(
            saved("alpha_dropout"), std, proto.mc_samples, device=str(dev)),
            chosen["alpha_dropout"])
        _say(progress, "SELU layer statistics: standardized/raw inputs x LeCun/He init")
        selu_cfg = variant_config("selu", proto, lr=stages["selu"]["lr"], device=str(dev))
        stages["selu_stats"] = store.get("selu_stats", lambda: selu_statistics(
            selu_cfg, raw, std, proto, device=str(dev), progress=progress,
            final_model=saved("selu")[0]), {"selu_lr": selu_lr})

    answers = {"batchnorm": batchnorm_answer(stages["baseline"]["final"], stages["batchnorm"]["final"],
                                             stages["timing"]["seconds_per_epoch"]),
               "selu": selu_answer(stages["selu_stats"]),
               "mc_dropout": mc_dropout_answer(stages["mc_dropout"])}
    wall = time.perf_counter() - t_start
    meta = {"study": "cifar10", "device": str(dev) if dev.type == "cpu" else
            f"{dev} ({_gpu_name()})", "threads": threads, "wall_seconds": wall,
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
# dnnlab.studies.cli adds --data-dir, --out, --quick, --seeds and --device to every study.
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
    sp.add_argument("--threads", type=int, help="torch CPU threads (default 1 on the CPU)")


def main(args) -> int:
    run(Path(args.out or DEFAULT_OUT), data_dir=args.data_dir, quick=args.quick,
        seeds=args.seeds, device=args.device or "auto", resume=args.resume,
        max_epochs=args.max_epochs, patience=args.patience, search_epochs=args.search_epochs,
        threads=args.threads)
    return 0

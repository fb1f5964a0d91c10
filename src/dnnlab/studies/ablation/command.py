"""``dnnlab study ablation CONFIG.toml``: the chapter's exercise-8 ladder on the config's network
and data, answered with numbers.

>>> from dnnlab.studies.ablation import run
>>> results = run("my.toml", out="runs/ablation", seeds=3)      # doctest: +SKIP
>>> results["batchnorm"]["val_vs_baseline"]                      # difference, Welch's t

The config is an ordinary ``dnnlab train`` config (any ``[data]``, ``name = "file"`` included)
plus any number of user variants, each a ``[[variant]]`` table with a ``name`` and dotted
overrides of the base::

    [[variant]]
    name = "wide"
    "model.width" = 300

For each variant of :mod:`~dnnlab.studies.ablation.plan` (baseline, BN, SELU, alpha dropout,
1cycle, then the user's) the study runs the LR finder, searches the learning rate (every
candidate trained at once with the K-model engine, best by validation loss), then trains
``seeds`` models at once with the chosen rate for the config's epochs and patience. It evaluates
MC Dropout on the alpha-dropout models, measures the SELU net's layer statistics, asks the
doctor about each variant's first run, times one epoch of each, answers the exercise's questions
and writes ``results.json`` and ``report.html`` into ``out``.

The stages run on :mod:`dnnlab.studies.engine`: resumable (``--resume``), in worker processes
that share the free cores, or as trials of a shared Optuna storage (``--storage URL``, any number
of workers on any number of machines; ``--out`` must then be one folder they all reach, since
the models and run records of a stage are read by the stages after it).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from dnnlab.config import VARIANT_TABLE, ConfigError, RunConfig, flatten, from_dict, read_toml, replace
from dnnlab.data.caveats import split_warnings
from dnnlab.errors import DnnlabError
from dnnlab.studies import common, engine
from dnnlab.studies.ablation import plan
from dnnlab.studies.ablation.answers import batchnorm_answer, edge_note, mc_dropout_answer, selu_answer
from dnnlab.studies.ablation.plan import LADDER, VARIANTS, Protocol
from dnnlab.studies.ablation.report import (
    Book,
    build_results,
    doctor_text,
    minimal_report,
    variant_names,
    write_report,
)
from dnnlab.studies.ablation.stages import Setup, data, data_for, stages
from dnnlab.train import resolve_device

HELP = "the exercise's ablation ladder (BN, SELU, alpha/MC dropout, 1cycle) on your config's data"
DEFAULT_OUT = Path("runs/ablation")


def user_variants(raw: list[Any], where: str) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    """The ``[[variant]]`` tables: (name, sorted dotted overrides) each, checked."""
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise ConfigError(f"{where}: 'variant' must be tables, [[variant]] with a name and "
                          "dotted overrides")
    out = []
    taken = set(VARIANTS) | {"doctor", "timing", "selu_stats"}
    for table in raw:
        name = table.get("name")
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: a [[variant]] has name = {name!r}; give each one a name "
                              "of letters, digits, - and _")
        if name in taken:
            raise ConfigError(f"{where}: [[variant]] name {name!r} is taken (by the ladder or "
                              "another variant); choose another")
        taken.add(name)
        overrides = {k: v for k, v in flatten(table).items() if k != "name"}
        if not overrides:
            raise ConfigError(f"{where}: [[variant]] {name!r} changes nothing; add dotted "
                              "overrides such as \"model.width\" = 300")
        out.append((name, tuple(sorted(overrides.items()))))
    return tuple(out)


def read_config(path: str | Path) -> tuple[RunConfig, tuple]:
    """The base config and the user variants of an ablation config (each variant's config is
    built once here, so that a bad override is one line before any training)."""
    raw = read_toml(path)
    variants = user_variants(raw.pop(VARIANT_TABLE, []), str(path))
    try:
        base = from_dict(raw)
        for name, overrides in variants:
            plan.check_variant(base, name, dict(overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return base, variants


def check_options(seeds: int, workers: int | None, **positive: int | None) -> None:
    """Every count a study takes, refused before any work when below 1."""
    common.seed_list(seeds)
    for label, value in {**positive, "workers": workers}.items():
        if value is not None and value < 1:
            raise DnnlabError(f"--{label.replace('_', '-')} {value}: must be at least 1")


def run_study(setup: Setup, *, study: str, title: str, book: Book | None = None,
              resume: bool = False, workers: int | None = None, threads: int | None = None,
              storage: str | None = None, heartbeat: int | None = None) -> dict[str, Any]:
    """Run every stage of ``setup`` (locally or through ``storage``); write results.json and
    report.html into ``setup.out``; return the results."""
    dev = resolve_device(setup.device)
    if workers is None:
        workers = engine.default_workers(dev.type)
    say = setup.say
    setup = dataclasses.replace(setup, device=str(dev),
                                bars=say.on and workers == 1 and storage is None)
    t_start = time.perf_counter()
    raw, _ = data(setup)
    say(raw.summary())
    setup = fit_batches(setup, len(raw.train))
    warnings = split_warnings(raw.train.y, raw.valid.y, raw.test.y, raw.class_names)
    for warning in warnings:                       # every variant is measured on these rows
        say(f"warning: {warning}")
    for name in (*plan.TRAINED, *(n for n, _ in setup.user)):    # before any stage trains
        cfg = setup.config(name)
        rows = len(data_for(cfg, setup).train)
        if cfg.train.batch_size > rows:
            raise ConfigError(f"variant {name!r}: train.batch_size = {cfg.train.batch_size} is "
                              f"larger than its {rows} training examples; use at most {rows} "
                              "(or more data)")
    settings = {**setup.proto.to_dict(), "seeds": setup.seeds,
                **({"first_seed": setup.first_seed} if setup.first_seed else {}),
                "train_images": len(raw.train), "base": setup.base.to_dict(),
                "user": [[n, dict(o)] for n, o in setup.user]}
    declared = stages(tuple(n for n, _ in setup.user))
    store = engine.Store(setup.out / "stages", resume, say)
    if storage is not None:
        records = engine.run_shared(declared, setup, settings=settings, url=storage,
                                    study_name=study, threads=threads, say=say,
                                    **({} if heartbeat is None else {"heartbeat": heartbeat}))
    else:
        if workers > 1:
            each = (f"{threads} torch thread(s) each" if threads else
                    "the free cores shared out among them")
            say(f"{workers} worker processes, {each}; stages start as soon as what they need is "
                "done")
        records = engine.run(declared, setup, settings=settings, store=store, workers=workers,
                             threads=threads)
    fails = engine.failures(records)
    answers = study_answers(records, fails)
    meta = {"study": study, "device": str(dev) if dev.type == "cpu" else
            f"{dev} ({torch.cuda.get_device_name(0)})", "threads": threads,
            "workers": workers if storage is None else None, "storage": storage is not None,
            "wall_seconds": time.perf_counter() - t_start, "data_summary": raw.summary(),
            "train_images": len(raw.train), "valid_images": len(raw.valid),
            "test_images": len(raw.test), "data_source": raw.source,
            "stage_seconds": {k: v.get("stage_seconds") for k, v in records.items()},
            "stages_total_seconds": sum(v.get("stage_seconds") or 0.0 for v in records.values()),
            "reused_stages": store.reused, "failed_stages": fails, "complete": not fails,
            "warnings": warnings}
    try:
        results = build_results(records, answers, setup.proto, meta, book)
        common.write_results(setup.out, results)
        report = write_report(setup.out, results, records, answers, setup.proto, title=title,
                              book=book)
    except (KeyError, TypeError) as e:
        if not fails:
            raise                               # a bug, not a failed stage: show it
        results = {**meta, "answers": answers, "protocol": setup.proto.to_dict(),
                   "report_error": f"{type(e).__name__}: {e}"}
        common.write_results(setup.out, results)
        report = minimal_report(setup.out, title, results)
    if say.on:
        if "report_error" not in results:
            print(summary_text(results, variant_names(records), book))
        for name, why in fails.items():
            print(f"FAILED stage {name}: {why}")
        if fails:
            print(f"incomplete: {len(fails)} stage(s) failed; --resume retries them")
        print(f"results: {setup.out / 'results.json'}\nreport: {report}")
    return results


def fit_batches(setup: Setup, rows: int) -> Setup:
    """The protocol's batch sizes (the book's 32, and 128 for 1cycle) cut for a small table,
    saying so: the study chose them, so a table of 114 rows must not be refused for them (a batch
    the user set is still checked, below, and refused). A batch larger than the training rows
    becomes a quarter of them: four steps an epoch, so that 1cycle's schedule has steps to run."""
    proto = setup.proto
    if max(proto.batch_size, proto.onecycle_batch) <= rows:
        return setup

    def fit(batch: int) -> int:
        return batch if batch <= rows else max(1, rows // 4)

    cut = dataclasses.replace(proto, batch_size=fit(proto.batch_size),
                              onecycle_batch=fit(proto.onecycle_batch))
    setup.say(f"note: the protocol's batch sizes ({proto.batch_size}, 1cycle {proto.onecycle_batch}) "
              f"are cut to the {rows} training rows ({cut.batch_size}, 1cycle {cut.onecycle_batch})")
    return dataclasses.replace(setup, proto=cut)


# What each answer needs: an answer whose stage failed says so instead of answering.
ANSWER_NEEDS = {"batchnorm": ("baseline", "batchnorm"), "selu": ("selu_stats",),
                "mc_dropout": ("mc_dropout",)}


def study_answers(records: dict[str, Any], fails: dict[str, str]) -> dict[str, Any]:
    """The exercise's answers from the stage records; one whose stages failed is
    ``{"text": "Not answered: ...", "failed": ...}``."""
    timing = records.get("timing", {})
    makers = {"batchnorm": lambda: batchnorm_answer(records["baseline"]["final"],
                                                    records["batchnorm"]["final"],
                                                    timing.get("seconds_per_epoch"),
                                                    timing.get("per_step")),
              "selu": lambda: selu_answer(records["selu_stats"]),
              "mc_dropout": lambda: mc_dropout_answer(records["mc_dropout"])}
    answers: dict[str, Any] = {}
    for key, make in makers.items():
        lost = [n for n in ANSWER_NEEDS[key] if n in fails]
        answers[key] = make() if not lost else {
            "failed": lost, "text": f"Not answered: {', '.join(lost)} failed "
                                    f"({'; '.join(fails[n] for n in lost)})."}
    return answers


def run(config: str | Path | RunConfig, out: str | Path = DEFAULT_OUT, *, quick: bool = False,
        seeds: int = 3, device: str = "auto", progress: bool = True, resume: bool = False,
        max_epochs: int | None = None, patience: int | None = None,
        search_epochs: int | None = None, threads: int | None = None, workers: int | None = None,
        variants: tuple = (), storage: str | None = None, heartbeat: int | None = None,
        data_dir: str | None = None, first_seed: int = 0) -> dict[str, Any]:
    """The ablation study of ``config`` (a path: its ``[[variant]]`` tables are the user variants;
    a RunConfig: ``variants`` gives them as (name, ((key, value), ...)) pairs). ``first_seed``:
    the final runs train seeds ``first_seed`` on (benchmarks/verdict_stability.py varies it)."""
    check_options(seeds, workers, max_epochs=max_epochs, patience=patience,
                  search_epochs=search_epochs)
    if isinstance(config, RunConfig):
        base, user = config, tuple(variants)
        for name, overrides in user:                    # as strict as a file's [[variant]] tables
            plan.check_variant(base, name, dict(overrides))
    else:
        base, user = read_config(config)
    if data_dir is not None:                                 # --data-dir beside the config's
        base = replace(base, **{"data.data_dir": str(data_dir)})
    proto: Protocol = plan.from_config(base, quick, max_epochs=max_epochs, patience=patience,
                                       search_epochs=search_epochs)
    setup = Setup(base=base, proto=proto, seeds=seeds, device=device, out=Path(out),
                  say=engine.Say("ablation", progress), user=user, first_seed=first_seed)
    return run_study(setup, study="ablation", title=f"Ablation: the chapter-11 ladder on "
                     f"{base.name} ({base.data.name} data)", resume=resume, workers=workers,
                     threads=threads, storage=storage, heartbeat=heartbeat)


def summary_text(results: dict[str, Any], names: list[str], book: Book | None = None) -> str:
    """The results table and the answers as printed at the end of a run."""
    lines = [f"{'variant':<14} {'lr':>9} {'val acc':>13} {'test acc':>13} {'val vs base':>24} "
             + (f"{'book':>11} " if book else "") + f"{'best ep':>7} {'s/epoch':>8}  doctor"]
    for name in names:
        r = results[name]
        spe = r["seconds_per_epoch"]
        cells = [f"{name:<14} {r['lr']:>9.3g}",
                 f"{common.pm(r['val_accuracy_mean'], r['val_accuracy_std'], digits=1):>13}",
                 f"{common.pm(r['test_accuracy_mean'], r['test_accuracy_std'], digits=1):>13}",
                 f"{comparison(r):>24}"]
        if book:
            lo, hi = book[name]
            cells.append(f"{100 * lo:>11.1f}" if lo == hi else f"{f'{100 * lo:.1f}-{100 * hi:.1f}':>11}")
        cells += [f"{r['best_epoch_mean']:>7.1f}",
                  f"{spe if spe is not None else float('nan'):>8.2f} ", doctor_text(r["doctor"])]
        lines.append(" ".join(cells))
    for name in names:
        note = edge_note(results[name].get("search_edge"))
        if note and name != "mc_dropout":            # mc_dropout reuses alpha_dropout's models
            lines.append(f"note: {name}'s rate {results[name]['lr']:.3g} is {note} (the search "
                         "stopped at its edge)")
    if results["shortened"] and book:
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


def comparison(r: dict[str, Any]) -> str:
    c = r["val_vs_baseline"]
    if c["difference"] is None:
        return "-"
    t = "" if c["t"] is None else f" t={c['t']:+.1f}"
    return f"{100 * c['difference']:+.1f}{t}" + (" *" if c["beyond_noise"] else "")


# ---------------------------------------------------------------------------- command line
# dnnlab.studies.cli adds --data-dir, --out, --quick, --seeds, --device and --threads (here: per
# worker process) to every study.
def add_common(sp) -> None:
    """The options the ablation and CIFAR-10 studies share."""
    sp.add_argument("--resume", action="store_true",
                    help="reuse the stages a previous run into --out finished")
    sp.add_argument("--max-epochs", type=int, help="cap the final runs' epochs")
    sp.add_argument("--patience", type=int, help="early-stopping patience of the final runs")
    sp.add_argument("--search-epochs", type=int,
                    help="epochs of each learning-rate / dropout-rate search (default 3)")
    sp.add_argument("--workers", type=int, help="stages trained at once, one process each "
                    "(default: the CPU's cores + 1, at most 4; 1 on CUDA)")
    sp.add_argument("--storage", help="share the stages among workers on any machines through "
                    "this Optuna storage URL (e.g. postgresql://...); --out must be one folder "
                    "all of them reach")
    sp.add_argument("--heartbeat", type=int, help="with --storage: seconds between a running "
                    "stage's heartbeats (a killed worker's stage is retried 3 heartbeats later)")


def add_arguments(sp) -> None:
    sp.add_argument("config", help="the base config (TOML), with optional [[variant]] tables")
    add_common(sp)


INCOMPLETE = 3   # the exit code of a study that finished with failed stages (bad input: 2)


def main(args) -> int:
    results = run(args.config, Path(args.out or DEFAULT_OUT), quick=args.quick, seeds=args.seeds,
        device=args.device or "auto", resume=args.resume, max_epochs=args.max_epochs,
        patience=args.patience, search_epochs=args.search_epochs, threads=args.threads,
        workers=args.workers, storage=args.storage, heartbeat=args.heartbeat)
    return 0 if results.get("complete", True) else INCOMPLETE


__all__ = ["run", "run_study", "main", "add_arguments", "LADDER"]

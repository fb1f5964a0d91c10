"""The stages of the ablation study (and so of the CIFAR-10 study): the work, then each stage
declared once for :mod:`dnnlab.studies.engine`.

Every stage returns a plain JSON-able record (so the study can save it, resume from it and build
its report from it) and trains through the K-model engine wherever several models of one shape
are wanted: the learning-rate candidates of a search, the dropout rates, the seeds of a final
variant and the inputs/initializations of the SELU check are each one ``train_many`` call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dnnlab import io
from dnnlab.analysis.mc_dropout import mc_dropout_eval, plain_eval
from dnnlab.analysis.stats import hidden_stats, layer_stats
from dnnlab.config import DataConfig, RunConfig, replace, to_toml
from dnnlab.data import Dataset, Split, load_from_config, standardized
from dnnlab.doctor.report import examine
from dnnlab.errors import DnnlabError, TrainingDiverged
from dnnlab.nn.mlp import build_mlp
from dnnlab.runs import fit, train_many
from dnnlab.studies.ablation.plan import ONECYCLE_PEAKS, TRAINED, Protocol, variant_config
from dnnlab.studies.engine import Say, Stage, cached, failed
from dnnlab.train import Variant, evaluate, resolve_device, threads
from dnnlab.train.callbacks import CsvLogger
from dnnlab.train.checkpoint import load_model, save_model
from dnnlab.train.lr_finder import find_lr

# The LR finder sweeps these rates: below 1e-6 no optimizer here learns anything in a few
# hundred steps, so starting lower only spends the sweep on a flat line.
FINDER_RANGE = (1e-6, 10.0)
# ... on one thread, always: 1cycle's peak candidates are multiples of the finder's minimum, and
# on a flat curve a thread count that changes mid-sweep (the adaptive policy) shifts the minimum
# by a fifth (measured on CIFAR-10's 1cycle net: 0.028 or 0.035 with the same seed, depending on
# whether the sweep was the first of its process). A few seconds of one thread make it rerun to
# the bit.
FINDER_THREADS = 1
TIMING_LR = 1e-3     # the rate of a timing slice at most (see time_epochs)
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def _finite(value: float) -> float | None:
    """JSON has no inf/NaN: a diverged model's loss is recorded as None."""
    return float(value) if value is not None and math.isfinite(value) else None


def _history(h: dict[str, list[float]]) -> dict[str, list]:
    return {k: [_finite(v) if k != "epoch" else int(v) for v in h.get(k, [])] for k in HISTORY_KEYS}


def _tensors(split, device: torch.device, limit: int | None = None):
    x, y = split.x, split.y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)


def _budget(cfg: RunConfig, epochs: int, progress: bool) -> RunConfig:
    """``cfg`` trained for exactly ``epochs`` epochs (no early stop inside the budget)."""
    return replace(cfg, **{"train.epochs": epochs, "train.patience": epochs,
                           "train.progress": progress})


def search(cfg: RunConfig, data: Dataset, key: str, values: tuple, epochs: int, *,
           device: str, progress: bool) -> dict[str, Any]:
    """Train one model per value of ``key`` at once for ``epochs``; the best by validation loss.

    All candidates share seed 0 (same initial weights, same batches), so the only difference
    between them is the value searched.
    """
    t0 = time.perf_counter()
    results = train_many(_budget(cfg, epochs, progress), data,
                         [Variant(seed=0, overrides={key: v}) for v in values],
                         device=device, progress=progress)
    rows = []
    for v, r in zip(values, results):
        h = r.history
        ok = r.best_epoch > 0 and math.isfinite(r.best)
        i = h["epoch"].index(r.best_epoch) if ok else None
        rows.append({"value": v, "val_loss": _finite(r.best) if ok else None,
                     "val_accuracy": _finite(h["val_accuracy"][i]) if ok else None,
                     "best_epoch": r.best_epoch, "status": r.status})
    scored = [r for r in rows if r["val_loss"] is not None]
    if not scored:
        raise TrainingDiverged(f"every candidate of the {key} search diverged within {epochs} "
                               "epochs; check the data (NaNs?) or widen the search")
    best = min(scored, key=lambda r: r["val_loss"])
    return {"key": key, "epochs": epochs, "rows": rows, "best": best["value"],
            "seconds": time.perf_counter() - t0}


def lr_finder(cfg: RunConfig, data: Dataset, steps: int, *, device: str) -> dict[str, Any]:
    """The LR range test on a fresh model of ``cfg`` (seed 0): the curve and its suggestion."""
    dev = resolve_device(device)
    model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=0).to(dev)
    x, y = _tensors(data.train, dev)
    t0 = time.perf_counter()
    torch.manual_seed(0)              # dropout masks come from the global generator: same curve
    with threads.fixed(FINDER_THREADS if dev.type == "cpu" else None):
        res = find_lr(model, x, y, cfg.optim, batch_size=cfg.train.batch_size, steps=steps,
                      seed=0, start_lr=FINDER_RANGE[0], end_lr=FINDER_RANGE[1])
    return {"lrs": res.lrs, "losses": [_finite(v) for v in res.losses],
            "suggestion": res.suggestion, "minimum": finder_minimum(res.lrs, res.losses),
            "min_lr": res.min_lr, "diverged": res.diverged,
            "optimizer": cfg.optim.name, "batch_size": cfg.train.batch_size,
            "seconds": time.perf_counter() - t0}


def finder_minimum(lrs: list[float], losses: list[float], skip: float = 0.1) -> float:
    """The rate at the lowest smoothed loss of an LR-finder sweep, looking past its first
    ``skip``: there the moving average has seen only a few batches, and with plain SGD at tiny
    rates the loss is flat, so one lucky batch at the very start would otherwise be the minimum."""
    start = min(int(len(lrs) * skip), len(lrs) - 1)
    pts = [(v, lr) for lr, v in zip(lrs[start:], losses[start:]) if v is not None and math.isfinite(v)]
    if not pts:
        pts = [(v, lr) for lr, v in zip(lrs, losses) if v is not None and math.isfinite(v)]
    return min(pts)[1]


def onecycle_candidates(finder: dict[str, Any]) -> tuple[float, ...]:
    """Peak rates worth trying for 1cycle: the finder's minimum times each of
    :data:`~.plan.ONECYCLE_PEAKS`; which is best for a whole cycle is measured, not assumed."""
    m = finder["minimum"]
    return tuple(float(f"{m * f:.3g}") for f in ONECYCLE_PEAKS)


def seconds_per_epoch(histories: list[dict[str, list]]) -> float | None:
    """Median epoch wall time while every seed was still training (one engine stack of K)."""
    common = min(len(h["seconds"]) for h in histories)
    secs = [s for s in histories[0]["seconds"][:common] if s is not None]
    return float(statistics.median(secs)) if secs else None


def train_seeds(cfg: RunConfig, data: Dataset, seeds: int, *, device: str, progress: bool,
                models_dir: Path | None = None, first_seed: int = 0) -> tuple[dict[str, Any], list]:
    """The final runs of one variant: ``seeds`` models at once (seeds ``first_seed`` on), each
    evaluated on valid and test.

    Returns the record and the trained models (best weights restored); with ``models_dir`` each
    model is also saved there as ``<name>-seed<k>.safetensors``, and records what its layers do
    while it trains (``dnnlab doctor``, TensorBoard with ``train.tensorboard``) in
    ``<models_dir>/../runs/<name>-seed<k>/``.
    """
    dev = resolve_device(device)
    t0 = time.perf_counter()
    cfg = replace(cfg, **{"train.progress": progress})
    run_dirs = None if models_dir is None else [
        models_dir.parent / "runs" / f"{cfg.name}-seed{s}"
        for s in range(first_seed, first_seed + seeds)]
    results = train_many(cfg, data, [Variant(seed=s) for s in range(first_seed, first_seed + seeds)],
                         device=device,
                         progress=progress, run_dirs=run_dirs)
    wall = time.perf_counter() - t0
    valid, test = _tensors(data.valid, dev), _tensors(data.test, dev)
    runs, models = [], []
    for r in results:
        model = r.model.to(dev)
        v, t = evaluate(model, *valid), evaluate(model, *test)
        runs.append({"seed": r.variant.seed, "status": r.status, "message": r.message,
                     "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                     "val_loss": _finite(v["loss"]), "val_accuracy": v["accuracy"],
                     "test_loss": _finite(t["loss"]), "test_accuracy": t["accuracy"],
                     "history": _history(r.history)})
        models.append(model)
        if run_dirs is not None:       # what dnnlab doctor reads beside the recorded layers
            d = run_dirs[len(models) - 1]
            io.write_text(d / "config.toml", to_toml(replace(cfg, **{"train.seed": r.variant.seed})))
            CsvLogger(d / "metrics.csv").write(r.history)
            io.write_json(d / "summary.json", {"name": cfg.name, **r.summary()})
        if models_dir is not None:
            save_model(model, models_dir / f"{cfg.name}-seed{r.variant.seed}.safetensors",
                       {"best_epoch": r.best_epoch, "status": r.status})
    record = {"config": cfg.to_dict(), "runs": runs, "wall_seconds": wall, "models": len(runs),
              "seconds_per_epoch": seconds_per_epoch([r["history"] for r in runs])}
    return record, models


def load_models(cfg: RunConfig, seeds: int, models_dir: Path, device: str,
                first_seed: int = 0) -> list:
    """The first ``seeds`` models :func:`train_seeds` saved (the later stages read them back)."""
    dev = resolve_device(device)
    return [load_model(models_dir / f"{cfg.name}-seed{s}.safetensors", dev)
            for s in range(first_seed, first_seed + seeds)]


def mc_dropout(models: list, data: Dataset, n_samples: int, *, device: str) -> dict[str, Any]:
    """Plain inference vs MC Dropout (``n_samples`` passes) for each trained alpha-dropout model.

    BatchNorm layers, if any, stay in inference mode (``enable_mc_dropout`` switches on only the
    dropout modules). Inference seconds are measured on the test set.
    """
    dev = resolve_device(device)
    valid, test = _tensors(data.valid, dev), _tensors(data.test, dev)
    per_seed = []
    for seed, model in enumerate(models):
        row = {"seed": seed}
        for split, (x, y) in (("val", valid), ("test", test)):
            plain = plain_eval(model, x, y)
            mc = mc_dropout_eval(model, x, y, n_samples=n_samples, seed=seed)
            row[split] = {"plain": plain, "mc": mc}
        per_seed.append(row)
    return {"n_samples": n_samples, "test_images": len(data.test), "per_seed": per_seed}


def _stats(model, x) -> list[dict[str, float]]:
    return [{"layer": s["layer"], "mean": _finite(s["mean"]), "std": _finite(s["std"])}
            for s in hidden_stats(layer_stats(model, x))]


def selu_statistics(cfg: RunConfig, raw: Dataset, std: Dataset, proto: Protocol, *,
                    device: str, progress: bool, final_model=None) -> dict[str, Any]:
    """Each hidden layer's activation mean and std of the SELU net, at init and after training.

    Four nets, standardized vs raw inputs x LeCun vs He normal init, each trained for the search
    budget (``proto.search_epochs``) at the SELU variant's learning rate, all from seed 0; the
    statistics are taken on the first ``proto.stats_examples`` validation images, in inference
    mode. ``final_model`` (the SELU variant's seed-0 model after the full protocol) adds a row.
    """
    dev = resolve_device(device)
    inits = (("LeCun", "lecun_normal"), ("He", "he_normal"))
    epochs = proto.search_epochs
    combos = []
    for inputs, data in (("standardized", std), ("raw", raw)):
        x, _ = _tensors(data.valid, dev, proto.stats_examples)
        results = train_many(_budget(cfg, epochs, progress), data,
                             [Variant(seed=0, overrides={"model.init": init}) for _, init in inits],
                             device=device, progress=progress)
        for (label, init), r in zip(inits, results):
            fresh = build_mlp(replace(cfg, **{"model.init": init}).model, data.n_features,
                              data.n_classes, seed=0).to(dev)
            combos.append({"inputs": inputs, "init": label, "label": f"{inputs} inputs, {label} init",
                           "at_init": _stats(fresh, x), "trained": _stats(r.model.to(dev), x),
                           "status": r.status, "val_accuracy": _finite(max(
                               (v for v in r.history["val_accuracy"] if v is not None),
                               default=math.nan))})
    out = {"epochs": epochs, "examples": proto.stats_examples, "combos": combos}
    if final_model is not None:
        x, _ = _tensors(std.valid, dev, proto.stats_examples)
        out["final"] = _stats(final_model.to(dev), x)
    return out


def time_epochs(configs: dict[str, RunConfig], datasets: dict[str, Dataset], steps: int,
                repeats: int, *, device: str) -> dict[str, Any]:
    """Seconds per training epoch of ONE model of each variant, measured in alternation.

    The final runs train several seeds at once and the machine may be shared, so their epoch
    times mix batching and load. Here each variant's single-model trainer (:func:`dnnlab.train.fit`)
    runs ``steps`` batches, the variants take turns ``repeats`` times (so a change of load hits
    all of them alike), and the fastest time per step times the steps of a full epoch (training
    split at the variant's batch size) is the epoch time. The fastest, not the median, as
    ``timeit`` does: other processes only ever add time, so the least disturbed slice is the
    best estimate of the code's own cost. Validation is not included.
    """
    per_step: dict[str, list[float]] = {name: [] for name in configs}
    failed: dict[str, str] = {}
    for _ in range(repeats):
        for name, cfg in configs.items():
            data = datasets[name]
            bs = cfg.train.batch_size
            n = min(len(data.train), steps * bs)
            sub = dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]),
                                      valid=Split(data.valid.x[:bs], data.valid.y[:bs]))
            # the schedule is left out: a rate change per step costs nothing measurable, and
            # 1cycle refuses runs as short as a timing slice of a tiny dataset. So is the rate:
            # 1cycle's peak, run as a constant rate, diverges before a slice ends (the README's
            # example did), and a step costs the same at any rate.
            run_cfg = replace(cfg, **{"train.epochs": 1, "train.progress": False,
                                      "train.device": device, "optim.schedule.name": "none",
                                      "optim.lr": min(cfg.optim.lr, TIMING_LR)})
            res = fit(run_cfg, sub, evaluate_test=False)
            if not res.history["seconds"]:       # diverged before its slice ended: say so
                failed[name] = f"the timing slice ended before one epoch ({res.status})"
                continue
            per_step[name].append(res.history["seconds"][0] / math.ceil(n / bs))
    out: dict[str, float | None] = {}
    for name, cfg in configs.items():
        full_steps = math.ceil(len(datasets[name].train) / cfg.train.batch_size)
        out[name] = min(per_step[name]) * full_steps if per_step[name] else None
    return {"seconds_per_epoch": out, "steps": steps, "repeats": repeats,
            "per_step": per_step, "failed_variants": failed}


# ---------------------------------------------------------------------------- the stages
@dataclass(frozen=True)
class Setup:
    """What every stage of one study run reads (picklable: worker processes get a copy)."""
    base: RunConfig                      # the base config (the ladder's rungs are overrides of it)
    proto: Protocol
    seeds: int
    device: str
    out: Path
    say: Say
    bars: bool = False                   # training bars (one process only: they would interleave)
    user: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()   # (name, overrides) per user variant
    first_seed: int = 0                  # the final runs train seeds first_seed, first_seed + 1, ...

    @property
    def models_dir(self) -> Path:
        return self.out / "models"

    def overrides(self, name: str) -> dict[str, Any] | None:
        """A user variant's overrides; None for a rung of the ladder."""
        return next((dict(o) for n, o in self.user if n == name), None)

    def config(self, name: str, chosen: dict[str, Any] | None = None) -> RunConfig:
        """Variant ``name``'s config, with the rates ``chosen`` by its search when given."""
        c = chosen or {}
        return variant_config(self.base, name, self.proto, lr=c.get("lr", 1e-3),
                              dropout=c.get("dropout", 0.1), max_lr=c.get("lr"), device=self.device,
                              overrides=self.overrides(name))


def _trim(ds: Dataset, n: int | None) -> Dataset:
    """``ds`` with its validation and test splits cut to their first ``n`` images (quick runs)."""
    if n is None:
        return ds
    cut = {k: Split(getattr(ds, k).x[:n], getattr(ds, k).y[:n]) for k in ("valid", "test")}
    return dataclasses.replace(ds, **cut)


def load_data(setup: Setup, table: DataConfig | None = None) -> tuple[Dataset, Dataset]:
    """The base config's data (or a user variant's ``table``) twice: as its ``[data]`` table
    prepares it without standardizing, and standardized with the training split's statistics."""
    table = setup.base.data if table is None else table
    limit = setup.proto.train_limit
    if table.limit is not None:
        limit = table.limit if limit is None else min(limit, table.limit)
    cfg = dataclasses.replace(table, limit=limit, standardize=False)
    raw = _trim(load_from_config(cfg, progress=setup.say.on), setup.proto.eval_limit)
    return raw, standardized(raw)


def data(setup: Setup, table: DataConfig | None = None) -> tuple[Dataset, Dataset]:
    """(raw, standardized) for ``setup`` (or a variant's ``table``), loaded once per process (the
    module's ``load_data``, looked up when called, so that a test can put generated data in its
    place)."""
    table = dataclasses.replace(setup.base.data if table is None else table, standardize=False)
    own = table != dataclasses.replace(setup.base.data, standardize=False)
    key = repr((table, setup.proto.train_limit, setup.proto.eval_limit))
    return cached(key, lambda: load_data(setup, table) if own else load_data(setup))


def data_for(cfg: RunConfig, setup: Setup) -> Dataset:
    """The data variant ``cfg`` trains on: the base's, or its own where a user variant changed
    its training rows (plan.VARIANT_DATA_KEYS; the evaluation rows are the base's all the same)."""
    raw, std = data(setup, cfg.data)
    return std if cfg.data.standardize else raw


def train_variant(setup: Setup, inputs: dict[str, Any], *, name: str) -> dict[str, Any]:
    """Search (dropout rate, then) the learning rate of one variant, then train its seeds."""
    proto, say, dev = setup.proto, setup.say, setup.device
    kw = dict(device=dev, progress=setup.bars)
    rec: dict[str, Any] = {"variant": name}
    dropout = inputs.get("dropout", 0.1)
    if name == "alpha_dropout":
        lr = inputs["selu_lr"]
        say(f"{name}: dropout-rate search, {len(proto.dropout_rates)} rates x "
            f"{proto.search_epochs} epoch(s) at lr {lr:.3g}")
        cfg = setup.config(name, {"lr": lr})
        rec["rate_search"] = search(cfg, data_for(cfg, setup), "model.dropout",
                                    proto.dropout_rates, proto.search_epochs, **kw)
        dropout = rec["rate_search"]["best"]
    rec["dropout"] = dropout
    base = setup.config(name, {"dropout": dropout})
    train = data_for(base, setup)
    say(f"{name}: LR finder, {proto.finder_steps} steps")
    rec["finder"] = lr_finder(base, train, proto.finder_steps, device=dev)
    if name == "one_cycle" and setup.overrides(name) is None:
        peaks = onecycle_candidates(rec["finder"])
        say(f"{name}: peak-rate search around the LR finder's minimum: "
            f"{', '.join(f'{p:.3g}' for p in peaks)}, whole {proto.onecycle_epochs}-epoch "
            "cycles, trained at once")
        rec["search"] = search(base, train, "optim.schedule.max_lr", peaks,
                               proto.onecycle_epochs, **kw)
        lr = rec["max_lr"] = rec["search"]["best"]
    else:
        say(f"{name}: LR search, {len(proto.lr_grid)} rates x {proto.search_epochs} epoch(s), "
            "trained at once")
        rec["search"] = search(base, train, "optim.lr", proto.lr_grid, proto.search_epochs, **kw)
        lr = rec["search"]["best"]
    rec["lr"] = lr
    cfg = setup.config(name, {"lr": lr, "dropout": dropout})
    say(f"{name}: lr {lr:.3g}; training {setup.seeds} seeds at once for up to "
        f"{cfg.train.epochs} epochs")
    rec["final"], _ = train_seeds(cfg, train, setup.seeds, models_dir=setup.models_dir,
                                  first_seed=setup.first_seed, **kw)
    accs = ", ".join(f"{r['val_accuracy']:.4f}" for r in rec["final"]["runs"])
    say(f"{name}: validation accuracy per seed {accs}")
    return rec


def mc_dropout_stage(setup: Setup, inputs: dict[str, Any]) -> dict[str, Any]:
    setup.say(f"MC Dropout: {setup.proto.mc_samples} passes per model")
    cfg = setup.config("alpha_dropout", inputs)
    return mc_dropout(load_models(cfg, setup.seeds, setup.models_dir, setup.device,
                                  setup.first_seed),
                      data(setup)[1], setup.proto.mc_samples, device=setup.device)


def selu_stats_stage(setup: Setup, inputs: dict[str, Any]) -> dict[str, Any]:
    setup.say("SELU layer statistics: standardized/raw inputs x LeCun/He init")
    cfg = setup.config("selu", {"lr": inputs["selu_lr"]})
    raw, std = data(setup)
    seed0 = load_models(cfg, 1, setup.models_dir, setup.device,
                        setup.first_seed)[0]                            # only the first is measured
    return selu_statistics(cfg, raw, std, setup.proto, device=setup.device, progress=setup.bars,
                           final_model=seed0)


def timing_stage(setup: Setup, inputs: dict[str, Any]) -> dict[str, Any]:
    proto = setup.proto
    setup.say(f"timing: one model of each variant, {proto.timing_steps} steps x "
              f"{proto.timing_repeats}, in alternation")
    configs = {n: setup.config(n, c) for n, c in inputs.items()}
    return time_epochs(configs, {n: data_for(c, setup) for n, c in configs.items()},
                       proto.timing_steps, proto.timing_repeats, device=setup.device)


def run_dir(setup: Setup, name: str, seed: int = 0) -> Path:
    """Where :func:`train_seeds` recorded variant ``name``'s ``seed``-th seed (for the doctor)."""
    return (setup.models_dir.parent / "runs" /
            f"{setup.config(name).name}-seed{setup.first_seed + seed}")


def doctor_stage(setup: Setup, inputs: dict[str, Any]) -> dict[str, Any]:
    """The doctor's top finding on each variant's first run (None: nothing wrong found)."""
    setup.say("doctor: each variant's first run")
    out: dict[str, Any] = {}
    for name in inputs["variants"]:
        try:
            findings = examine(run_dir(setup, name), report=False).findings
        except DnnlabError as e:                 # a run without records: say so, do not fail
            out[name] = {"error": str(e)}
            continue
        out[name] = findings[0].to_json() if findings else None
    return {"top_finding": out}


def _selu_lr(done: dict[str, Any]) -> dict[str, Any]:
    return {"selu_lr": done["selu"]["lr"]}


def _chosen(done: dict[str, Any], name: str) -> dict[str, Any]:
    return {"lr": done[name]["lr"], "dropout": done[name]["dropout"]}


def _alpha_chosen(done: dict[str, Any]) -> dict[str, Any]:
    return _chosen(done, "alpha_dropout")


def _alpha_dropout_rate(done: dict[str, Any]) -> dict[str, Any]:
    return {"dropout": done["alpha_dropout"]["dropout"]}


def _every_chosen(done: dict[str, Any], *, trained: tuple[str, ...]) -> dict[str, Any]:
    return {n: _chosen(done, n) for n in trained if failed(done.get(n)) is None}


def _variant_names(done: dict[str, Any], *, trained: tuple[str, ...]) -> dict[str, Any]:
    return {"variants": [n for n in trained if failed(done.get(n)) is None]}


def stages(user: tuple[str, ...] = ()) -> tuple[Stage, ...]:
    """The study's stages, the ladder's then the ``user`` variants' (by name). Ready stages start
    in this order, longest first (BN trains the longest, SELU heads the longest chain), so that
    the workers finish together; a stage waiting for another keeps a third worker busy.
    ``timing`` needs every trained variant so that it runs alone (it measures, on one thread)."""
    trained = (*TRAINED, *user)

    def variant(name: str, needs: tuple[str, ...] = (), takes=None, version: int = 1) -> Stage:
        extra = {} if takes is None else {"takes": takes}
        return Stage(name, needs, "LR search and final runs" if name != "alpha_dropout" else
                     "dropout-rate and LR searches, final runs",
                     functools.partial(train_variant, name=name), version=version, **extra)

    # versions: alpha_dropout 2, one_cycle 3 (and mc_dropout 2, timing 2, which use those models;
    # timing 3: a slice runs at most at TIMING_LR, so that 1cycle's peak cannot diverge in it):
    # one alpha dropout layer before the output, as in the book; one_cycle's peak rate searched
    # (4: up to 3x the finder's minimum, plan.ONECYCLE_PEAKS; 5: the finder on one thread).
    return (
        variant("batchnorm"), variant("selu"), variant("baseline"),
        variant("alpha_dropout", ("selu",), _selu_lr, version=2),
        variant("one_cycle", ("alpha_dropout",), _alpha_dropout_rate, version=5),
        Stage("selu_stats", ("selu",), "SELU layer statistics", selu_stats_stage,
              takes=_selu_lr, own=("stats_examples",)),
        Stage("mc_dropout", ("alpha_dropout",), "MC Dropout on the alpha-dropout models",
              mc_dropout_stage, takes=_alpha_chosen, own=("mc_samples",), version=2),
        *(variant(n) for n in user),
        Stage("doctor", trained, "the doctor's top finding per variant", doctor_stage,
              takes=functools.partial(_variant_names, trained=trained), partial=True),
        Stage("timing", (*trained, "selu_stats", "mc_dropout", "doctor"),
              "seconds per epoch, one model of each variant", timing_stage,
              takes=functools.partial(_every_chosen, trained=trained),
              own=("timing_steps", "timing_repeats"), version=3, threads=1, partial=True),
    )

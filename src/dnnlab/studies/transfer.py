"""``dnnlab study transfer``: the book's transfer-learning exercise on MNIST, measured.

Part 1, digits 0-4 (pixels / 255, validation = the first 5,000 training images, test = the
official test set, each restricted to 0-4): the 5 x 100 He/ELU network with Adam and early
stopping (checkpoints every few epochs and the final model in ``OUT/digits04_default/seedN``);
then hyperparameters tuned by k-fold cross-validation (``dnnlab tune``'s machinery), batch norm
added to the tuned network (learning curves compared), and dropout on every layer (train vs
validation accuracy: is the overfitting gone?).

Part 2, digits 5-9 with 100 training images per digit (and 30 per digit for early stopping, as
in the book's solution), drawn anew for each seed: the pretrained hidden layers, **loaded from the
saved model on disk**, reused frozen (BN in inference mode) under a fresh softmax head, and timed;
the same with the frozen layers' outputs cached once and only the head trained (timed again:
the speedup); 4 reused layers instead of 5; the top two then unfrozen and trained further at a
lower rate; then all of them; and the same architecture trained from scratch on the 500 images.
The head's optimizer and learning rate are chosen on the validation images with cached features
(cheap), once for 5 and once for 4 reused layers; the fine-tuning rate (a fraction of the head's)
and the from-scratch network's rate get the same search, run in full. Which 0-4 network to reuse is chosen the same way (the one whose frozen
layers let a head reach the lowest validation loss), unless ``--pretrained`` names one.

Every experiment runs over ``seeds`` seeds (init, batch order, and for part 2 the image draw and
the pretrained model of that seed) and reports mean +- std beside the book's single run. The
search lives in ``OUT/tune/study.db``: a second run into the same ``--out`` reuses its finished
trials (delete that folder to search afresh).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnnlab import data as datasets
from dnnlab.analysis.transfer import (cache_features, fit_head, head_model, reuse_layers,
                                      trainable_parameters, unfreeze)
from dnnlab.config import RunConfig, replace
from dnnlab.data import from_arrays, load_dataset
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.report import Page, learning_curves, line_plot
from dnnlab.studies.common import (Stopwatch, book_rows, book_verdict, difference,
                                   draw_per_class, mean_std, pm, seed_list, summarize, train_seconds,
                                   write_results)
from dnnlab.train import evaluate, fit, resolve_device
from dnnlab.train import threads as thread_policy
from dnnlab.train.checkpoint import load_model
from dnnlab.train.state import LAST
from dnnlab.tune import tune

HELP = "the MNIST transfer-learning exercise (digits 0-4 -> 5-9), against the book"
DIGITS_04 = [0, 1, 2, 3, 4]
DIGITS_59 = [5, 6, 7, 8, 9]

# The book's results (1st edition, chapter 11 exercises 8-9, test accuracy in %, single runs).
BOOK = {"digits04_default": 97.26, "digits04_tuned": 98.91, "digits04_batchnorm": 99.42,
        "digits04_dropout": 98.62, "frozen5": 64.02, "frozen5_cached": 61.16, "frozen4": 69.10,
        "unfreeze2": 78.09, "unfreeze_all": 91.34, "scratch": 84.82}
BOOK_SECONDS = {"frozen5": 1.9, "frozen5_cached": 1.1}
LABELS = {"digits04_default": "0-4: 5x100 He/ELU, Adam, early stopping",
          "digits04_tuned": "0-4: tuned by cross-validation",
          "digits04_batchnorm": "0-4: tuned + batch norm",
          "digits04_dropout": "0-4: tuned + dropout",
          "frozen5": "5-9: 5 frozen layers + new head",
          "frozen5_cached": "5-9: same, frozen outputs cached",
          "frozen4": "5-9: 4 frozen layers + new head",
          "unfreeze2": "5-9: top two unfrozen",
          "unfreeze_all": "5-9: all unfrozen",
          "scratch": "5-9: same net from scratch"}
VARIANTS_04 = ("digits04_default", "digits04_tuned", "digits04_batchnorm", "digits04_dropout")
PRETRAINED = ("default", "tuned", "batchnorm", "dropout")

# What the cross-validated search explores (the book searched neurons, learning rate, batch size
# and activation; the optimizer is ours to add).
TUNE_SPACE = {"model.width": {"low": 50, "high": 300, "log": True},
              "model.activation": ["elu", "relu", "leaky_relu", "selu"],
              "optim.name": ["adam", "nadam"],
              "optim.lr": {"low": 2e-4, "high": 5e-3, "log": True},
              "train.batch_size": [32, 64, 128, 256]}
HEAD_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
HEAD_OPTIMIZERS = ("adam", "nadam")
SCRATCH_LRS = (3e-4, 1e-3, 3e-3)
FINETUNE_FACTORS = (0.03, 0.1, 0.3)   # unfrozen layers continue at a fraction of the head's rate
DROPOUT = 0.2


@dataclass(frozen=True)
class Plan:
    """How much work each step gets: ``FULL`` for the study, ``QUICK`` for CI (< 3 minutes)."""
    epochs04: int = 100
    patience04: int = 20
    limit04: int | None = None         # cap on the 0-4 training images
    checkpoint_every: int = 5
    trials: int = 20
    folds: int = 3
    tune_epochs: int = 30
    tune_patience: int = 4
    epochs59: int = 500
    patience59: int = 20
    per_class: int = 100
    valid_per_class: int = 30


FULL = Plan()
QUICK = Plan(epochs04=3, patience04=2, limit04=2000, checkpoint_every=2, trials=3, folds=2,
             tune_epochs=2, tune_patience=2, epochs59=20, patience59=5)


def default_config(plan: Plan, device: str = "auto", data_dir: str | None = None) -> RunConfig:
    """The exercise's first network: 5 x 100, He init, ELU, Adam, early stopping on val loss."""
    return replace(RunConfig(), **{
        "name": "digits04_default", "data.name": "mnist", "data.classes": DIGITS_04,
        "data.limit": plan.limit04, "data.data_dir": data_dir,
        "model.depth": 5, "model.width": 100, "model.init": "he_normal", "model.activation": "elu",
        "optim.name": "adam", "optim.lr": 1e-3,
        "train.epochs": plan.epochs04, "train.patience": plan.patience04, "train.batch_size": 32,
        "train.monitor": "val_loss", "train.restore_best": True,
        "train.checkpoint_every": plan.checkpoint_every, "train.device": device,
        "train.progress": False})


# --------------------------------------------------------------------------------- part 1: 0-4

def _accuracies(model, data, device) -> dict[str, float]:
    """Train, validation and test accuracy in eval mode (dropout off) for a fair overfit check."""

    out = {}
    for name in ("train", "valid", "test"):
        x, y = getattr(data, name).tensors(device)
        out[f"{name}_accuracy"] = evaluate(model, x, y)["accuracy"]
    return out


def train_seeds(cfg: RunConfig, data, seeds: list[int], root: Path, log,
                resume: bool = False) -> list[dict[str, Any]]:
    """One run per seed into ``root/seedN`` (config, metrics, checkpoints, final model).

    With ``resume`` a run that has a checkpoint continues from it (a finished one is reloaded).
    """
    device = resolve_device(cfg.train.device)
    runs = []
    for s in seeds:
        run_dir = root / f"seed{s}"
        again = resume and (run_dir / LAST).exists()
        if not again and (run_dir / LAST).exists():
            shutil.rmtree(run_dir)                  # a fresh study replaces an old run
        res = fit(replace(cfg, **{"train.seed": s}), data, run_dir, resume=again)
        if res.status == "diverged":
            raise DnnlabError(f"{cfg.name}, seed {s}: {res.message}")
        acc = _accuracies(res.model, data, device)
        runs.append({"seed": s, **acc, "train_seconds": train_seconds(res.history),
                     "epochs": res.epochs_run, "best_epoch": res.best_epoch,
                     "history": res.history, "run_dir": str(root / f"seed{s}")})
        log(f"  {cfg.name} seed {s}: test accuracy {acc['test_accuracy']:.4f} "
            f"(best epoch {res.best_epoch} of {res.epochs_run}, {runs[-1]['train_seconds']:.1f} s)")
    return runs


def _entry(key: str, runs: list[dict[str, Any]], extra_keys=()) -> dict[str, Any]:
    keys = ["test_accuracy", "train_seconds", "epochs", "best_epoch", *extra_keys]
    entry = summarize(runs, keys)
    entry["train_seconds"] = entry["train_seconds_mean"]
    entry["book_test_accuracy"] = BOOK[key] / 100
    if key in BOOK_SECONDS:
        entry["book_train_seconds"] = BOOK_SECONDS[key]
    return entry


def digits04(plan: Plan, seeds: list[int], out: Path, device: str, data_dir: str | None,
             log, resume: bool = False) -> dict[str, Any]:
    """Part 1: default, tuned, batch norm, dropout; every run saved under ``out``."""
    base = default_config(plan, device, data_dir)
    data = datasets.load_from_config(base.data, progress=False)   # via the package: patchable
    log(f"digits 0-4: {data.summary()}")
    runs: dict[str, list[dict[str, Any]]] = {}

    log("[1/4] default network")
    runs["digits04_default"] = train_seeds(base, data, seeds, out / "digits04_default", log, resume)

    log(f"[2/4] cross-validated search: {plan.trials} trials x {plan.folds} folds")
    space_cfg = replace(base, **{"name": "digits04-quick" if plan is QUICK else "digits04",
                                 "train.epochs": plan.tune_epochs, "train.patience": plan.tune_patience,
                                 "train.checkpoint_every": 0, "tune": TUNE_SPACE})
    search = tune(space_cfg, trials=plan.trials, folds=plan.folds, out=out / "tune", data=data,
                  seed=0, log=lambda m: log("  " + m))
    tuned = replace(search.best_config, **{
        "name": "digits04_tuned", "train.epochs": plan.epochs04, "train.patience": plan.patience04,
        "train.checkpoint_every": plan.checkpoint_every})
    tuned.tune = {}
    runs["digits04_tuned"] = train_seeds(tuned, data, seeds, out / "digits04_tuned", log, resume)

    log("[3/4] tuned + batch norm (before each activation)")
    bn = replace(tuned, **{"name": "digits04_batchnorm", "model.batch_norm": "before"})
    runs["digits04_batchnorm"] = train_seeds(bn, data, seeds, out / "digits04_batchnorm", log, resume)

    log(f"[4/4] tuned + dropout {DROPOUT} on every hidden layer")
    kind = "alpha" if tuned.model.activation == "selu" else "dropout"
    drop = replace(tuned, **{"name": "digits04_dropout", "model.dropout": DROPOUT,
                             "model.dropout_kind": kind})
    runs["digits04_dropout"] = train_seeds(drop, data, seeds, out / "digits04_dropout", log, resume)

    results = {k: _entry(k, v, ("train_accuracy", "valid_accuracy")) for k, v in runs.items()}
    for k, cfg in (("digits04_default", base), ("digits04_tuned", tuned),
                   ("digits04_batchnorm", bn), ("digits04_dropout", drop)):
        results[k]["run_dirs"] = [r["run_dir"] for r in runs[k]]
        results[k]["config"] = {"width": cfg.model.width, "activation": cfg.model.activation,
                                "optimizer": cfg.optim.name, "lr": cfg.optim.lr,
                                "batch_size": cfg.train.batch_size,
                                "batch_norm": cfg.model.batch_norm, "dropout": cfg.model.dropout}
    results["digits04_tuned"]["cv_accuracy"] = search.best_value
    results["digits04_tuned"]["best_params"] = search.best_params
    return {"results": results, "runs": runs, "search": search}


# --------------------------------------------------------------------------------- part 2: 5-9

def _split_tensors(data, device):
    return {name: getattr(data, name).tensors(device) for name in ("train", "valid", "test")}


def draw_59(full, plan: Plan, seed: int):
    """100 training and 30 validation images per digit, drawn with ``seed``; the whole test set."""
    tr = draw_per_class(full.train.y, plan.per_class, seed)
    va = draw_per_class(full.valid.y, plan.valid_per_class, seed + 10_000)
    return from_arrays(full.train.x[tr], full.train.y[tr], full.valid.x[va], full.valid.y[va],
                       full.test.x, full.test.y, name="mnist 5-9",
                       class_names=full.class_names)


def head_search(pretrained, n_layers: int, cfg: RunConfig, t: dict, log) -> dict[str, Any]:
    """Choose the head's optimizer and rate by best validation loss, on cached features."""
    model = reuse_layers(pretrained, n_layers, 5, seed=cfg.train.seed)
    feats = {k: (cache_features(model, n_layers, x), y) for k, (x, y) in t.items() if k != "test"}
    grid = []
    for opt in HEAD_OPTIMIZERS:
        for lr in HEAD_LRS:
            res = fit_head(replace(cfg, **{"optim.name": opt, "optim.lr": lr}), head_model(model),
                           feats["train"], feats["valid"])
            grid.append({"optimizer": opt, "lr": lr, "val_loss": res.best,
                         "val_accuracy": res.history["val_accuracy"][res.best_epoch - 1]
                         if res.best_epoch else math.nan})
    best = min(grid, key=lambda g: g["val_loss"] if not math.isnan(g["val_loss"]) else math.inf)
    log(f"  head search ({n_layers} layers): {best['optimizer']} lr {best['lr']:g} "
        f"(validation loss {best['val_loss']:.4f})")
    return {"best": best, "grid": grid}


def finetune_search(pretrained, head4: dict[str, Any], cfg: RunConfig, data, log) -> dict[str, Any]:
    """Choose the fine-tuning rate (a fraction of the head's): 4 frozen layers trained, then the
    top two and then all unfrozen at that rate; the last stage's validation loss decides."""
    opt, lr = head4["optimizer"], head4["lr"]
    frozen = reuse_layers(pretrained, 4, 5, seed=cfg.train.seed)
    fit(replace(cfg, **{"optim.name": opt, "optim.lr": lr}), data, model=frozen, evaluate_test=False)
    grid = []
    for factor in FINETUNE_FACTORS:
        c = replace(cfg, **{"optim.name": opt, "optim.lr": lr * factor})
        model = copy.deepcopy(frozen)
        for i in (2, 3):
            unfreeze(model.hidden[i])
        fit(c, data, model=model, evaluate_test=False)
        res = fit(c, data, model=unfreeze(model), evaluate_test=False)
        grid.append({"optimizer": opt, "lr": lr * factor, "factor": factor, "val_loss": res.best})
    best = min(grid, key=lambda g: g["val_loss"] if not math.isnan(g["val_loss"]) else math.inf)
    log(f"  fine-tuning search: lr {best['lr']:g} = {best['factor']:g} x the head's "
        f"(validation loss {best['val_loss']:.4f})")
    return {"best": best, "grid": grid}


def scratch_search(arch, cfg: RunConfig, data, log) -> dict[str, Any]:
    """Choose the from-scratch network's rate the same way, by full training runs."""
    grid = []
    for lr in SCRATCH_LRS:
        c = replace(cfg, **{"optim.lr": lr})
        res = fit(c, data, model=build_mlp(arch, data.n_features, data.n_classes,
                                           seed=cfg.train.seed), evaluate_test=False)
        grid.append({"optimizer": cfg.optim.name, "lr": lr, "val_loss": res.best})
    best = min(grid, key=lambda g: g["val_loss"] if not math.isnan(g["val_loss"]) else math.inf)
    log(f"  scratch search: lr {best['lr']:g} (validation loss {best['val_loss']:.4f})")
    return {"best": best, "grid": grid}


def _state_copy(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def transfer_seed(pretrained_path: Path, data, cfg: RunConfig, lrs: dict[str, dict[str, Any]],
                  seed: int, log) -> dict[str, dict[str, Any]]:
    """The six 5-9 experiments for one seed; returns one record per experiment."""
    device = resolve_device(cfg.train.device)
    cfg = replace(cfg, **{"train.seed": seed})
    pretrained = load_model(pretrained_path, device)          # from disk, as the exercise asks
    before = _state_copy(pretrained)
    t = _split_tensors(data, device)

    def with_opt(which: str, factor: float = 1.0) -> RunConfig:
        b = lrs[which]["best"]
        return replace(cfg, **{"optim.name": b["optimizer"], "optim.lr": b["lr"] * factor})

    def record(res, seconds: float | None = None, **extra) -> dict[str, Any]:
        return {"seed": seed, "test_accuracy": res.test.get("test_accuracy", math.nan),
                "train_seconds": train_seconds(res.history) if seconds is None else seconds,
                "epochs": res.epochs_run, "best_epoch": res.best_epoch, "history": res.history,
                **extra}

    out: dict[str, dict[str, Any]] = {}
    head5 = with_opt("head5")
    m5 = reuse_layers(pretrained, 5, 5, seed=seed)
    r5 = fit(head5, data, model=m5)
    out["frozen5"] = record(r5, trainable=trainable_parameters(m5))

    c5 = reuse_layers(pretrained, 5, 5, seed=seed)               # the same start as m5
    with Stopwatch(device) as cache_time:
        feats = {k: (cache_features(c5, 5, t[k][0]), t[k][1]) for k in ("train", "valid")}
    test_feats = (cache_features(c5, 5, t["test"][0]), t["test"][1])
    rc = fit_head(head5, head_model(c5), feats["train"], feats["valid"], test_feats)
    cached_seconds = cache_time.seconds + train_seconds(rc.history)
    same = float((rc.model.head.weight - m5.head.weight).detach().abs().max())
    out["frozen5_cached"] = record(rc, cached_seconds, cache_seconds=cache_time.seconds,
                                   speedup=out["frozen5"]["train_seconds"] / cached_seconds,
                                   max_head_difference=same)

    head4 = with_opt("head4")
    m4 = reuse_layers(pretrained, 4, 5, seed=seed)
    out["frozen4"] = record(fit(head4, data, model=m4), trainable=trainable_parameters(m4))
    for i in (2, 3):
        unfreeze(m4.hidden[i])
    out["unfreeze2"] = record(fit(with_opt("finetune"), data, model=m4),
                              trainable=trainable_parameters(m4))
    unfreeze(m4)
    out["unfreeze_all"] = record(fit(with_opt("finetune"), data, model=m4),
                                 trainable=trainable_parameters(m4))

    arch = dataclasses.replace(pretrained.config, hidden=None, depth=4)
    scratch = build_mlp(arch, data.n_features, data.n_classes, seed=seed)
    out["scratch"] = record(fit(with_opt("scratch"), data, model=scratch),
                            trainable=trainable_parameters(scratch))
    out["frozen5"]["pretrained_unchanged"] = _same_state(before, pretrained.state_dict())
    log("  seed {}: ".format(seed) + ", ".join(
        f"{k} {v['test_accuracy']:.4f}" for k, v in out.items()) +
        f"; cached speedup {out['frozen5_cached']['speedup']:.1f}x")
    return out


def digits59(plan: Plan, seeds: list[int], out: Path, pretrained: str, device: str,
             data_dir: str | None, log) -> dict[str, Any]:
    """Part 2: the six transfer experiments over ``seeds``."""
    full = load_dataset("mnist", classes=DIGITS_59, data_dir=data_dir, progress=False)
    cfg = replace(default_config(plan, device, data_dir), **{
        "name": "digits59", "train.epochs": plan.epochs59, "train.patience": plan.patience59,
        "train.checkpoint_every": 0})
    def path(variant: str, seed: int) -> Path:
        return out / f"digits04_{variant}" / f"seed{seed}" / "model.safetensors"

    dev = resolve_device(device)
    first = draw_59(full, plan, seeds[0])
    t = _split_tensors(first, dev)
    cfg0 = replace(cfg, **{"train.seed": seeds[0]})
    log(f"digits 5-9: {plan.per_class} training and {plan.valid_per_class} validation images per "
        f"digit per seed, {len(full.test)} test images")
    candidates = PRETRAINED if pretrained == "auto" else (pretrained,)
    searches: dict[str, Any] = {}
    choice: dict[str, float] = {}
    for variant in candidates:
        found = head_search(load_model(path(variant, seeds[0]), dev), 5, cfg0, t,
                            lambda m, v=variant: log(m.replace("layers)", f"layers, {v})")))
        choice[variant] = found["best"]["val_loss"]
        searches.setdefault("by_pretrained", {})[variant] = found
    pretrained = min(choice, key=lambda v: choice[v] if not math.isnan(choice[v]) else math.inf)
    log(f"  reusing digits04_{pretrained}" + (" (lowest validation loss of a frozen-5 head)"
                                              if len(candidates) > 1 else ""))
    model0 = load_model(path(pretrained, seeds[0]), dev)
    searches["head5"] = searches["by_pretrained"][pretrained]
    searches["head4"] = head_search(model0, 4, cfg0, t, log)
    searches["finetune"] = finetune_search(model0, searches["head4"]["best"], cfg0, first, log)
    arch = dataclasses.replace(model0.config, hidden=None, depth=4)
    searches["scratch"] = scratch_search(arch, replace(cfg0, **{
        "optim.name": searches["head4"]["best"]["optimizer"]}), first, log)

    per_seed = [transfer_seed(path(pretrained, s), draw_59(full, plan, s), cfg, searches, s, log)
                for s in seeds]
    runs = {k: [p[k] for p in per_seed] for k in per_seed[0]}
    results = {k: _entry(k, v) for k, v in runs.items()}
    cached = results["frozen5_cached"]
    cached["speedup"] = results["frozen5"]["train_seconds"] / cached["train_seconds"]
    cached["speedup_values"] = [r["speedup"] for r in runs["frozen5_cached"]]
    cached["cache_seconds"] = float(np.mean([r["cache_seconds"] for r in runs["frozen5_cached"]]))
    cached["max_head_difference"] = max(r["max_head_difference"] for r in runs["frozen5_cached"])
    results["frozen5"]["pretrained_unchanged"] = all(r["pretrained_unchanged"] for r in runs["frozen5"])
    for k in ("frozen5", "frozen4", "unfreeze2", "unfreeze_all", "scratch"):
        results[k]["trainable_parameters"] = runs[k][0]["trainable"]
    for k, which, factor in (("frozen5", "head5", 1), ("frozen5_cached", "head5", 1),
                             ("frozen4", "head4", 1), ("unfreeze2", "finetune", 1),
                             ("unfreeze_all", "finetune", 1), ("scratch", "scratch", 1)):
        b = searches[which]["best"]
        results[k]["optimizer"], results[k]["lr"] = b["optimizer"], b["lr"] * factor
    results["frozen5"]["pretrained"] = f"digits04_{pretrained}"
    results["frozen5"]["pretrained_choice"] = {f"digits04_{k}": v for k, v in choice.items()}
    return {"results": results, "runs": runs, "searches": searches, "pretrained": pretrained}


# --------------------------------------------------------------------------------- the study

def run(out: str | Path = "runs/transfer", *, quick: bool = False, seeds: int = 3,
        data_dir: str | None = None, device: str = "auto", pretrained: str = "auto",
        threads: int | None = 1, resume: bool = False, log=print) -> dict[str, Any]:
    """Run the whole study into ``out`` (report.html, results.json, runs); return the results.

    ``pretrained`` names the 0-4 variant whose saved models part 2 reuses (default, tuned,
    batchnorm or dropout); "auto" picks the one whose frozen layers give the lowest validation
    loss of a trained head on the first seed's 5-9 images (validation data only). ``threads`` caps
    torch's CPU threads for the study (:func:`dnnlab.train.threads.cap`: the policy chooses below
    it, a fixed ``--threads N`` wins; None: no cap).
    """
    if pretrained not in ("auto", *PRETRAINED):
        raise DnnlabError(f"pretrained = {pretrained!r}; choose auto, {', '.join(PRETRAINED)}")
    t0 = time.perf_counter()
    out = Path(out)
    plan = QUICK if quick else FULL
    seed_ids = seed_list(seeds)
    dev = resolve_device(device)
    with thread_policy.cap(threads if dev.type == "cpu" else None):
        part1 = digits04(plan, seed_ids, out, device, data_dir, log, resume)
        part2 = digits59(plan, seed_ids, out, pretrained, device, data_dir, log)
    results: dict[str, Any] = {**part1["results"], **part2["results"]}
    wall = time.perf_counter() - t0
    results["meta"] = {"quick": quick, "seeds": seed_ids, "wall_seconds": wall,
                       "device": str(dev), "pretrained": f"digits04_{part2['pretrained']}",
                       "plan": dataclasses.asdict(plan), "book": BOOK, "book_seconds": BOOK_SECONDS}
    write_results(out, results)
    write_report(out, results, part1, part2)
    log(f"done in {wall / 60:.1f} min")
    return results


# --------------------------------------------------------------------------------- the report

def _first_seed_curves(runs: dict[str, list[dict[str, Any]]], keys) -> dict[str, dict]:
    return {LABELS[k].split(": ", 1)[1]: runs[k][0]["history"] for k in keys}


def _compared(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, bool]:
    """'better by +0.21 points' / 'no better: -0.05 points, within the seeds' spread'."""
    diff, clear = difference(a, b)
    if not clear:
        return f"no clearly different model ({diff * 100:+.2f} points, within the seeds' spread)", False
    return (f"a {'better' if diff > 0 else 'worse'} model ({diff * 100:+.2f} points)"), diff > 0


def _first_epoch(runs: list[dict[str, Any]]) -> float:
    return float(np.mean([r["history"]["val_accuracy"][0] for r in runs]))


def _bn_verdict(r: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> tuple[str, bool]:
    tuned, bn = r["digits04_tuned"], r["digits04_batchnorm"]
    v_tuned, v_bn = _first_epoch(runs["digits04_tuned"]), _first_epoch(runs["digits04_batchnorm"])
    faster = v_bn > v_tuned
    model, better = _compared(bn, tuned)
    per_epoch = (bn["train_seconds"] / bn["epochs_mean"]) / (tuned["train_seconds"] / tuned["epochs_mean"])
    text = (f"Batch norm {'learns faster' if faster else 'does not learn faster'} at first "
            f"({v_bn * 100:.2f} % validation accuracy after one epoch vs {v_tuned * 100:.2f} %), "
            f"reaches its lowest validation loss at epoch {bn['best_epoch_mean']:.1f} on average vs "
            f"{tuned['best_epoch_mean']:.1f}, and each epoch costs {per_epoch:.2f}x the time. It "
            f"gives {model}: test accuracy {pm(bn['test_accuracy_mean'], bn['test_accuracy_std'])} "
            f"vs {pm(tuned['test_accuracy_mean'], tuned['test_accuracy_std'])} %.")
    return text, faster and better


def _dropout_verdict(r: dict[str, Any]) -> tuple[str, bool]:
    tuned, drop = r["digits04_tuned"], r["digits04_dropout"]
    gap = lambda e: e["train_accuracy_mean"] - e["valid_accuracy_mean"]  # noqa: E731
    narrower = gap(drop) < gap(tuned)
    model, better = _compared(drop, tuned)
    text = (f"Without dropout the tuned network fits its training images to "
            f"{tuned['train_accuracy_mean'] * 100:.2f} % vs {tuned['valid_accuracy_mean'] * 100:.2f} "
            f"% on validation (gap {gap(tuned) * 100:.2f} points). Dropout {DROPOUT} "
            f"{'narrows the gap to' if narrower else 'leaves a gap of'} {gap(drop) * 100:.2f} points "
            f"and gives {model}: test accuracy "
            f"{pm(drop['test_accuracy_mean'], drop['test_accuracy_std'])} vs "
            f"{pm(tuned['test_accuracy_mean'], tuned['test_accuracy_std'])} %.")
    return text, narrower and better


def _speed_verdict(r: dict[str, Any]) -> tuple[str, bool]:
    f5, c = r["frozen5"], r["frozen5_cached"]
    ok = c["speedup"] >= 5
    same = c["max_head_difference"] < 1e-4
    text = (f"Caching the frozen layers' outputs cuts training from {f5['train_seconds']:.2f} s to "
            f"{c['train_seconds']:.2f} s ({c['cache_seconds']:.3f} s of it computing the cache): "
            f"{c['speedup']:.1f}x faster (per seed: "
            f"{', '.join(f'{v:.1f}x' for v in c['speedup_values'])}; the book: 1.9 s -> 1.1 s, "
            f"1.7x). {'It trains the same model' if same else 'The models differ'}: the heads "
            f"differ by at most {c['max_head_difference']:.1e} after training, and the test "
            f"accuracies are {pm(f5['test_accuracy_mean'], f5['test_accuracy_std'])} and "
            f"{pm(c['test_accuracy_mean'], c['test_accuracy_std'])} %.")
    return text, ok and same


def _transfer_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for k in ("frozen5", "frozen5_cached", "frozen4", "unfreeze2", "unfreeze_all", "scratch"):
        e = r[k]
        rows.append({"experiment": LABELS[k].split(": ", 1)[1], "book (%)": BOOK[k],
                     "ours (%)": pm(e["test_accuracy_mean"], e["test_accuracy_std"]),
                     "per seed (%)": " ".join(f"{v * 100:.2f}" for v in e["test_accuracy_values"]),
                     "optimizer, lr": f"{e['optimizer']} {e['lr']:.3g}",
                     "trainable params": e.get("trainable_parameters"),
                     "epochs": e["epochs_mean"], "train s": e["train_seconds"]})
    return rows


def write_report(out: Path, results: dict[str, Any], part1: dict, part2: dict) -> Path:
    """``out/report.html``: the book beside ours, then each question with its evidence."""
    r, meta = results, results["meta"]
    page = Page("Transfer learning on MNIST: digits 0-4, then 5-9 from 100 images each",
                f"Hands-On ML ch. 11, exercises 8-9, measured over {len(meta['seeds'])} seeds "
                f"on {meta['device']} in {meta['wall_seconds'] / 60:.1f} min"
                f"{' (quick mode: shortened, for CI)' if meta['quick'] else ''}")
    verdict, ok = book_verdict(r, BOOK, LABELS)
    page.verdict(verdict, ok)
    page.table(book_rows(r, BOOK, LABELS), formats={"book (%)": ".2f", "ours − book (pts)": "+.2f",
                                                    "train s (mean)": ".2f"})
    page.paragraph("Protocol: pixels / 255; validation = the first 5,000 training images and test "
                   "= the official test set, both restricted to the digits in play; early stopping "
                   "on validation loss with the best weights restored. Mean ± sample std over "
                   "seeds; each seed changes the initialization, the batch order and, for 5-9, the "
                   "images drawn and the pretrained model reused. Training seconds are the sum of "
                   "the epochs' times (steps and validation, no disk I/O).")

    runs1, search = part1["runs"], part1["search"]
    page.heading("Digits 0-4")
    page.heading("Cross-validated tuning", 3)
    page.paragraph(f"{meta['plan']['trials']} Optuna trials (TPE sampler, median pruning after each "
                   f"fold), each scored by {meta['plan']['folds']}-fold stratified cross-validation "
                   f"on the training images. Best: "
                   f"{', '.join(f'{k} = {v:.3g}' if isinstance(v, float) else f'{k} = {v}' for k, v in search.best_params.items())}"
                   f", with cross-validated accuracy {search.best_value * 100:.2f} %.")
    page.table([{k: v for k, v in row.items() if k != "worker"} for row in search.rows[:10]],
               formats={"cv_accuracy": ".4f", "seconds": ".1f"})
    page.heading("Batch normalization: faster convergence? a better model?", 3)
    page.figure(learning_curves(_first_seed_curves(runs1, VARIANTS_04),
                                title="Learning curves, digits 0-4 (first seed)"),
                "dashed: training, solid: validation")
    page.table([{"variant": LABELS[k].split(": ", 1)[1],
                 "best epoch (mean)": r[k]["best_epoch_mean"], "epochs run": r[k]["epochs_mean"],
                 "s / epoch": r[k]["train_seconds"] / r[k]["epochs_mean"],
                 "val acc after epoch 1 (%)": float(np.mean(
                     [x["history"]["val_accuracy"][0] for x in runs1[k]])) * 100,
                 "test acc (%)": pm(r[k]["test_accuracy_mean"], r[k]["test_accuracy_std"])}
                for k in VARIANTS_04], formats={"best epoch (mean)": ".1f", "epochs run": ".1f",
                                                "s / epoch": ".2f", "val acc after epoch 1 (%)": ".2f"})
    page.verdict(*_bn_verdict(r, runs1))
    page.heading("Overfitting and dropout", 3)
    page.table([{"variant": LABELS[k].split(": ", 1)[1],
                 "train acc (%)": r[k]["train_accuracy_mean"] * 100,
                 "valid acc (%)": r[k]["valid_accuracy_mean"] * 100,
                 "gap (pts)": (r[k]["train_accuracy_mean"] - r[k]["valid_accuracy_mean"]) * 100,
                 "test acc (%)": r[k]["test_accuracy_mean"] * 100} for k in VARIANTS_04],
               formats={c: ".2f" for c in ("train acc (%)", "valid acc (%)", "gap (pts)",
                                           "test acc (%)")})
    page.paragraph("Accuracies measured after training in inference mode (dropout off), so the "
                   "training accuracy is comparable with and without dropout.")
    page.verdict(*_dropout_verdict(r))

    page.heading("Digits 5-9 from 100 images per digit")
    page.paragraph(f"The hidden layers come from {meta['pretrained']} (the model of the same "
                   "seed, loaded from its model.safetensors), copied into a new network with a "
                   "fresh 5-way softmax head; frozen layers keep batch norm in inference mode. "
                   "Unfreezing continues from the 4-layer model at "
                   f"{r['unfreeze2']['lr'] / r['frozen4']['lr']:g} x the head's rate (searched on "
                   "the validation images); batch norm stays in inference mode there too. The "
                   "pretrained model is "
                   f"{'unchanged' if r['frozen5']['pretrained_unchanged'] else 'CHANGED'} after "
                   "training the new ones.")
    choice = r["frozen5"]["pretrained_choice"]
    if len(choice) > 1:
        page.table([{"pretrained 0-4 model": k, "best validation loss of a frozen-5 head": v,
                     "chosen": "yes" if k == meta["pretrained"] else ""} for k, v in choice.items()],
                   formats={"best validation loss of a frozen-5 head": ".4f"})
    page.table(_transfer_rows(r), formats={"book (%)": ".2f", "epochs": ".1f", "train s": ".2f"})
    page.verdict(*_speed_verdict(r))
    curves = {LABELS[k].split(": ", 1)[1]: part2["runs"][k][0]["history"]
              for k in ("frozen5", "frozen4", "unfreeze2", "unfreeze_all", "scratch")}
    page.figure(learning_curves(curves, metrics=("accuracy",),
                                title="Learning curves, digits 5-9 (first seed)"),
                "dashed: training, solid: validation (30 images per digit); the unfreezing "
                "stages start from the previous stage's weights")
    page.table([{"search": name, "optimizer": g["optimizer"], "lr": g["lr"],
                 "best validation loss": g["val_loss"]}
                for name, which in (("fine-tuning rate", "finetune"), ("from scratch", "scratch"))
                for g in part2["searches"][which]["grid"]],
               formats={"lr": ".3g", "best validation loss": ".4f"})
    for which, title in (("head5", "5 frozen layers"), ("head4", "4 frozen layers")):
        grid = part2["searches"][which]["grid"]
        ys = {opt: [g["val_loss"] for g in grid if g["optimizer"] == opt] for opt in HEAD_OPTIMIZERS}
        page.figure(line_plot(HEAD_LRS, ys, xlabel="learning rate", ylabel="best validation loss",
                              title=f"Head search on cached features ({title})", logx=True),
                    "each point: the head trained to early stopping on the first seed's cached "
                    "features; the lowest validation loss picks the optimizer and rate")
    return page.save(Path(out) / "report.html")


def add_arguments(parser) -> None:
    parser.add_argument("--pretrained", default="auto", choices=("auto", *PRETRAINED),
                        help="which 0-4 model part 2 reuses (default auto: the one whose frozen "
                        "layers give the lowest validation loss on 5-9)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed study in --out: finished runs are reloaded, "
                        "interrupted ones continue from their last checkpoint, the search resumes")


def main(args) -> int:
    out = args.out or "runs/transfer"
    res = run(out, quick=args.quick, seeds=args.seeds, data_dir=args.data_dir,
              device=args.device or "auto", pretrained=args.pretrained, resume=args.resume)
    print(format_summary(res))
    print(f"report: {Path(out) / 'report.html'}")
    print(f"results: {Path(out) / 'results.json'}")
    return 0


def format_summary(results: dict[str, Any]) -> str:
    """The book-vs-ours table as text, for the terminal."""
    lines = [f"{'experiment':44s} {'book':>7s} {'ours (mean ± std)':>18s} {'train s':>8s}"]
    for key, label in LABELS.items():
        r = results[key]
        lines.append(f"{label:44s} {BOOK[key]:7.2f} "
                     f"{pm(r['test_accuracy_mean'], r['test_accuracy_std']):>18s} "
                     f"{r['train_seconds']:8.2f}")
    c = results["frozen5_cached"]
    lines.append(f"caching speedup: {c['speedup']:.1f}x (book: {BOOK_SECONDS['frozen5']} s -> "
                 f"{BOOK_SECONDS['frozen5_cached']} s, {BOOK_SECONDS['frozen5'] / BOOK_SECONDS['frozen5_cached']:.1f}x)")
    return "\n".join(lines)


__all__ = ["BOOK", "FULL", "QUICK", "Plan", "run", "main", "add_arguments", "mean_std"]

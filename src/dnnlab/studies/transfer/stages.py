"""The transfer study's work (part 1: digits 0-4; part 2: digits 5-9 from the saved 0-4 models),
declared as two engine stages (:mod:`dnnlab.studies.engine`)."""


import copy
import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnnlab import data as datasets
from dnnlab.analysis.transfer import (
    cache_features,
    fit_head,
    head_model,
    reuse_layers,
    trainable_parameters,
    unfreeze,
)
from dnnlab.config import RunConfig, replace
from dnnlab.data import from_arrays, load_dataset
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.studies.common import (
    Stopwatch,
    draw_per_class,
    summarize,
    train_seconds,
)
from dnnlab.studies.engine import Say, Stage
from dnnlab.studies.transfer.plan import (
    BOOK,
    BOOK_SECONDS,
    DIGITS_59,
    DROPOUT,
    FINETUNE_FACTORS,
    HEAD_LRS,
    HEAD_OPTIMIZERS,
    PRETRAINED,
    QUICK,
    SCRATCH_LRS,
    TUNE_SPACE,
    VARIANTS_04,
    Plan,
    default_config,
)
from dnnlab.train import evaluate, fit, resolve_device
from dnnlab.train.checkpoint import load_model
from dnnlab.train.state import LAST
from dnnlab.tune import tune

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
                     "history": res.history, "run_dir": str(run_dir)})
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


def _nan_last(loss: float) -> float:
    """A loss to minimize over, a NaN one (diverged) counted as the worst."""
    return math.inf if math.isnan(loss) else loss


def _lowest(grid: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The entry of ``grid`` with the lowest ``key`` (NaN counted as the worst)."""
    return min(grid, key=lambda g: _nan_last(g[key]))


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
    best = _lowest(grid, "val_loss")
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
    best = _lowest(grid, "val_loss")
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
    best = _lowest(grid, "val_loss")
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
    log(f"  seed {seed}: " + ", ".join(
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
    pretrained = min(choice, key=lambda v: _nan_last(choice[v]))
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
    for k, which in (("frozen5", "head5"), ("frozen5_cached", "head5"), ("frozen4", "head4"),
                     ("unfreeze2", "finetune"), ("unfreeze_all", "finetune"), ("scratch", "scratch")):
        b = searches[which]["best"]
        results[k]["optimizer"], results[k]["lr"] = b["optimizer"], b["lr"]
    results["frozen5"]["pretrained"] = f"digits04_{pretrained}"
    results["frozen5"]["pretrained_choice"] = {f"digits04_{k}": v for k, v in choice.items()}
    return {"results": results, "runs": runs, "searches": searches, "pretrained": pretrained}



# ---------------------------------------------------------------------------- the stages
@dataclass(frozen=True)
class Setup:
    """What the two stages read (picklable, as the engine asks)."""
    plan: Plan
    seeds: tuple[int, ...]
    out: Path
    device: str
    data_dir: str | None
    pretrained: str
    resume: bool
    say: Say


def part1_stage(setup: Setup, inputs: dict[str, Any]) -> dict[str, Any]:
    """Digits 0-4: default, tuned (the search reduced to its best and its table), BN, dropout."""
    r = digits04(setup.plan, list(setup.seeds), setup.out, setup.device, setup.data_dir,
                 setup.say, setup.resume)
    s = r["search"]
    return {"results": r["results"], "runs": r["runs"],
            "search": {"best_params": s.best_params, "best_value": s.best_value,
                       "rows": s.rows[:10]}}


def part2_stage(setup: Setup, inputs: dict[str, Any]) -> dict[str, Any]:
    """Digits 5-9 from 100 images per digit, reusing the saved 0-4 models."""
    return digits59(setup.plan, list(setup.seeds), setup.out, setup.pretrained, setup.device,
                    setup.data_dir, setup.say)


def _part1_models(done: dict[str, Any]) -> dict[str, Any]:
    """What part 2 takes from part 1: the models it trained (their test accuracies name them)."""
    return {k: done["digits04"]["results"][k]["test_accuracy_values"] for k in VARIANTS_04}


STAGES = (
    Stage("digits04", (), "digits 0-4: default, cross-validated search, tuned, BN, dropout",
          part1_stage),
    Stage("digits59", ("digits04",), "digits 5-9: frozen, cached, unfrozen, from scratch",
          part2_stage, takes=_part1_models, own=("pretrained",)),
)

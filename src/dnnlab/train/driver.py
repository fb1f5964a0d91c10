"""The training driver: the one epoch loop behind every model dnnlab trains.

:func:`fit` (one model) and :func:`train_many` (K models at once) are the same loop,
:class:`Trainer`, over a :class:`~dnnlab.train.backend.Backend` (the stacked MLP, or any
``nn.Module``), opened up by :class:`~dnnlab.train.callbacks.Callback` objects: early stopping,
the plateau schedule, progress, the run writer and user code all attach the same way.

Model k of a K-model run sees what it would see trained alone: the same initial weights
(``build_mlp(seed)``), the same batches (``epoch_permutation(seed)``), the same optimizer and
schedule, its own early stopping and restore-best. (Dropout masks are drawn for all K models at
once, so they differ from a single run's.)

Speed comes from a few plain ideas: the splits live on the device and batches are gathered by
index; the optimizer's per-step coefficients for a whole epoch are one device table; per-step
losses stay on the device, read once every ``CHECK_EVERY`` steps to catch divergence; evaluation
runs in large batches. A model whose loss or weights become non-finite is put back to its last
good weights (checked *before* anything is kept: good weights, best weights, checkpoints) and
stops with the first cause that applies (:func:`divergence_cause`); the others go on. When fewer
than half the models still train, the finished ones are dropped from the stack.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab import config as config_mod
from dnnlab.config import PER_MODEL_KEYS, RunConfig
from dnnlab.data import Dataset, Split
from dnnlab.data.batching import batch_slices
from dnnlab.data.caveats import split_warnings
from dnnlab.data.preprocessing import Preprocessing
from dnnlab.data.splits import split_fingerprint
from dnnlab.errors import CheckpointError, ConfigError, DataError, DnnlabError, ResumeRefused
from dnnlab.nn.mlp import build_mlp
from dnnlab.optim.flat import OPTIMIZERS
from dnnlab.optim.schedules import check_schedule, rates
from dnnlab.train import state as run_state
from dnnlab.train.backend import Backend, make_backend
from dnnlab.train.book import METRICS, Book
from dnnlab.train.callbacks import (
    Callback,
    EarlyStopping,
    Logs,
    Progress,
    ReduceLROnPlateau,
    RunWriter,
    ThreadPolicy,
)
from dnnlab.train.results import FitResult, Variant
from dnnlab.train.stack import Stack

__all__ = ["CHECK_EVERY", "FitResult", "Trainer", "Variant", "divergence_cause", "evaluate", "fit",
           "fit_tensors", "predict_proba", "resolve_device", "to_device", "train_many",
           "variant_configs"]

CHECK_EVERY = 64          # steps between divergence checks (one host sync each)
# Fuse (torch.compile) the optimizer update when a run makes at least this many parameter-updates
# (K x parameters x steps): compiling costs seconds once per shape, the fused update saves a
# fraction of a millisecond per step; benchmarks/README.md has the figures behind the threshold.
FUSE_MIN_WORK = 3e9
# A weight this large before the first step did not come from any initializer: a loaded or
# edited checkpoint scaled it (He init of a 784-input layer draws |w| < 0.2).
HUGE_START_WEIGHT = 1e3


# ---------------------------------------------------------------------- devices and evaluation
def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DnnlabError("train.device = 'cuda' but no CUDA device is visible; use --device cpu "
                          "or auto")
    return torch.device(name)


def to_device(data: Dataset, device: torch.device) -> dict[str, tuple[Tensor, Tensor]]:
    """The non-empty splits as (x, y) tensors on ``device`` (one copy each, then indexed)."""
    out = {}
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        if split is not None and len(split.y):
            out[name] = split.tensors(device)
    if "train" not in out:
        raise DnnlabError("the training split is empty; check data.classes / data.per_class / "
                          "data.limit")
    return out


@torch.inference_mode()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Mean cross-entropy and accuracy of an nn.Module over (x, y), in eval mode, in batches."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for s, e in batch_slices(len(y), batch_size):
        logits = model(x[s:e])
        loss_sum += F.cross_entropy(logits, y[s:e], reduction="sum")
        correct += (logits.argmax(1) == y[s:e]).sum()
    model.train(was_training)
    n = max(len(y), 1)
    return {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}


@torch.inference_mode()
def predict_proba(model: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    model.eval()
    return torch.cat([F.softmax(model(x[s:e]), 1) for s, e in batch_slices(len(x), batch_size)])


# ---------------------------------------------------------------------- the K models' configs
def variant_configs(cfg: RunConfig, variants: list[Variant]) -> list[RunConfig]:
    """Each variant's full config; raise ConfigError if they are not all of one stack."""
    if not variants:
        raise ConfigError("train_many needs at least one Variant")
    configs = []
    for v in variants:
        bad = sorted(set(v.overrides) - PER_MODEL_KEYS)
        if bad:
            hint = ("pass the seed as Variant.seed" if bad[0] == "train.seed" else
                    "the K-model engine trains models of one shape on one dataset together; "
                    "group variants that differ in it into separate runs (dnnlab sweep groups "
                    "them by config.group_key)")
            raise ConfigError(f"override {bad[0]!r} cannot differ between the models of one "
                              f"K-model run: {hint}. Per-model keys: "
                              f"{', '.join(sorted(PER_MODEL_KEYS))}")
        configs.append(config_mod.replace(cfg, **v.overrides, **{"train.seed": int(v.seed)}))
    return configs


def divergence_cause(cfg: RunConfig, start_max_abs: float) -> str:
    """Why a model's loss or weights became non-finite: the first cause that applies, with its
    fix, before the learning rate (which is blamed only when nothing else explains it).

    A pure function of the model's config and the largest weight it started from; the data was
    checked for non-finite values before training (:meth:`Trainer.__init__`).
    """
    o, m, s = cfg.optim, cfg.model, cfg.optim.schedule
    if not math.isfinite(start_max_abs) or start_max_abs > HUGE_START_WEIGHT:
        return (f"The weights were already huge before the first step (largest |w| = "
                f"{start_max_abs:.3g}): the loaded checkpoint or model is damaged or scaled; "
                "load the right one or train from a fresh initialization")
    peak = o.lr
    if s.name == "piecewise" and s.values:
        peak = max(s.values)
    elif s.name == "1cycle" and s.max_lr is not None:
        peak = s.max_lr
    if peak > 1.0 and peak > o.lr:
        return (f"The schedule raises the rate to {peak:.3g} (optim.schedule); keep its values "
                "at or below about 0.1")
    for key, value in (("model.l1", m.l1), ("model.l2", m.l2), ("optim.weight_decay",
                                                                o.weight_decay)):
        if value * o.lr > 0.5 or value > 1.0:
            return (f"{key} = {value:.3g} is so large that the penalty alone throws the weights "
                    f"around (with optim.lr = {o.lr:.3g}); use a value around 1e-4 to 1e-2")
    if OPTIMIZERS[o.name].uses_eps and o.eps < 1e-10:
        return (f"optim.eps = {o.eps:.3g} is too small for {o.name}: a parameter whose gradients "
                "stay near 0 gets a step of lr * g / eps; use the default 1e-7")
    return (f"Try a lower optim.lr (now {o.lr:.3g}) or gradient clipping "
            "(optim.clip_norm = 1.0)")


# ---------------------------------------------------------------------- the loop
class Trainer:
    """One training run of the backend's K models; :meth:`run` is the epoch loop.

    ``configs`` are the K models' full configs (one stack). ``callbacks`` open the loop (see
    :mod:`dnnlab.train.callbacks`); early stopping, the plateau schedule and (with
    ``progress``) the progress bar are added here. ``rate_fn(steps) -> rates`` replaces the
    configured schedule (the LR finder's ramp); ``max_steps`` ends the run after that many steps.
    ``test`` is evaluated on each finished model (its best weights) before ``on_train_end``.

    The trainer speaks model indices only: the rows of the backend, and everything that follows
    them (optimizer, snapshots, per-model columns), are the :class:`~dnnlab.train.stack.Stack`'s.
    Callbacks see it as a :class:`~dnnlab.train.callbacks.RunView`.
    """

    def __init__(self, backend: Backend, configs: list[RunConfig], train: tuple[Tensor, Tensor],
                 valid: tuple[Tensor, Tensor] | None, test: tuple[Tensor, Tensor] | None = None,
                 *, callbacks: Iterable[Callback] = (), progress: bool = True,
                 rate_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                 max_steps: int | None = None, variants: list[Variant] | None = None,
                 warnings: Sequence[str] = ()):
        self.configs = configs
        t = configs[0].train
        if t.monitor not in METRICS:
            raise ConfigError(f"train.monitor = {t.monitor!r} is not a logged metric; choose one "
                              f"of: {', '.join(METRICS)}")
        self.x, self.y = train
        self.valid = valid if valid is not None and len(valid[1]) else None
        self.test = test if test is not None and len(test[1]) else None
        self.n = len(self.y)
        if t.batch_size > self.n:
            raise ConfigError(f"train.batch_size = {t.batch_size} is larger than the {self.n} "
                              f"training examples; use at most {self.n} (or more data)")
        if self.valid is None and t.monitor.startswith("val_"):
            raise ConfigError(f"train.monitor = {t.monitor!r} needs a validation split, and this "
                              "data has none; set data.valid_size > 0 or monitor 'loss'")
        self.epochs, self.eval_batch = t.epochs, t.eval_batch_size
        self.slices = batch_slices(self.n, t.batch_size)
        self.steps_per_epoch = len(self.slices)
        for c in configs:                              # every variant's schedule, before any work
            check_schedule(c.optim, self.steps_per_epoch, c.train.epochs)
        self.device = self.x.device
        self.batch_sizes = torch.tensor([e - s for s, e in self.slices], device=self.device,
                                        dtype=torch.float32)
        steps = self.steps_per_epoch * self.epochs if max_steps is None else max_steps
        self.stack = Stack(backend, configs,
                           fuse=t.fast and backend.flat.numel() * steps >= FUSE_MIN_WORK)
        self.rate_fn, self.max_steps = rate_fn, max_steps
        self.variants = variants or [Variant(c.train.seed) for c in configs]
        self.warnings = list(warnings)           # data.caveats.split_warnings, for every result
        k = len(configs)
        self.book = Book(k, t.monitor, [c.train.min_delta for c in configs])
        self.lr_scale = np.ones(k)
        self.results: list[FitResult | None] = [None] * k
        self.start_epoch = 1
        self.steps_done = 0
        self._batch_buffers: dict[int, tuple[Tensor, Tensor]] = {}   # see batch()
        extra: list[Callback] = [EarlyStopping(), ReduceLROnPlateau()]
        if self.device.type == "cpu" and not t.deterministic:
            extra.append(ThreadPolicy())    # threads follow the load: results to float rounding
        if progress and t.progress:
            extra.append(Progress())
        self.callbacks = sorted([*extra, *callbacks], key=lambda cb: cb.order)
        keys = [cb.state_key for cb in self.callbacks]
        if len(set(keys)) != len(keys):
            raise DnnlabError(f"two callbacks share the state_key {_first_repeat(keys)!r}; give "
                              "each callback a state_key of its own")

    # ------------------------------------------------------------------ what callbacks see
    def model(self, i: int, *, best: bool = False) -> nn.Module:
        """Model i (a model index) with its live or its best weights (read it: see
        :meth:`Backend.model_at`)."""
        return self.stack.model(i, best=best)

    def set_lr_scale(self, i: int, scale: float) -> None:
        """Model i's rate multiplier from the next epoch on (the plateau schedule's)."""
        self.lr_scale[i] = scale

    # ------------------------------------------------------------------ one epoch's inputs
    def lr_table(self, epoch0: int) -> tuple[Tensor, dict[int, float]]:
        """The optimizer's (steps, C, K, 1) coefficients for epoch ``epoch0`` (0-based) and each
        model's rate at the epoch's end (what is logged)."""
        spe = self.steps_per_epoch
        steps = epoch0 * spe + np.arange(spe)
        lrs, moms, logged = {}, {}, {}
        for i in self.stack.models:
            c = self.configs[i].optim
            if self.rate_fn is not None:
                lr, mom, end = self.rate_fn(steps), None, self.rate_fn(steps[-1:] + 1)
            else:
                lr, mom = rates(c, steps, epoch0, spe, self.epochs)
                end, _ = rates(c, np.array([(epoch0 + 1) * spe]), epoch0, spe, self.epochs)
            mult = self.lr_scale[i]
            lrs[i] = lr * mult * (0.0 if i in self.book.ended else 1.0)
            moms[i] = mom if mom is not None else np.full(spe, c.momentum)
            logged[i] = float(end[0] * mult)
        one_cycle = any(self.configs[i].optim.schedule.name == "1cycle" for i in self.stack.models)
        return self.stack.table(lrs, moms if one_cycle else None), logged

    def batch(self, perm: Tensor, s: int, e: int) -> tuple[Tensor, Tensor]:
        """The batch [s, e) of this epoch, gathered on the device: (B, D) shared, or (K, B, D)."""
        idx = perm[..., s:e]
        flat_idx = idx.reshape(-1)
        # into buffers kept between steps: on a CPU a fresh (K * B, D) tensor each step is fresh
        # memory pages each time, mapped and zeroed by the OS before the copy can start
        key = len(flat_idx)
        if key not in self._batch_buffers:
            self._batch_buffers[key] = (self.x.new_empty((key, *self.x.shape[1:])),
                                        self.y.new_empty((key, *self.y.shape[1:])))
        xb, yb = self._batch_buffers[key]
        torch.index_select(self.x, 0, flat_idx, out=xb)
        torch.index_select(self.y, 0, flat_idx, out=yb)
        if self.stack.shared_batches:
            return xb, yb
        k, b = idx.shape
        return xb.view(k, b, *self.x.shape[1:]), yb.view(k, b)

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[FitResult]:
        """Train until every model has ended or the last epoch is done; every model's result."""
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self)
            for i in self.stack.models:                     # ended before a resume
                if i in self.book.ended:
                    self._finish(i, *self.book.ended[i])
            for epoch in range(self.start_epoch, self.epochs + 1):
                if not self.book.training():
                    break
                self._epoch(epoch)
                self._compact()
            for i in self.book.training():
                self._finish(i, "completed", "")
            results = [r for r in self.results if r is not None]
            self._evaluate_test(results)
        except BaseException:
            for cb in self.callbacks:
                cb.on_train_end(self, None)
            raise
        for cb in self.callbacks:
            cb.on_train_end(self, results)
        return results

    def _epoch(self, epoch: int) -> None:
        """One epoch: every step of every live model, then :meth:`_end_epoch`."""
        stack = self.stack
        t0 = time.perf_counter()
        for cb in self.callbacks:
            cb.on_epoch_begin(self, epoch)
        table, self.logged_lr = self.lr_table(epoch - 1)   # per-step coefficients
        perm = stack.batch_order(self.n, epoch - 1)        # each model's batch order
        spe = self.steps_per_epoch
        losses = torch.zeros(spe, stack.k, device=self.device)   # per-step loss, on the device
        correct = torch.zeros(stack.k, device=self.device, dtype=torch.long)
        stack.backend.train()
        checked = i = 0
        for i, (s, e) in enumerate(self.slices):
            xb, yb = self.batch(perm, s, e)
            loss, hits = stack.step(xb, yb, table[i])
            losses[i] = loss
            correct += hits
            self.steps_done += 1
            last = i + 1 == spe or self.steps_done == self.max_steps
            if (i + 1) % CHECK_EVERY == 0 and not last:   # one host sync: divergence
                self._check(epoch, losses, checked, i + 1)
                self._steps_end(epoch, losses, checked, i + 1)
                checked = i + 1
                if not self.book.training():
                    break
            if last:
                break
        self._steps_end(epoch, losses, checked, i + 1)
        self._end_epoch(epoch, losses[:i + 1], correct, checked, time.perf_counter() - t0)

    def _steps_end(self, epoch: int, losses: Tensor, lo: int, hi: int) -> None:
        by_model = self.stack.per_model(losses[lo:hi])
        for cb in self.callbacks:
            cb.on_steps_end(self, epoch, by_model, lo, hi)

    def _check(self, epoch: int, losses: Tensor, lo: int, hi: int) -> None:
        """Mid-epoch divergence check of steps [lo, hi): models whose loss or weights are not
        finite get their last good weights back and stop; the others' weights become good."""
        ok = torch.isfinite(losses[lo:hi]).all(0) & self.stack.weights_finite()
        self._mark_diverged(epoch, losses, lo, self.stack.per_model(ok.cpu().numpy()))
        self.stack.keep_good(self.book.training())

    def _mark_diverged(self, epoch: int, losses: Tensor, lo: int, ok: Mapping[int, Any]) -> None:
        """Models still training whose ``ok`` is False end as diverged, with their last good
        weights back and the cause (:func:`divergence_cause`)."""
        for i in self.book.training():
            if ok[i]:
                continue
            col = self.stack.per_model(losses[lo:])[i].cpu().numpy()
            bad = np.flatnonzero(~np.isfinite(col))
            where = (f"the loss became {col[bad[0]]} at epoch {epoch}, step {lo + bad[0] + 1}"
                     if len(bad) else f"the weights became non-finite at epoch {epoch}")
            cause = divergence_cause(self.configs[i], float(self.stack.start_max_abs[i]))
            self.book.end(i, "diverged", f"{where}; training stopped with the last good weights "
                          f"kept. {cause}")
            self.stack.restore_good(i)

    def _end_epoch(self, epoch: int, losses: Tensor, correct: Tensor, checked: int,
                   seconds: float) -> None:
        """The epoch's one host sync, then its jobs in order: the divergence check, each model's
        metrics and best weights, the callbacks' stops, the export of the models that ended."""
        sums = self._epoch_sums(losses, correct, checked)
        ok = {i: s[4] > 0 and np.isfinite(s[0]) and (np.isfinite(s[2]) or self.valid is None)
              for i, s in sums.items()}
        self._mark_diverged(epoch, losses, checked, ok)
        self.stack.keep_good(self.book.training())         # checked: now these weights are good
        logs = self._record(epoch, sums, float(self.batch_sizes[:len(losses)].sum()), seconds)
        self._callback_stops(epoch, logs)
        for i in self.stack.models:                        # ended this epoch: exported now,
            if i in self.book.ended and self.results[i] is None:   # before any compaction
                self._finish(i, *self.book.ended[i])

    def _epoch_sums(self, losses: Tensor, correct: Tensor, checked: int) -> dict[int, np.ndarray]:
        """Per model, in one host sync: [summed loss, correct, summed val loss, val correct,
        all finite since the last check (1 or 0)]."""
        stack = self.stack
        finite = torch.isfinite(losses[checked:]).all(0) & stack.weights_finite()
        loss_sum = (losses * self.batch_sizes[:len(losses), None]).sum(0)
        if self.valid is not None:
            val_loss, val_correct = stack.evaluate(*self.valid, self.eval_batch)
        else:
            val_loss = torch.full((stack.k,), math.nan, device=self.device)
            val_correct = torch.zeros(stack.k, device=self.device)
        sums: np.ndarray = torch.stack([loss_sum, correct.to(loss_sum.dtype), val_loss,
                                        val_correct.to(loss_sum.dtype),
                                        finite.to(loss_sum.dtype)]).cpu().double().numpy()
        return stack.per_model(sums)

    def _record(self, epoch: int, sums: Mapping[int, np.ndarray], n_seen: float,
                seconds: float) -> Logs:
        """Each model still training: its epoch's metrics into the book, its weights kept as
        its best when the monitored metric improved. Returns the logs the callbacks get."""
        n_valid = len(self.valid[1]) if self.valid is not None else 1
        logs: Logs = {}
        improved = []
        for i in self.book.training():
            s = sums[i]
            logs[i] = {"epoch": epoch, "loss": float(s[0] / n_seen),
                       "accuracy": float(s[1] / n_seen), "val_loss": float(s[2] / n_valid),
                       "val_accuracy": float(s[3] / n_valid) if self.valid is not None
                       else math.nan, "lr": self.logged_lr[i], "seconds": seconds}
            if self.book.record(i, logs[i]):
                improved.append(i)
        self.stack.keep_best(improved)
        return logs

    def _callback_stops(self, epoch: int, logs: Logs) -> None:
        """``on_epoch_end`` of every callback, in order; the models one stops end at once."""
        for cb in self.callbacks:
            asked = cb.on_epoch_end(self, epoch, logs)
            if asked and epoch < self.epochs:             # at the last epoch the run completes
                reasons = asked if isinstance(asked, Mapping) else {
                    i: f"stopped by {type(cb).__name__}" for i in asked}
                for i, why in reasons.items():
                    if i in logs:
                        self.book.end(i, "stopped_early", why)

    def _finish(self, i: int, status: str, message: str) -> None:
        """Export model i (best, last good or live weights) as its result."""
        self.book.end(i, status, message)
        restore = self.configs[i].train.restore_best and self.book.best_epoch[i] > 0
        weights: Literal["best", "good", "live"] = (
            "best" if restore else "good" if status == "diverged" else "live")
        self.results[i] = FitResult(
            model=self.stack.export(i, weights), history=self.book.history[i],
            best_epoch=int(self.book.best_epoch[i]), best=self.book.best_value(i),
            monitor=self.book.monitor, status=status, message=message,
            variant=self.variants[i], config=self.configs[i], warnings=list(self.warnings))

    def _evaluate_test(self, results: list[FitResult]) -> None:
        if self.test is None:
            return
        for r in results:
            if r.status != "diverged":
                te = evaluate(r.model.to(self.device), *self.test, self.eval_batch)
                r.test = {"test_loss": te["loss"], "test_accuracy": te["accuracy"]}

    def _compact(self) -> None:
        """Drop finished models from the stack when fewer than half are still training."""
        live = self.book.training()
        if live and len(live) * 2 < self.stack.k:
            self.stack.compact(live)

    # ------------------------------------------------------------------ resume
    def state_dict(self, epoch: int) -> dict[str, Any]:
        """Everything a resume needs after ``epoch``: the state dicts of the backend, the
        optimizer, the bookkeeping and each callback, the best weights and the random state."""
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        stack = self.stack.state_dict()
        return {"epoch": epoch, "steps_done": self.steps_done,
                "backend": stack["backend"], "optim": stack["optim"],
                "book": self.book.state_dict(), "best": stack["best"], "rng": rng,
                "callbacks": {cb.state_key: s for cb in self.callbacks if (s := cb.state_dict())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (a run stopped early resumes to itself)."""
        epoch = int(state["epoch"])
        if not 0 <= epoch <= self.epochs:
            raise ResumeRefused(f"the saved state is after epoch {epoch}, beyond train.epochs = "
                                f"{self.epochs}; resume with --epochs {epoch} or more")
        self.stack.load_state_dict(state)
        self.book.load_state_dict(state["book"])
        if any(len(h["epoch"]) > epoch for h in self.book.history):
            raise ValueError(f"its history is longer than its epoch {epoch}")
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
        torch.set_rng_state(state["rng"]["cpu"].cpu())
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
        self.steps_done = int(state["steps_done"])
        self.start_epoch = epoch + 1


def _first_repeat(items: Sequence[str]) -> str:
    seen: set[str] = set()
    for x in items:
        if x in seen:
            return x
        seen.add(x)
    return ""


def _check_finite(*splits: tuple[Tensor, Tensor] | None) -> None:
    """Refuse data with NaN or infinite values before any step (the loss would be blamed)."""
    for name, split in zip(("training", "validation", "test"), splits):
        if split is not None and split[0].is_floating_point():
            bad = int((~torch.isfinite(split[0])).sum())
            if bad:
                raise DataError(f"the {name} data holds {bad} non-finite values (NaN or inf); "
                                "clean or impute them before training")


# ---------------------------------------------------------------------- entry points
def fit(cfg: RunConfig, data: Dataset, run_dir: str | Path | None = None, *,
        model: nn.Module | None = None, resume: bool = False,
        callbacks: Iterable[Callback] = (), evaluate_test: bool = True) -> FitResult:
    """Train ``model`` (by default the MLP that ``cfg.model`` describes) on ``data``.

    Args:
        cfg: the run's config (its ``train`` section sets epochs, batch, early stopping ...).
        data: the splits; training runs on ``train``, early stopping watches ``valid``, and
            ``test`` is evaluated on the returned model (unless ``evaluate_test=False``).
        run_dir: where the run writes config, data fingerprint, metrics.csv, checkpoints, the
            resume state and the final model (default None: nothing is written).
        model: the module to train in place (default: ``build_mlp(cfg.model, seed)``). A plain
            dnnlab MLP trains on the stacked backend (the fast step) when ``train.fast``; any
            other module, or an MLP with frozen layers or pruning hooks, on the module backend.
            Only parameters with ``requires_grad`` are optimized.
        resume: continue ``run_dir`` from its last checkpoint; the data must be the data the run
            started with (its fingerprint), else :class:`~dnnlab.errors.ResumeRefused`.
        callbacks: :class:`~dnnlab.train.callbacks.Callback` objects (K = 1: model index 0).

    Returns the :class:`FitResult`; ``result.model`` is ``model`` with the restored-best weights.
    The doctor's layer records are added by :func:`dnnlab.runs.fit`, the API's entry point.
    """
    tensors = to_device(data, resolve_device(cfg.train.device))
    if model is None:
        model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=cfg.train.seed)
    # a Dataset's arrays were checked for NaN and inf when it was made; its fingerprint (a hash
    # of every split) is needed only where a run directory records it
    return _fit_on_device(cfg, model, tensors["train"], tensors.get("valid"), tensors.get("test"),
                          run_dir=run_dir, resume=resume, callbacks=callbacks,
                          evaluate_test=evaluate_test,
                          data_fingerprint=data.fingerprint() if run_dir is not None else None,
                          warnings=split_warnings(data.train.y, data.valid.y,
                                                  data.test.y if evaluate_test else None,
                                                  data.class_names),
                          preprocessing=data.preprocessing())


def fit_tensors(cfg: RunConfig, model: nn.Module, train: tuple[Tensor, Tensor],
                valid: tuple[Tensor, Tensor] | None = None,
                test: tuple[Tensor, Tensor] | None = None, *, run_dir: str | Path | None = None,
                resume: bool = False, callbacks: Iterable[Callback] = (),
                evaluate_test: bool = True,
                data_fingerprint: dict[str, str] | None = None,
                preprocessing: Preprocessing | None = None) -> FitResult:
    """:func:`fit` on (x, y) tensors already on the device (e.g. cached features).

    ``data_fingerprint`` identifies the arrays for a run directory (default: computed from the
    tensors, as :meth:`dnnlab.data.Dataset.fingerprint` does); ``preprocessing`` is saved with
    the final model (default None: none is recorded). Non-finite values in the tensors
    are refused here (a :class:`~dnnlab.data.Dataset` checks its own when it is made).
    """
    _check_finite(train, valid, test)
    valid_y = np.zeros(0, np.int64) if valid is None else valid[1].cpu().numpy()   # none: empty
    test_y = test[1].cpu().numpy() if test is not None and evaluate_test else None  # not measured
    return _fit_on_device(cfg, model, train, valid, test, run_dir=run_dir, resume=resume,
                          callbacks=callbacks, evaluate_test=evaluate_test,
                          data_fingerprint=data_fingerprint, preprocessing=preprocessing,
                          warnings=split_warnings(train[1].cpu().numpy(), valid_y, test_y))


def _fit_on_device(cfg: RunConfig, model: nn.Module, train: tuple[Tensor, Tensor],
                   valid: tuple[Tensor, Tensor] | None, test: tuple[Tensor, Tensor] | None, *,
                   run_dir: str | Path | None, resume: bool, callbacks: Iterable[Callback],
                   evaluate_test: bool, data_fingerprint: dict[str, str] | None,
                   warnings: list[str], preprocessing: Preprocessing | None) -> FitResult:
    """The one body of :func:`fit` and :func:`fit_tensors`."""
    t = cfg.train
    device = train[0].device
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(t.seed)
    if not any(p.requires_grad for p in model.parameters()):
        raise DnnlabError("the model has no trainable parameters (every layer is frozen)")
    cbs = list(callbacks)
    if run_dir is not None:
        if data_fingerprint is None:
            data_fingerprint = _fingerprint_tensors(train, valid, test)
        if resume:                                   # before anything is written
            run_state.check_resume(Path(run_dir), cfg, data_fingerprint)
        cbs.append(RunWriter(Path(run_dir), cfg, resumed=resume,
                             data_fingerprint=data_fingerprint, preprocessing=preprocessing))
    elif resume:
        raise DnnlabError("resume needs a run directory")
    backend = make_backend([model], device, fast=t.fast, seed=t.seed)
    try:
        trainer = Trainer(backend, [cfg], train, valid, test if evaluate_test else None,
                          callbacks=cbs, warnings=warnings)
        if resume:
            assert run_dir is not None
            state = run_state.load(Path(run_dir), trainer.state_dict(0), device)
            try:
                trainer.load_state_dict(state)
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise CheckpointError(f"{Path(run_dir) / run_state.LAST} is damaged ({e}); delete "
                                      "it to start the run over") from None
        (result,) = trainer.run()
    finally:
        backend.close()
    if result.model is not model:                          # stacked: the caller's module
        model.load_state_dict(result.model.state_dict())
        result.model = model
    result.model.to(device)
    return result


def _fingerprint_tensors(*splits: tuple[Tensor, Tensor] | None) -> dict[str, str]:
    out = {}
    for name, split in zip(("train", "valid", "test"), splits):
        if split is not None and len(split[1]):
            out[name] = split_fingerprint(Split(split[0].cpu().numpy(), split[1].cpu().numpy()))
    return out


def train_many(cfg: RunConfig, data: Dataset, variants: list[Variant], *, device: str = "auto",
               progress: bool = True, callbacks: Iterable[Callback] = ()) -> list[FitResult]:
    """Train one model per variant of ``cfg`` at once; return their results in variant order.

    Args:
        cfg: the config every variant starts from.
        data: the data all of them train on (one stack, one dataset).
        variants: each model's seed and overrides; overrides may name only the keys of
            :data:`dnnlab.config.PER_MODEL_KEYS` (anything else raises ConfigError: train
            differently shaped variants in separate calls, as ``dnnlab sweep`` does).
        device: ``"auto"`` means ``cfg.train.device``.
        progress: show the progress bar (also needs ``train.progress``).
        callbacks: :class:`~dnnlab.train.callbacks.Callback` objects; ``logs`` holds every model
            still training, by variant index, and a callback may stop some (pruned trials).

    Each result's ``model`` is on the CPU, with ``test`` filled when ``data`` has a test split.
    """
    configs = variant_configs(cfg, variants)
    dev = resolve_device(cfg.train.device if device == "auto" else device)
    tensors = to_device(data, dev)
    models = [build_mlp(c.model, data.n_features, data.n_classes, seed=c.train.seed)
              for c in configs]
    stack = make_backend(models, dev, fast=True, seed=configs[0].train.seed)
    try:
        trainer = Trainer(stack, configs, tensors["train"], tensors.get("valid"),
                          tensors.get("test"), progress=progress, callbacks=callbacks,
                          variants=variants, warnings=split_warnings(
                              data.train.y, data.valid.y, data.test.y, data.class_names))
        results = trainer.run()
    finally:
        stack.close()
    for r in results:
        r.model.cpu()
    return results

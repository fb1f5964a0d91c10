"""The training driver: the one epoch loop behind every model dnnlab trains.

:func:`fit` (one model) and :func:`train_many` (K models at once) are the same loop,
:class:`Trainer`, over one of two backends with one small interface (``train_step``,
``evaluate``, ``flat``/``grad`` buffers, snapshots, ``export``):

* :class:`~dnnlab.train.stacked.StackedMLP`: K >= 1 MLPs of one shape, stacked weights, a
  hand-written backward pass. Every MLP the config describes trains here, alone or with others.
* :class:`~dnnlab.train.module.ModuleBackend`: any ``nn.Module`` (K = 1) with autograd: frozen
  layers, transfer heads, pruning masks, user models.

Both keep their parameters in a (K, N) buffer, so the optimizer (:mod:`dnnlab.optim.flat`),
clipping, the L1/L2 penalty and max-norm are written once, and each model has its own
hyperparameters as (K, 1) columns. Model k of a K-model run sees what it would see trained alone:
the same initial weights (``build_mlp(seed)``), the same batches (``epoch_permutation(seed)``), the
same optimizer and schedule, its own early stopping and restore-best. (Dropout masks are drawn for
all K models at once, so they differ from a single run's.)

Speed comes from a few plain ideas: the splits live on the device and batches are gathered by
index; the optimizer's per-step coefficients for a whole epoch are one device table; per-step
losses stay on the device, read once every ``CHECK_EVERY`` steps to catch divergence; evaluation
runs in large batches. A model whose loss or weights become non-finite is put back to its last
good weights (checked *before* anything is kept: good weights, best weights, checkpoints) and
stops; the others go on. When fewer than half the models still train, the finished ones are
dropped from the stack so they stop costing work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab import config as config_mod
from dnnlab.config import RunConfig
from dnnlab.data import Dataset
from dnnlab.data.batching import batch_slices, epoch_permutation
from dnnlab.doctor.record import callbacks_for
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.nn.mlp import MLP, build_mlp
from dnnlab.optim.flat import FlatOptimizer, clip_
from dnnlab.optim.schedules import Plateau, check_schedule, rates
from dnnlab.train.callbacks import Progress, RunWriter
from dnnlab.train.module import ModuleBackend
from dnnlab.train.stacked import StackedMLP

CHECK_EVERY = 64          # steps between divergence checks (one host sync each)
METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
METRICS = tuple(c for c in METRIC_COLUMNS if c != "epoch")
# Fuse (torch.compile) the optimizer update when a run makes at least this many parameter-updates
# (K x parameters x steps). Measured on the 2-core CI machine (1 thread), the chapter's 20 x 100
# net (330k parameters, Nadam): the fused update takes 0.31 ms a step against 1.0 ms eager, so
# it saves ~1 s per 45,000-image epoch, and compiling costs ~5 s the first time for a shape
# (Inductor's cache on disk makes it ~1-2 s after that): it pays from ~5 such epochs on,
# ~2.3e9 parameter-updates. Shorter runs (tests, quick studies) stay eager.
FUSE_MIN_WORK = 3e9

_SCHEDULE_KEYS = ("name", "decay_steps", "power", "boundaries", "values", "factor", "patience",
                  "max_lr", "pct_start", "div_factor", "final_div_factor", "unit")
PER_MODEL_KEYS = frozenset(
    [f"optim.{k}" for k in ("lr", "momentum", "beta1", "beta2", "rho", "eps", "weight_decay",
                            "initial_accumulator", "l1", "l2", "clip_norm", "clip_value",
                            "global_clip_norm")]
    + [f"optim.schedule.{k}" for k in _SCHEDULE_KEYS]
    + [f"model.{k}" for k in ("dropout", "input_dropout", "l1", "l2", "max_norm", "init",
                              "init_value", "bias_init", "bias_value")]
    + ["train.patience", "train.min_delta"])
"""Dotted config keys that may differ between the models of one run (plus ``Variant.seed``)."""


@dataclass
class Variant:
    """One model of the K: its seed (init, batch order) and its per-model config overrides."""
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """What training one model produced. ``model`` holds the restored-best weights (if asked)."""
    model: nn.Module
    history: dict[str, list[float]]
    best_epoch: int
    best: float
    monitor: str
    status: str                       # completed | stopped_early | diverged
    message: str = ""
    test: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    variant: Variant | None = None    # train_many: which variant this is
    config: RunConfig | None = None   # the model's own full config

    @property
    def epochs_run(self) -> int:
        return len(self.history["epoch"])

    @property
    def seconds_per_epoch(self) -> float:
        s = self.history["seconds"]
        return float(sorted(s)[len(s) // 2]) if s else float("nan")

    def summary(self) -> dict[str, Any]:
        h = self.history
        i = h["epoch"].index(self.best_epoch) if self.best_epoch in h["epoch"] else -1
        out = {"status": self.status, "message": self.message, "monitor": self.monitor,
               "best_epoch": self.best_epoch, "best": self.best, "epochs_run": self.epochs_run,
               "best_val_loss": h["val_loss"][i] if h["val_loss"] else None,
               "best_val_accuracy": h["val_accuracy"][i] if h["val_accuracy"] else None,
               "seconds_per_epoch": self.seconds_per_epoch, "total_seconds": sum(h["seconds"])}
        out.update(self.test)
        return out


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
    """Each variant's full config; raise ConfigError if they are not all of one shape."""
    if not variants:
        raise ConfigError("train_many needs at least one Variant")
    configs = []
    for v in variants:
        bad = sorted(set(v.overrides) - PER_MODEL_KEYS)
        if bad:
            hint = ("pass the seed as Variant.seed" if bad[0] == "train.seed" else
                    "the K-model engine trains models of one shape together; group variants that "
                    "differ in it into separate runs (dnnlab sweep groups them by shape)")
            raise ConfigError(f"override {bad[0]!r} cannot differ between the models of one "
                              f"K-model run: {hint}. Per-model keys: "
                              f"{', '.join(sorted(PER_MODEL_KEYS))}")
        configs.append(config_mod.replace(cfg, **v.overrides, **{"train.seed": int(v.seed)}))
    return configs


def _column(values: list[float | None], default: float, like: Tensor) -> Tensor | None:
    """A (K, 1) device column of per-model values (None -> default); None if all are default."""
    vals = [default if v is None else float(v) for v in values]
    if all(v == default for v in vals):
        return None
    return torch.tensor(vals, dtype=like.dtype, device=like.device).view(-1, 1)


def stackable(model: nn.Module) -> bool:
    """True for a plain dnnlab MLP the stacked backend can train exactly as the module would:
    every parameter trainable, no hooks (pruning masks), no layer pinned in eval mode."""
    if type(model) is not MLP:
        return False
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks or "train" in vars(m):
            return False
    return all(p.requires_grad for p in model.parameters()) and all(
        name in dict(model.named_parameters()) for name in
        (k for k in model.state_dict() if not k.endswith(("running_mean", "running_var",
                                                          "num_batches_tracked"))))


# ---------------------------------------------------------------------- the loop
class Trainer:
    """One training run of the backend's K models; :meth:`run` is the epoch loop.

    ``configs`` are the K models' full configs (one shape). ``callbacks`` are functions
    ``(trainer, epoch, metrics_by_model) -> None | True | iterable of model indices`` called after
    every epoch; True stops every model, indices stop those. ``rate_fn(steps) -> rates`` replaces
    the configured schedule (the LR finder's ramp); ``max_steps`` ends the run after that many
    steps; ``keep_step_losses`` keeps every step's loss (``step_losses``).
    """

    def __init__(self, backend, configs: list[RunConfig], train: tuple[Tensor, Tensor],
                 valid: tuple[Tensor, Tensor] | None, *, progress: bool = True,
                 callbacks: Iterable[Callable] = (), writer: RunWriter | None = None,
                 rate_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                 max_steps: int | None = None, keep_step_losses: bool = False,
                 variants: list[Variant] | None = None):
        self.backend, self.configs = backend, configs
        cfg = configs[0]
        t = cfg.train
        self.monitor, self.epochs, self.eval_batch = t.monitor, t.epochs, t.eval_batch_size
        if self.monitor not in METRICS:
            raise DnnlabError(f"train.monitor = {self.monitor!r} is not a logged metric; choose one "
                              f"of: {', '.join(METRICS)}")
        self.x, self.y = train
        self.valid = valid
        self.n = len(self.y)
        self.slices = batch_slices(self.n, t.batch_size)
        for c in configs:                              # every variant's schedule, before any work
            check_schedule(c.optim, len(self.slices), c.train.epochs)
        self.device = self.x.device
        self.batch_sizes = torch.tensor([e - s for s, e in self.slices], device=self.device,
                                        dtype=torch.float32)
        self.opt = FlatOptimizer.from_configs([c.optim for c in configs], backend.flat,
                                              backend.grad)
        steps = len(self.slices) * self.epochs if max_steps is None else max_steps
        if t.fast and backend.flat.numel() * steps >= FUSE_MIN_WORK:
            self.opt.fuse()
        self.rate_fn, self.max_steps, self.keep_step_losses = rate_fn, max_steps, keep_step_losses
        self.step_losses: list[Tensor] = []
        self.callbacks, self.writer = list(callbacks), writer
        self.variants = variants or [Variant(c.train.seed) for c in configs]
        k = len(configs)
        self.ids = np.arange(k)                        # slot (row of the stack) -> model index
        self.plateaus = [Plateau(c.optim) for c in configs]
        self.sign = 1.0 if "loss" in self.monitor else -1.0   # sign * value: smaller is better
        self.best = np.full(k, math.inf)
        self.best_epoch = np.zeros(k, dtype=int)
        self.wait = np.zeros(k, dtype=int)
        self.history = [{c: [] for c in METRIC_COLUMNS} for _ in range(k)]
        self.results: list[FitResult | None] = [None] * k
        self.diverged: dict[int, str] = {}             # model index -> message, mid-epoch
        self.best_snap = backend.snapshot()
        self.good_snap = backend.snapshot()
        self.start_epoch = 1
        self.steps_done = 0
        self._batch_buffers: dict[int, tuple[Tensor, Tensor]] = {}   # see batch()
        self.bar = Progress(self.epochs, len(self.slices), enabled=progress and t.progress,
                            models=k, total=max_steps)
        self._columns()

    # ------------------------------------------------------------------ per-model columns
    def _columns(self) -> None:
        cs = [self.configs[i] for i in self.ids]
        like = self.backend.flat
        self.l1 = _column([c.model.l1 for c in cs], 0.0, like)
        self.l2 = _column([c.model.l2 for c in cs], 0.0, like)
        self.clip_value = _column([c.optim.clip_value for c in cs], math.inf, like)
        self.clip_norm = _column([c.optim.clip_norm for c in cs], math.inf, like)
        self.global_clip_norm = _column([c.optim.global_clip_norm for c in cs], math.inf, like)
        mn = _column([c.model.max_norm for c in cs], math.inf, like)
        self.max_norm = None if mn is None else mn.view(-1, 1, 1)
        if self.max_norm is not None and self.backend.k == 1:
            self.max_norm = self.max_norm.view(1, 1)
        self.seeds = [c.train.seed for c in cs]
        self.segments = self.backend.segments       # each parameter tensor's columns (clipping)
        self.shared_batches = len(set(self.seeds)) == 1 or isinstance(self.backend, ModuleBackend)

    def live(self) -> list[int]:
        """Slots whose model is still training."""
        return [j for j, i in enumerate(self.ids) if self.results[i] is None
                and int(i) not in self.diverged]

    # ------------------------------------------------------------------ one epoch's inputs
    def lr_table(self, epoch0: int) -> tuple[Tensor, np.ndarray]:
        """The optimizer's (steps, C, K, 1) coefficients for epoch ``epoch0`` (0-based) and each
        slot's rate at the epoch's end (what is logged)."""
        spe = len(self.slices)
        steps = epoch0 * spe + np.arange(spe)
        lrs, moms, logged = [], [], []
        for j, i in enumerate(self.ids):
            c = self.configs[i].optim
            if self.rate_fn is not None:
                lr, mom, end = self.rate_fn(steps), None, self.rate_fn(steps[-1:] + 1)
            else:
                lr, mom = rates(c, steps, epoch0, spe, self.epochs)
                end, _ = rates(c, np.array([(epoch0 + 1) * spe]), epoch0, spe, self.epochs)
            mult = self.plateaus[i].multiplier
            frozen = 1.0 if j in self.live() else 0.0
            lrs.append(lr * mult * frozen)
            moms.append(mom if mom is not None else np.full(spe, c.momentum))
            logged.append(end[0] * mult)
        moms_arr = np.stack(moms, 1) if any(self.configs[i].optim.schedule.name == "1cycle"
                                            for i in self.ids) else None
        return self.opt.table(np.stack(lrs, axis=1), moms_arr), np.array(logged)

    def permutation(self, epoch0: int) -> Tensor:
        """(n,) batch order when the models share a seed, else (K, n), one per model seed."""
        perms = {s: epoch_permutation(self.n, s, epoch0, self.device) for s in set(self.seeds)}
        if self.shared_batches:
            return perms[self.seeds[0]]
        return torch.stack([perms[s] for s in self.seeds])

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
        if self.shared_batches:
            return xb, yb
        k, b = idx.shape
        return xb.view(k, b, *self.x.shape[1:]), yb.view(k, b)

    # ------------------------------------------------------------------ the loop
    def run(self) -> list[FitResult]:
        b, opt = self.backend, self.opt
        spe = len(self.slices)
        self.bar.open(self.start_epoch)
        try:
            for epoch in range(self.start_epoch, self.epochs + 1):
                t0 = time.perf_counter()
                table, self.logged_lr = self.lr_table(epoch - 1)   # per-step coefficients
                perm = self.permutation(epoch - 1)                 # each model's batch order
                losses = torch.zeros(spe, b.k, device=self.device)  # per-step loss, on the device
                correct = torch.zeros(b.k, device=self.device, dtype=torch.long)
                b.train()
                checked = 0
                for i, (s, e) in enumerate(self.slices):
                    xb, yb = self.batch(perm, s, e)
                    loss, hits = b.train_step(xb, yb)             # forward, backward into b.grad
                    if self.l1 is not None or self.l2 is not None:
                        loss = loss + add_penalty_(b, self.l1, self.l2)
                    if self.clip_value is not None or self.clip_norm is not None or \
                            self.global_clip_norm is not None:
                        clip_(b.grad, self.clip_value, self.clip_norm, self.global_clip_norm,
                              self.segments)
                    opt.step(table[i])                            # every model's update at once
                    if self.max_norm is not None:
                        apply_max_norm_(b, self.max_norm)
                    losses[i] = loss
                    correct += hits
                    self.steps_done += 1
                    last = i + 1 == spe or self.steps_done == self.max_steps
                    if (i + 1) % CHECK_EVERY == 0 and not last:   # one host sync: divergence
                        self._check(epoch, losses, checked, i + 1)
                        self.bar.step(i + 1 - checked)
                        checked = i + 1
                        if not self.live():
                            break
                    if last:
                        break
                if self.keep_step_losses:
                    self.step_losses.append(losses[:i + 1].clone())
                self.bar.step(i + 1 - checked)
                self._end_epoch(epoch, losses[:i + 1], correct, checked, time.perf_counter() - t0)
                if not self.live():
                    break
                self._compact()
            before = getattr(self, "stopped_before", "")      # resumed after an early stop
            for j in self.live():
                self._finish(j, self.epochs, "stopped_early" if before else "completed", before)
        finally:
            self.bar.close()
        return list(self.results)

    def _check(self, epoch: int, losses: Tensor, lo: int, hi: int) -> None:
        """Mid-epoch divergence check of steps [lo, hi): models whose loss or weights are not
        finite get their last good weights back and stop; the others' weights become good."""
        ok = torch.isfinite(losses[lo:hi]).all(0) & torch.isfinite(self.backend.flat).all(1)
        ok = ok.cpu().numpy()
        self._mark_diverged(epoch, losses, lo, ok)
        rows = [j for j in self.live()]
        if rows:
            self.backend.copy_rows_(self.good_snap, torch.tensor(rows, device=self.device))

    def _mark_diverged(self, epoch: int, losses: Tensor, lo: int, ok: np.ndarray) -> None:
        for j in self.live():
            if ok[j]:
                continue
            col = losses[lo:, j].cpu().numpy()
            bad = np.flatnonzero(~np.isfinite(col))
            where = (f"the loss became {col[bad[0]]} at epoch {epoch}, step {lo + bad[0] + 1}"
                     if len(bad) else f"the weights became non-finite at epoch {epoch}")
            self.diverged[int(self.ids[j])] = (
                f"{where}; training stopped with the last good weights kept. Try a lower optim.lr "
                f"(now {self.configs[self.ids[j]].optim.lr:.3g}) or gradient clipping "
                "(optim.clip_norm = 1.0)")
            self.backend.restore_rows_(self.good_snap, torch.tensor([j], device=self.device))

    def _end_epoch(self, epoch: int, losses: Tensor, correct: Tensor, checked: int,
                   seconds: float) -> bool:
        """One host sync for the epoch: divergence, metrics, early stopping, callbacks, writes."""
        b = self.backend
        finite = torch.isfinite(losses[checked:]).all(0) & torch.isfinite(b.flat).all(1)
        loss_sum = (losses * self.batch_sizes[:len(losses), None]).sum(0)
        n_seen = float(self.batch_sizes[:len(losses)].sum())
        if self.valid is not None:
            val_loss, val_correct = b.evaluate(*self.valid, self.eval_batch)
        else:
            val_loss = torch.full((b.k,), math.nan, device=self.device)
            val_correct = torch.zeros(b.k, device=self.device)
        sums = torch.stack([loss_sum, correct.to(loss_sum.dtype), val_loss,
                            val_correct.to(loss_sum.dtype), finite.to(loss_sum.dtype)])
        sums = sums.cpu().double().numpy()
        n_valid = len(self.valid[1]) if self.valid is not None else 1
        ok = (sums[4] > 0) & np.isfinite(sums[0]) & (np.isfinite(sums[2]) | (self.valid is None))
        self._mark_diverged(epoch, losses, checked, ok)
        live = self.live()
        if live:                                           # checked: now these weights are good
            self.backend.copy_rows_(self.good_snap, torch.tensor(live, device=self.device))
        metrics_by_model: dict[int, dict[str, float]] = {}
        improved, stops = [], []
        for j in live:
            i = int(self.ids[j])
            m = {"epoch": epoch, "loss": sums[0, j] / n_seen, "accuracy": sums[1, j] / n_seen,
                 "val_loss": sums[2, j] / n_valid,
                 "val_accuracy": sums[3, j] / n_valid if self.valid is not None else math.nan,
                 "lr": float(self.logged_lr[j]), "seconds": seconds}
            for c in METRIC_COLUMNS:
                self.history[i][c].append(m[c])
            metrics_by_model[i] = m
            t = self.configs[i].train
            value = m[self.monitor]
            if not math.isnan(value) and self.sign * value < self.best[i] - t.min_delta:
                self.best[i], self.best_epoch[i], self.wait[i] = self.sign * value, epoch, 0
                improved.append(j)
            else:
                self.wait[i] += 1
            self.plateaus[i].update(m["val_loss"])
            if t.patience is not None and self.wait[i] >= t.patience and epoch < self.epochs:
                stops.append((j, "stopped_early",
                              f"no improvement of {self.monitor} for {self.wait[i]} epochs; best "
                              f"at epoch {self.best_epoch[i]}"))
        if improved:
            self.backend.copy_rows_(self.best_snap, torch.tensor(improved, device=self.device))
        for cb in self.callbacks:
            asked = cb(self, epoch, metrics_by_model)
            chosen = set(metrics_by_model) if asked is True else (
                set(asked) if isinstance(asked, Iterable) else set())
            taken = {j for j, *_ in stops}
            if epoch < self.epochs:                     # at the last epoch the run completes
                stops += [(j, "stopped_early", "stopped by a callback") for j in live
                          if int(self.ids[j]) in chosen and j not in taken]
        if self.writer is not None and live:
            self.writer.epoch_end(epoch, self)
        self.bar.epoch_end(epoch, metrics_by_model, len(live) - len(stops), len(self.results),
                           self._best_text())
        for j, status, message in stops:
            self._finish(j, epoch, status, message)
        for j, i in enumerate(self.ids):                # diverged this epoch: exported now,
            if int(i) in self.diverged and self.results[i] is None:   # before any compaction
                self._finish(j, epoch, "diverged", self.diverged[int(i)])

    def _finish(self, j: int, epoch: int, status: str, message: str) -> None:
        """Export the model in slot j (best, last good or live weights) and freeze it."""
        i = int(self.ids[j])
        restore = self.configs[i].train.restore_best and self.best_epoch[i] > 0
        snap = self.best_snap if restore else (self.good_snap if status == "diverged" else None)
        best = self.sign * self.best[i] if self.best_epoch[i] > 0 else (
            math.inf if self.sign > 0 else -math.inf)
        self.results[i] = FitResult(
            model=self.backend.export(j, snap), history=self.history[i],
            best_epoch=int(self.best_epoch[i]), best=float(best), monitor=self.monitor,
            status=status, message=message, variant=self.variants[i], config=self.configs[i])

    def _compact(self) -> None:
        """Drop finished models from the stack when fewer than half are still training."""
        live = self.live()
        if not live or len(live) * 2 >= len(self.ids) or isinstance(self.backend, ModuleBackend):
            return
        keep = torch.tensor(live, device=self.device)
        self.backend.select_(keep)
        self.opt.select_(keep, self.backend.flat, self.backend.grad)
        self.best_snap = _select(self.best_snap, keep)
        self.good_snap = _select(self.good_snap, keep)
        self.ids = self.ids[live]
        self._columns()

    def _best_text(self) -> str:
        done = [k for k in range(len(self.results)) if self.best_epoch[k] > 0]
        if not done:
            return ""
        k = min(done, key=lambda k: self.best[k])
        return f"best {self.monitor} {self.sign * self.best[k]:.4f}" + (
            f" (model {k})" if len(self.results) > 1 else "")


def _select(snap: tuple[Tensor, dict[str, Tensor]], keep: Tensor):
    flat, bufs = snap
    return flat.index_select(0, keep), {k: v.index_select(0, keep) for k, v in bufs.items()}


# ---------------------------------------------------------------------- written once, both backends
@torch.no_grad()
def add_penalty_(backend, l1: Tensor | None, l2: Tensor | None) -> Tensor:
    """Keras' L1L2 on every dense kernel: add ``l1 * sign(w) + 2 * l2 * w`` to the kernels'
    gradients and return each model's penalty ``l1 * sum|w| + l2 * sum(w**2)`` (K,). The kernels
    are the first ``n_kernel`` columns of ``flat`` in both backends."""
    w = backend.flat[:, :backend.n_kernel]
    g = backend.grad[:, :backend.n_kernel]
    total = torch.zeros(backend.k, device=w.device)
    if l1 is not None:
        total += l1[:, 0] * torch.linalg.vector_norm(w, 1, dim=1)
        g.addcmul_(torch.sign(w), l1)
    if l2 is not None:
        total += l2[:, 0] * torch.linalg.vector_norm(w, 2, dim=1).square()
        g.addcmul_(w, 2.0 * l2)
    return total


@torch.no_grad()
def apply_max_norm_(backend, c: Tensor) -> None:
    """Keras' ``max_norm(c)`` on the hidden kernels: each unit's incoming weight vector is
    rescaled to norm ``c`` when longer (as torch.renorm, with its 1e-7)."""
    for w, dim in backend.max_norm_views:
        norm = torch.linalg.vector_norm(w, 2, dim=dim, keepdim=True)
        w.mul_(torch.where(norm > c, c / (norm + 1e-7), 1.0))


# ---------------------------------------------------------------------- entry points
def _epoch_callbacks(model_ref: Callable[[], nn.Module], sync_back: Callable[[], None],
                     callbacks: Iterable) -> list[Callable]:
    """fit's callbacks (``on_epoch_end(epoch, metrics, model)``) as driver callbacks: they see
    the live model, and what they change in it is what trains on."""
    cbs = list(callbacks)
    if not cbs:
        return []

    def call(trainer, epoch, metrics_by_model):
        if 0 not in metrics_by_model:
            return None
        model = model_ref()
        stop = False
        for cb in cbs:
            stop = bool(cb.on_epoch_end(epoch, metrics_by_model[0], model)) or stop
        sync_back()
        return True if stop else None
    return [call]


def fit(cfg: RunConfig, data: Dataset, run_dir: str | Path | None = None, *,
        model: nn.Module | None = None, resume: bool = False,
        callbacks: list | tuple = (), evaluate_test: bool = True) -> FitResult:
    """Train ``model`` (by default the MLP that ``cfg.model`` describes) on ``data``.

    A dnnlab MLP trains on the stacked backend (the fast step) when ``train.fast`` (the default);
    any other module, or an MLP with frozen layers or pruning hooks, on the module backend. The
    model passed in is trained in place and returned as ``result.model``. Callbacks are objects
    with ``on_epoch_end(epoch, metrics, model) -> bool | None`` (True stops training), and
    optionally ``on_train_begin(model)`` (before the first step) and ``close()`` (at the end).
    A run with a directory also records what its layers do for ``dnnlab doctor``
    (``train.record_every``, ``train.tensorboard``: :func:`dnnlab.doctor.record.callbacks_for`).

    With ``run_dir`` the run writes config, metrics.csv, checkpoints and the final model there,
    and ``resume=True`` continues from its last checkpoint. Only parameters with
    ``requires_grad`` are optimized, so frozen layers stay as they are.
    """
    tensors = to_device(data, resolve_device(cfg.train.device))
    if "train" not in tensors:
        raise DnnlabError("the training split is empty; check data.classes / data.per_class / "
                          "data.limit")
    if model is None:
        model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=cfg.train.seed)
    return fit_tensors(cfg, model, tensors["train"], tensors.get("valid"), tensors.get("test"),
                       run_dir=run_dir, resume=resume, callbacks=callbacks,
                       evaluate_test=evaluate_test)


def fit_tensors(cfg: RunConfig, model: nn.Module, train: tuple[Tensor, Tensor],
                valid: tuple[Tensor, Tensor] | None = None,
                test: tuple[Tensor, Tensor] | None = None, *, run_dir: str | Path | None = None,
                resume: bool = False, callbacks: list | tuple = (),
                evaluate_test: bool = True) -> FitResult:
    """:func:`fit` on (x, y) tensors already on the device (e.g. cached features)."""
    t = cfg.train
    device = train[0].device
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(t.seed)
    if not any(p.requires_grad for p in model.parameters()):
        raise DnnlabError("the model has no trainable parameters (every layer is frozen)")
    if valid is not None and not len(valid[1]):
        valid = None
    if t.fast and stackable(model):
        backend = StackedMLP.from_models([model], device, seed=t.seed)

        def live_model():
            model.load_state_dict(backend.state_of(0))
            return model

        def sync_back():
            backend.load_states([model.state_dict()])
    else:
        backend = ModuleBackend(model, device)
        live_model, sync_back = (lambda: model), (lambda: None)
    writer = RunWriter(Path(run_dir), cfg) if run_dir is not None else None
    if resume and writer is None:
        raise DnnlabError("resume needs a run directory")
    callbacks = [*callbacks, *callbacks_for(cfg, train, run_dir)]    # the doctor's records
    trainer = Trainer(backend, [cfg], train, valid,
                      callbacks=_epoch_callbacks(live_model, sync_back, callbacks), writer=writer)
    if writer is not None:
        writer.start(trainer, resume)
    try:
        if trainer.start_epoch <= trainer.epochs:            # the net before its first step
            _train_begin(callbacks, live_model())
        result = trainer.run()[0]
    finally:
        _close(callbacks)
        if isinstance(backend, ModuleBackend):
            backend.release()
    if result.model is not model:                          # stacked: the caller's module
        model.load_state_dict(result.model.state_dict())
        result.model = model.to(device)
    if evaluate_test and test is not None and len(test[1]) and result.status != "diverged":
        te = evaluate(result.model, *test, t.eval_batch_size)
        result.test = {"test_loss": te["loss"], "test_accuracy": te["accuracy"]}
    if writer is not None:
        result.run_dir = writer.run_dir
        writer.finish(result)
    return result


def train_many(cfg: RunConfig, data: Dataset, variants: list[Variant], *, device: str = "auto",
               progress: bool = True,
               callback: Callable[[int, dict[int, dict[str, float]]], Any] | None = None,
               run_dirs: list[str | Path | None] | None = None) -> list[FitResult]:
    """Train one model per variant of ``cfg`` at once; return their results in variant order.

    ``variants`` differ only in their seed and in the keys of :data:`PER_MODEL_KEYS` (anything
    else raises ConfigError: train differently shaped variants in separate calls). ``device``
    "auto" means ``cfg.train.device``. ``callback(epoch, metrics)`` runs after every epoch with the
    metrics of each model still training (by variant index); it may return True to stop them all,
    or variant indices to stop (e.g. pruned trials). Each result's ``model`` is on the CPU.
    With ``run_dirs`` (one per variant, None for none) each model records what its layers do
    into its directory as ``fit`` does (``train.record_every``, ``train.tensorboard``).
    """
    configs = variant_configs(cfg, variants)
    dev = resolve_device(cfg.train.device if device == "auto" else device)
    tensors = to_device(data, dev)
    if "train" not in tensors:
        raise DnnlabError("the training split is empty; check data.classes / data.per_class / "
                          "data.limit")
    models = [build_mlp(c.model, data.n_features, data.n_classes, seed=c.train.seed)
              for c in configs]
    stack = StackedMLP.from_models(models, dev, seed=configs[0].train.seed)
    if run_dirs is not None and len(run_dirs) != len(variants):
        raise DnnlabError(f"train_many: {len(run_dirs)} run_dirs for {len(variants)} variants; "
                          "give one per variant (None where a variant records nothing)")
    recorders = {i: callbacks_for(c, tensors["train"], d) for i, (c, d) in
                 enumerate(zip(configs, run_dirs or [None] * len(configs)))}
    recorders = {i: cbs for i, cbs in recorders.items() if cbs}
    cbs = [] if callback is None else [lambda trainer, epoch, m: callback(epoch, m)]
    if recorders:
        cbs.insert(0, _record_each_model(recorders))
    trainer = Trainer(stack, configs, tensors["train"], tensors.get("valid"), progress=progress,
                      callbacks=cbs, variants=variants)
    try:
        for i, rec in recorders.items():                  # each net before its first step
            _train_begin(rec, stack.model_at(i))
        return trainer.run()
    finally:
        for rec in recorders.values():
            _close(rec)


def _train_begin(callbacks: Iterable, model: nn.Module) -> None:
    """Each callback's optional ``on_train_begin(model)``, with the net before its first step."""
    for cb in callbacks:
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin(model)


def _close(callbacks: Iterable) -> None:
    """Each callback's optional ``close()`` (files, event writers), also after an error."""
    for cb in callbacks:
        if hasattr(cb, "close"):
            cb.close()


def _record_each_model(recorders: dict[int, list]) -> Callable:
    """A driver callback that hands each recording model of a K-model run, as a stand-alone
    copy, to its own recording callbacks (the doctor's layer records, TensorBoard)."""
    def call(trainer, epoch, metrics_by_model):
        for j, i in enumerate(trainer.ids):
            i = int(i)
            if i in recorders and i in metrics_by_model:
                model = trainer.backend.model_at(j)
                for cb in recorders[i]:
                    cb.on_epoch_end(epoch, metrics_by_model[i], model)
        return None
    return call

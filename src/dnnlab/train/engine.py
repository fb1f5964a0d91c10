"""The K-model engine: train K MLPs of one shape at once, each with its own hyperparameters.

A learning-rate search, a set of seeds or a sweep over dropout rates costs about one training:
the K models are one :class:`~dnnlab.train.engine_model.StackedMLP` (batched matrix products over
stacked weights), updated by one :class:`~dnnlab.train.engine_optim.StackedOptimizer` whose
hyperparameters are per-model columns. Model k of a run sees exactly what it would see trained
alone by :func:`dnnlab.train.fit` with the same config: the same initial weights
(``build_mlp(seed)``), the same batches (``epoch_permutation(seed)``, gathered per model), the
same optimizer and schedule formulas, early stopping and restore-best. (Dropout masks are drawn
for all K models at once, so they differ from a single run's.)

Each model stops on its own: early stopping, or divergence (a non-finite loss, checked once per
epoch, when the host reads the epoch's metrics anyway). A stopped model is frozen (its rate is 0,
its history ends) and exported at once; when fewer than half the stack is still training, the
finished models are dropped from it so they stop costing work. The run ends when all have stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dnnlab import config as config_mod
from dnnlab.config import RunConfig
from dnnlab.data import Dataset
from dnnlab.data.batching import batch_slices, epoch_permutation
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.nn.mlp import MLP, build_mlp
from dnnlab.optim import make_optimizer, make_schedule
from dnnlab.train.engine_model import StackedMLP
from dnnlab.train.engine_optim import StackedOptimizer, clip_, hypers_of
from dnnlab.train.engine_schedule import Plateau, rates
from dnnlab.train.loop import METRIC_COLUMNS, resolve_device, to_device

_SCHEDULE_KEYS = ("name", "decay_steps", "power", "boundaries", "values", "factor", "patience",
                  "max_lr", "pct_start", "div_factor", "final_div_factor", "unit")
PER_MODEL_KEYS = frozenset(
    [f"optim.{k}" for k in ("lr", "momentum", "beta1", "beta2", "rho", "eps", "weight_decay",
                            "initial_accumulator", "l1", "l2", "clip_norm", "clip_value")]
    + [f"optim.schedule.{k}" for k in _SCHEDULE_KEYS]
    + [f"model.{k}" for k in ("dropout", "input_dropout", "l1", "l2", "max_norm", "init",
                              "init_value", "bias_init", "bias_value")]
    + ["train.patience", "train.min_delta"])
"""Dotted config keys that may differ between the models of one run (plus ``Variant.seed``)."""

METRICS = tuple(c for c in METRIC_COLUMNS if c != "epoch")
# Fuse (torch.compile) the optimizer update when a run makes at least this many parameter-updates
# (K x parameters x steps): compiling costs ~10-30 s once, the fused update saves most of the
# eager update's ~10 passes over the (K, N) buffers.
FUSE_MIN_WORK = 2e9


@dataclass
class Variant:
    """One model of the K: its seed (init, batch order) and its per-model config overrides."""
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelResult:
    """What training one variant produced. ``model`` holds the restored-best weights, on the CPU."""
    variant: Variant
    config: RunConfig
    history: dict[str, list[float]]
    best_epoch: int
    best: float
    monitor: str
    status: str                        # completed | stopped_early | diverged
    message: str
    model: MLP
    stopped_at: int                    # the last epoch this model trained

    @property
    def epochs_run(self) -> int:
        return len(self.history["epoch"])


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


class _Run:
    """The state of one train_many call; its methods are the phases of an epoch."""

    def __init__(self, cfg: RunConfig, data: Dataset, variants: list[Variant], device: str,
                 progress: bool):
        self.cfg, self.variants = cfg, variants
        self.configs = variant_configs(cfg, variants)
        t = cfg.train
        self.monitor = t.monitor
        if self.monitor not in METRICS:
            raise DnnlabError(f"train.monitor = {self.monitor!r} is not a logged metric; choose one "
                              f"of: {', '.join(METRICS)}")
        self.device = resolve_device(t.device if device == "auto" else device)
        tensors = to_device(data, self.device)
        if "train" not in tensors:
            raise DnnlabError("the training split is empty; check data.classes / data.per_class / "
                              "data.limit")
        self.x, self.y = tensors["train"]
        self.valid = tensors.get("valid")
        if self.valid is None and any(c.optim.schedule.name == "performance" for c in self.configs):
            raise DnnlabError("the performance schedule watches val_loss, which this run does not "
                              "have; keep a validation split (data.valid_size > 0) or pick another "
                              "optim.schedule.name")
        self.n = len(self.y)
        self.slices = batch_slices(self.n, t.batch_size)
        self.epochs = t.epochs
        _validate(self.configs, len(self.slices))
        k = len(variants)
        seeds = [c.train.seed for c in self.configs]
        models = [build_mlp(c.model, data.n_features, data.n_classes, seed=s)
                  for c, s in zip(self.configs, seeds)]
        self.stack = StackedMLP.from_models(models, self.device, seed=seeds[0])
        o = self.configs[0].optim
        self.opt = StackedOptimizer(o.name, self.stack.flat, self.stack.grad,
                                    hypers_of([c.optim for c in self.configs]), nesterov=o.nesterov)
        work = self.stack.flat.numel() * len(self.slices) * self.epochs
        if t.fast and work >= FUSE_MIN_WORK:
            self.opt.fuse()
        # per-slot host state (slot = row of the stack; `ids` maps slots to variant indices)
        self.ids = np.arange(k)
        self.plateaus = [Plateau(c.optim) for c in self.configs]
        mode_min = "loss" in self.monitor
        self.sign = 1.0 if mode_min else -1.0            # compare sign * value, smaller is better
        self.best = np.full(k, math.inf)
        self.best_epoch = np.zeros(k, dtype=int)
        self.wait = np.zeros(k, dtype=int)
        self.history = [{c: [] for c in METRIC_COLUMNS} for _ in range(k)]
        self.results: list[ModelResult | None] = [None] * k
        self.best_snap = self.stack.snapshot()
        self.good_snap = self.stack.snapshot()
        self.progress = progress
        self._columns()

    # ------------------------------------------------------------------ per-model columns
    def _column(self, values: list[float | None], default: float) -> torch.Tensor | None:
        """A (K, 1) device column of per-slot values (None -> default); None if all are default."""
        vals = [default if v is None else float(v) for v in values]
        if all(v == default for v in vals):
            return None
        return torch.tensor(vals, dtype=torch.float32, device=self.device).view(-1, 1)

    def _columns(self) -> None:
        cs = [self.configs[i] for i in self.ids]
        self.l1 = self._column([c.model.l1 for c in cs], 0.0)
        self.l2 = self._column([c.model.l2 for c in cs], 0.0)
        self.clip_norm = self._column([c.optim.clip_norm for c in cs], math.inf)
        self.clip_value = self._column([c.optim.clip_value for c in cs], math.inf)
        mn = self._column([c.model.max_norm for c in cs], math.inf)
        self.max_norm = None if mn is None else mn.view(-1, 1, 1)
        self.seeds = [c.train.seed for c in cs]
        self.shared_batches = len(set(self.seeds)) == 1

    # ------------------------------------------------------------------ one epoch
    def lr_table(self, epoch0: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(steps, K) rates and SGD momenta for epoch ``epoch0`` (0-based), and the rates logged."""
        spe = len(self.slices)
        steps = epoch0 * spe + np.arange(spe)
        lrs, moms, logged = [], [], []
        for i in self.ids:
            c = self.configs[i].optim
            lr, mom = rates(c, steps, epoch0, spe, self.epochs)
            end, _ = rates(c, np.array([(epoch0 + 1) * spe]), epoch0, spe, self.epochs)
            mult = self.plateaus[i].multiplier
            frozen = 0.0 if self.results[i] is not None else 1.0
            lrs.append(lr * mult * frozen)
            moms.append(mom)
            logged.append(end[0] * mult)
        lrs = np.stack(lrs, axis=1)
        if all(m is None for m in moms):
            return lrs, None, np.array(logged)
        base = [self.configs[i].optim.momentum for i in self.ids]
        moms = np.stack([m if m is not None else np.full(spe, b) for m, b in zip(moms, base)], 1)
        return lrs, moms, np.array(logged)

    def permutations(self, epoch0: int) -> torch.Tensor:
        """(K, n) batch orders, one per model seed (or (n,) when all models share a seed)."""
        perms = {s: epoch_permutation(self.n, s, epoch0, self.device) for s in set(self.seeds)}
        if self.shared_batches:
            return perms[self.seeds[0]]
        return torch.stack([perms[s] for s in self.seeds])

    def train_epoch(self, epoch0: int, bar) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the training set; per-model (loss sum, correct count) on the device."""
        stack, opt, x, y = self.stack, self.opt, self.x, self.y
        lrs, moms, self.logged_lr = self.lr_table(epoch0)
        table = opt.table(lrs, moms)
        perm = self.permutations(epoch0)
        k = stack.k
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        stack.train()
        done = 0
        for i, (s, e) in enumerate(self.slices):
            b = e - s
            idx = perm[..., s:e]
            if self.shared_batches:
                xb, yb = x.index_select(0, idx), y.index_select(0, idx).expand(k, b)
            else:
                flat_idx = idx.reshape(-1)
                xb = x.index_select(0, flat_idx).view(k, b, -1)
                yb = y.index_select(0, flat_idx).view(k, b)
            logits = stack(xb)
            ce = F.cross_entropy(logits.reshape(k * b, -1), yb.reshape(-1),
                                 reduction="none").view(k, b).mean(1)
            ce.sum().backward()
            losses = ce.detach()
            if self.l1 is not None or self.l2 is not None:
                losses = losses + stack.add_penalty_(self.l1, self.l2)
            if self.clip_norm is not None or self.clip_value is not None:
                clip_(stack.grad, self.clip_value, self.clip_norm)
            opt.step(table[i])
            if self.max_norm is not None:
                stack.apply_max_norm_(self.max_norm)
            loss_sum.add_(losses, alpha=b)
            correct.add_((logits.detach().argmax(-1) == yb).sum(1))
            if bar is not None and (i + 1) % 64 == 0:
                bar.update(i + 1 - done)
                done = i + 1
        if bar is not None:
            bar.update(len(self.slices) - done)
        return loss_sum, correct

    @torch.inference_mode()
    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-model validation (loss sum, correct count), in eval mode, in large batches."""
        k = self.stack.k
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        if self.valid is None:
            return loss_sum.fill_(math.nan), correct
        x, y = self.valid
        self.stack.eval()
        for s, e in batch_slices(len(y), self.cfg.train.eval_batch_size):
            logits = self.stack(x[s:e])
            yb = y[s:e].expand(k, e - s)
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                        reduction="none").view(k, -1).sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
        self.stack.train()
        return loss_sum, correct

    # ------------------------------------------------------------------ bookkeeping on the host
    def end_epoch(self, epoch: int, sums: np.ndarray, seconds: float,
                  callback: Callable | None) -> None:
        """Record metrics, update early stopping and plateaus, stop models that are done."""
        n_valid = len(self.valid[1]) if self.valid is not None else 1
        live = [j for j, i in enumerate(self.ids) if self.results[i] is None]
        metrics_by_variant: dict[int, dict[str, float]] = {}
        improved, stops = [], []
        for j in live:
            i = self.ids[j]
            m = {"epoch": epoch, "loss": sums[0, j] / self.n, "accuracy": sums[1, j] / self.n,
                 "val_loss": sums[2, j] / n_valid,
                 "val_accuracy": sums[3, j] / n_valid if self.valid is not None else math.nan,
                 "lr": float(self.logged_lr[j]), "seconds": seconds}
            for c in METRIC_COLUMNS:
                self.history[i][c].append(m[c])
            metrics_by_variant[int(i)] = m
            finite = math.isfinite(m["loss"]) and (self.valid is None or math.isfinite(m["val_loss"]))
            if not finite:
                stops.append((j, "diverged", self._diverged_message(i, epoch, m)))
                continue
            t = self.configs[i].train
            value = m[self.monitor]
            if not math.isnan(value) and self.sign * value < self.best[i] - t.min_delta:
                self.best[i], self.best_epoch[i], self.wait[i] = self.sign * value, epoch, 0
                improved.append(j)
            else:
                self.wait[i] += 1
            if self.configs[i].optim.schedule.name == "performance":
                self.plateaus[i].update(m["val_loss"])
            if t.patience is not None and self.wait[i] >= t.patience:
                stops.append((j, "stopped_early",
                              f"no improvement of {self.monitor} for {self.wait[i]} epochs; best at "
                              f"epoch {self.best_epoch[i]}"))
        if improved:
            self.stack.copy_rows_(self.best_snap, torch.tensor(improved, device=self.device))
        if callback is not None:
            asked = callback(epoch, metrics_by_variant)
            chosen = set(metrics_by_variant) if asked is True else set(
                asked if isinstance(asked, Iterable) else ())
            taken = {j for j, *_ in stops}
            stops += [(j, "stopped_early", "stopped by the callback") for j in live
                      if int(self.ids[j]) in chosen and j not in taken]
        for j, status, message in stops:
            self.finish(j, epoch, status, message)

    def _diverged_message(self, i: int, epoch: int, m: dict[str, float]) -> str:
        what = "loss" if not math.isfinite(m["loss"]) else "val_loss"
        return (f"the {what} became {m[what]} at epoch {epoch}; this model stopped with the weights "
                f"of epoch {epoch - 1} kept. Try a lower optim.lr (now "
                f"{self.configs[i].optim.lr:.3g}) or gradient clipping (optim.clip_norm = 1.0)")

    def finish(self, j: int, epoch: int, status: str, message: str) -> None:
        """Export the model in slot j (best, last good or live weights) and freeze it."""
        i = int(self.ids[j])
        restore = self.cfg.train.restore_best and self.best_epoch[i] > 0
        source = self.best_snap if restore else (self.good_snap if status == "diverged" else
                                                  (None, None))
        model = self.stack.to_mlp(j, *source)
        best = self.sign * self.best[i] if self.best_epoch[i] > 0 else (
            math.inf if self.sign > 0 else -math.inf)
        self.results[i] = ModelResult(
            variant=self.variants[i], config=self.configs[i], history=self.history[i],
            best_epoch=int(self.best_epoch[i]), best=float(best), monitor=self.monitor,
            status=status, message=message, model=model, stopped_at=epoch)

    def compact(self) -> None:
        """Drop finished models from the stack when fewer than half are still training."""
        live = [j for j, i in enumerate(self.ids) if self.results[i] is None]
        if not live or len(live) * 2 >= len(self.ids):
            return
        keep = torch.tensor(live, device=self.device)
        self.stack.select_(keep)
        self.opt.select_(keep, self.stack.flat, self.stack.grad)
        self.best_snap = _select(self.best_snap, keep)
        self.good_snap = _select(self.good_snap, keep)
        self.ids = self.ids[live]
        self._columns()

    def run(self, callback: Callable | None) -> list[ModelResult]:
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.epochs * len(self.slices), unit="step", dynamic_ncols=True,
                       desc=f"{len(self.ids)} models, epoch 1/{self.epochs}")
        try:
            for epoch in range(1, self.epochs + 1):
                t0 = time.perf_counter()
                _copy_snapshot(self.good_snap, self.stack)
                loss_sum, correct = self.train_epoch(epoch - 1, bar)
                val_loss, val_correct = self.evaluate()
                sums = torch.stack([loss_sum, correct.to(loss_sum.dtype), val_loss,
                                    val_correct.to(loss_sum.dtype)]).cpu().double().numpy()
                self.end_epoch(epoch, sums, time.perf_counter() - t0, callback)
                live = sum(self.results[i] is None for i in self.ids)
                if bar is not None:
                    bar.set_description(f"{live} of {len(self.variants)} models training, epoch "
                                        f"{min(epoch + 1, self.epochs)}/{self.epochs}")
                    bar.set_postfix_str(self._best_text())
                if live == 0:
                    break
                self.compact()
            for j, i in enumerate(self.ids):
                if self.results[i] is None:
                    self.finish(j, self.epochs, "completed", "")
        finally:
            if bar is not None:
                bar.close()
        return list(self.results)

    def _best_text(self) -> str:
        done = [k for k in range(len(self.variants)) if self.best_epoch[k] > 0]
        if not done:
            return ""
        k = min(done, key=lambda k: self.best[k])
        return f"best {self.monitor} {self.sign * self.best[k]:.4f} (model {k})"


def _validate(configs: list[RunConfig], steps_per_epoch: int) -> None:
    """Run the single-model trainer's optimizer and schedule checks on every variant, up front."""
    for c in configs:
        dummy = [torch.zeros(1, requires_grad=True)]
        make_schedule(make_optimizer(dummy, c.optim), c.optim, steps_per_epoch, c.train.epochs)


def _select(snap: tuple[torch.Tensor, dict[str, torch.Tensor]], keep: torch.Tensor):
    flat, bufs = snap
    return flat.index_select(0, keep), {k: v.index_select(0, keep) for k, v in bufs.items()}


def _copy_snapshot(snap, stack: StackedMLP) -> None:
    flat, bufs = snap
    flat.copy_(stack.flat)
    for k, v in stack.buffers_.items():
        bufs[k].copy_(v)


def train_many(cfg: RunConfig, data: Dataset, variants: list[Variant], *, device: str = "auto",
               progress: bool = True,
               callback: Callable[[int, dict[int, dict[str, float]]], Any] | None = None,
               ) -> list[ModelResult]:
    """Train one model per variant of ``cfg`` at once; return their results in variant order.

    ``variants`` differ only in their seed and in the keys of :data:`PER_MODEL_KEYS` (anything
    else raises ConfigError: train differently shaped variants in separate calls). ``device``
    "auto" means ``cfg.train.device``. ``callback(epoch, metrics)`` runs after every epoch with the
    metrics of each model still training (by variant index); it may return True to stop them all,
    or variant indices to stop (e.g. pruned trials).
    """
    run = _Run(cfg, data, variants, device, progress and cfg.train.progress)
    return run.run(callback)

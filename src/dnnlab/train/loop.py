"""The single-model training loop.

Speed comes from three plain ideas: the splits live on the device as tensors and batches are
gathered by index (no DataLoader, no per-sample Python); the loss and accuracy of an epoch are
summed on the device and read once per epoch (no ``.item()`` per step); evaluation runs in large
batches under ``inference_mode``. Divergence is checked every ``CHECK_EVERY`` steps from a
device-side record of per-step losses, which names the exact step that went non-finite.

Everything around the loop (early stopping, checkpoints, metrics.csv, progress) is a small piece of
state here or in :mod:`dnnlab.train.callbacks`; :func:`fit` wires them together.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dnnlab.config import RunConfig
from dnnlab.data import Dataset
from dnnlab.data.batching import batch_slices, epoch_permutation
from dnnlab.errors import DnnlabError, TrainingDiverged
from dnnlab.optim import clip_gradients_, make_optimizer, make_schedule
from dnnlab.train import state as run_state

CHECK_EVERY = 64          # steps between divergence checks (one host sync each)
METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool | None:
        """Return True to stop training after this epoch."""


@dataclass
class FitResult:
    """What a training run produced. ``model`` holds the restored best weights (if asked)."""
    model: nn.Module
    history: dict[str, list[float]]
    best_epoch: int
    best: float
    monitor: str
    status: str                       # completed | stopped_early | diverged
    message: str = ""
    test: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None

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


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DnnlabError("train.device = 'cuda' but no CUDA device is visible; use --device cpu "
                          "or auto")
    return torch.device(name)


def to_device(data: Dataset, device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The three splits as (x, y) tensors on ``device`` (one copy each, then indexed)."""
    out = {}
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        if split is None or len(split.y) == 0:
            continue
        out[name] = split.tensors(device)
    return out


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Mean cross-entropy and accuracy over (x, y), in eval mode, in large batches."""
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
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([F.softmax(model(x[s:e]), 1) for s, e in batch_slices(len(x), batch_size)])


class EarlyStopping:
    """Keras-style early stopping with restore-best; the best weights are copied, not referenced."""

    def __init__(self, monitor: str, patience: int | None, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = "min" if "loss" in monitor else "max"
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.wait = 0

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool:
        """Record the epoch; return True when patience has run out."""
        if self.monitor not in metrics:
            raise DnnlabError(f"train.monitor = {self.monitor!r} is not a logged metric; "
                              f"choose one of: {', '.join(k for k in metrics if k != 'epoch')}")
        value = metrics[self.monitor]
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.wait += 1
        return self.patience is not None and self.wait >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load(self, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_state = best_state


def _set_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def fit(cfg: RunConfig, data: Dataset, run_dir: str | Path | None = None, *,
        model: nn.Module | None = None, resume: bool = False,
        callbacks: list[Callback] | tuple = (), evaluate_test: bool = True) -> FitResult:
    """Train ``model`` (by default the MLP that ``cfg.model`` describes) on ``data``.

    With ``run_dir`` the run writes config, metrics.csv, checkpoints and the final model there,
    and ``resume=True`` continues from its last checkpoint. Only parameters with
    ``requires_grad`` are optimized, so frozen layers stay as they are.
    """
    from dnnlab.nn.mlp import build_mlp
    from dnnlab.train.callbacks import CsvLogger, Progress, RunWriter

    t = cfg.train
    device = resolve_device(t.device)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(t.seed)
    if model is None:
        model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=t.seed)
    model.to(device)
    tensors = to_device(data, device)
    if "train" not in tensors:
        raise DnnlabError("the training split is empty; check data.classes / data.per_class / "
                          "data.limit")
    x_train, y_train = tensors["train"]
    valid = tensors.get("valid")
    n = len(y_train)
    slices = batch_slices(n, t.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DnnlabError("the model has no trainable parameters (every layer is frozen)")
    optimizer = make_optimizer(params, cfg.optim)
    schedule = make_schedule(optimizer, cfg.optim, len(slices), t.epochs)
    stopper = EarlyStopping(t.monitor, t.patience, t.min_delta)
    penalty = getattr(model, "penalty", None)
    max_norm = getattr(model, "apply_max_norm_", None) if getattr(cfg.model, "max_norm", None) else None
    needs_clip = cfg.optim.clip_value is not None or cfg.optim.clip_norm is not None

    writer = RunWriter(Path(run_dir), cfg) if run_dir is not None else None
    history: dict[str, list[float]] = {c: [] for c in METRIC_COLUMNS}
    start_epoch, stopped_before = 1, False
    if resume:
        if writer is None:
            raise DnnlabError("resume needs a run directory")
        restored = run_state.restore(writer.run_dir, model, optimizer, schedule, stopper, device)
        if restored is not None:
            start_epoch, history = restored["epoch"] + 1, restored["history"]
            stopped_before = (t.patience is not None and stopper.wait >= t.patience
                              and restored["epoch"] < t.epochs)
            if stopped_before:
                start_epoch = t.epochs + 1             # it had stopped early: nothing to redo
    if writer is not None:
        writer.start(resumed=start_epoch > 1)
    logger = CsvLogger(writer.run_dir / "metrics.csv") if writer else None
    progress = Progress(t.epochs, len(slices), enabled=t.progress, start_epoch=start_epoch)

    status, message = "completed", ""
    if stopped_before:
        status = "stopped_early"
        message = f"stopped early before the resume; best at epoch {stopper.best_epoch}"
    step_losses = torch.zeros(len(slices), device=device)    # the epoch's loss is derived from it
    batch_sizes = torch.tensor([e - s for s, e in slices], device=device, dtype=torch.float32)
    good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        for epoch in range(start_epoch, t.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm = epoch_permutation(n, t.seed, epoch - 1, device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i, (s, e) in enumerate(slices):
                idx = perm[s:e]
                xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                total = loss + penalty() if penalty is not None else loss
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                if needs_clip:
                    clip_gradients_(params, cfg.optim)
                optimizer.step()
                if max_norm is not None:
                    max_norm()
                schedule.on_batch_end()
                step_losses[i] = total.detach()
                correct += (logits.detach().argmax(1) == yb).sum()
                if (i + 1) % CHECK_EVERY == 0 or i + 1 == len(slices):
                    lo = (i // CHECK_EVERY) * CHECK_EVERY
                    bad = ~torch.isfinite(step_losses[lo:i + 1])
                    if bool(bad.any()):
                        step = lo + int(bad.nonzero()[0, 0]) + 1
                        model.load_state_dict(good_state)
                        raise TrainingDiverged(
                            f"the loss became {step_losses[lo + step - 1].item()} at epoch {epoch}, "
                            f"step {step}/{len(slices)}; training stopped with the last good "
                            f"weights kept. Try a lower optim.lr (now {_set_lr(optimizer):.3g}) "
                            "or gradient clipping (optim.clip_norm = 1.0)")
                    for k, v in model.state_dict().items():
                        good_state[k].copy_(v)
                    progress.step(min(CHECK_EVERY, i + 1 - lo))
            loss_sum = (step_losses * batch_sizes).sum()
            metrics = {"epoch": epoch, "loss": loss_sum.item() / n, "accuracy": correct.item() / n}
            if valid is not None:
                v = evaluate(model, *valid, t.eval_batch_size)
                metrics.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
            else:
                metrics.update(val_loss=math.nan, val_accuracy=math.nan)
            metrics["lr"] = _set_lr(optimizer)
            metrics["seconds"] = time.perf_counter() - t0
            for c in METRIC_COLUMNS:
                history[c].append(metrics[c])
            stop = stopper.update(epoch, metrics, model)
            schedule.on_epoch_end(metrics)
            for cb in callbacks:
                stop = bool(cb.on_epoch_end(epoch, metrics, model)) or stop
            progress.epoch_end(metrics)
            if writer is not None:
                logger.write(history)
                writer.epoch_end(epoch, model, optimizer, schedule, stopper, history)
            if stop and epoch < t.epochs:
                status = "stopped_early"
                message = (f"no improvement of {t.monitor} for {stopper.wait} epochs; best at "
                           f"epoch {stopper.best_epoch}")
                break
    except TrainingDiverged as e:
        status, message = "diverged", str(e)
    finally:
        progress.close()

    if t.restore_best and stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    result = FitResult(model=model, history=history, best_epoch=stopper.best_epoch,
                       best=stopper.best, monitor=t.monitor, status=status, message=message,
                       run_dir=writer.run_dir if writer else None)
    if evaluate_test and "test" in tensors and status != "diverged":
        te = evaluate(model, *tensors["test"], t.eval_batch_size)
        result.test = {"test_loss": te["loss"], "test_accuracy": te["accuracy"]}
    if writer is not None:
        writer.finish(result)
    return result

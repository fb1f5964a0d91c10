"""The learning-rate range test: grow the rate exponentially, watch the loss, pick a rate.

The book's recipe: train for a few hundred steps while the rate grows exponentially from tiny to
large, plot the loss against the rate (log scale), and take a rate about 10 times lower than where
the loss is lowest. The loss is smoothed with a bias-corrected exponential moving average (fastai's
``SmoothenValue``: one noisy batch should not decide), the sweep stops once the smoothed loss
exceeds ``diverge_factor`` times the best so far, NaNs are ignored when suggesting, and the model
comes back exactly as it was: weights, buffers (BN statistics), each module's train/eval mode and
torch's random state.

The average's factor follows the sweep's speed: an average over ``1 / (1 - beta)`` steps lags
the batch loss by about that many steps, so with fastai's fixed 0.98 a 200-step sweep over eight
decades (25 steps a decade) drew its curve two decades late and its minimum a decade late. By
default ``beta = 1 - 4 / steps_per_decade`` (0.84 for that sweep: a lag of about a fifth of a
decade), kept within [0.5, 0.98].

The sweep is one run of the training driver (:class:`dnnlab.train.driver.Trainer`) with the
exponential ramp as its rate: the step is the trainer's own, and no optimizer of the caller is
touched. The progress bar shows the smoothed loss, not the last batch's (which explodes at the end
of every sweep, by design).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from dnnlab.config import OptimConfig, RunConfig, ScheduleConfig, TrainConfig
from dnnlab.errors import DnnlabError
from dnnlab.io import write_bytes
from dnnlab.train.backend import make_backend
from dnnlab.train.callbacks import Callback, Progress, RunView
from dnnlab.train.driver import Trainer


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]                 # smoothed, bias-corrected
    raw_losses: list[float]
    suggestion: float                   # lr at the lowest smoothed loss / 10, within the sweep
    diverged: bool = False              # the sweep stopped before its last step
    min_lr: float = field(default=math.nan)   # the lr where the smoothed loss is lowest
    smoothing: float = 0.98             # the moving average's factor beta

    def plot(self, path: str | Path | None = None) -> Figure:
        """The loss-vs-lr curve (log x) with the suggestion marked, as a matplotlib ``Figure``.

        The figure is built with ``matplotlib.figure.Figure`` directly (no pyplot), so plotting
        never switches a notebook's backend. With ``path`` it is also written there (format from
        the suffix, PNG by default); the figure is returned either way, for a notebook to show.
        """
        fig = Figure(figsize=(6, 4), layout="tight")
        ax = fig.subplots()
        ax.plot(self.lrs, self.raw_losses, color="0.75", lw=0.8, label="batch loss")
        ax.plot(self.lrs, self.losses, color="C0", lw=1.8, label="smoothed loss")
        ax.axvline(self.suggestion, color="C3", ls="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:   # from the lowest batch loss up to 4x the first smoothed one: the divergence
            lo = min(finite + [v for v in self.raw_losses if math.isfinite(v)])
            hi = min(max(finite), 4 * finite[0])
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("learning-rate range test")
        ax.legend()
        if path is not None:
            path = Path(path)
            buf = io.BytesIO()
            fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=120)
            write_bytes(path, buf.getvalue())
        return fig


class _Smoothed:
    """A bias-corrected exponential moving average (fastai's SmoothenValue)."""

    def __init__(self, beta: float):
        self.beta, self.avg, self.n = beta, 0.0, 0

    def add(self, value: float) -> float:
        self.n += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        return self.avg / (1 - self.beta ** self.n)


def default_smoothing(steps: int, start_lr: float, end_lr: float) -> float:
    """``1 - 4 / steps_per_decade`` within [0.5, 0.98] (module docstring: the lag)."""
    per_decade = (steps - 1) / max(math.log10(end_lr / start_lr), 1e-9)
    return min(max(1.0 - 4.0 / per_decade, 0.5), 0.98)


class _StepLosses(Callback):
    """Keeps every step's loss and shows the smoothed one in the progress bar."""

    order = 95                              # after Progress: its epoch-end text is replaced

    def __init__(self, beta: float, progress: Progress | None):
        self.losses: list[float] = []
        self.smooth = _Smoothed(beta)
        self.progress = progress
        self.shown = ""

    def on_steps_end(self, run: RunView, epoch: int, losses: Mapping[int, Tensor], lo: int,
                     hi: int) -> None:
        new = losses[0].tolist()
        self.losses += new
        for v in new:
            if math.isfinite(v):
                self.shown = f"smoothed loss {self.smooth.add(v):.4f}"
        self._show()

    def on_epoch_end(self, run: RunView, epoch: int, logs: dict[int, dict[str, float]]) -> None:
        self._show()                        # not the epoch's mean batch loss

    def _show(self) -> None:
        if self.progress is not None and self.shown:
            self.progress.set_postfix(self.shown)


MAX_STEPS = 100_000   # a range test is a few hundred steps; a million is a typo, not a sweep


def check_steps(steps: int) -> int:
    """``steps``, or one line saying the range a sweep's length must lie in (checked before any
    file or folder is made)."""
    if not 2 <= steps <= MAX_STEPS:
        raise DnnlabError(f"--steps {steps}: a learning-rate range test takes 2 to {MAX_STEPS} "
                          "steps (a few hundred is usual; default 200)")
    return steps


def find_lr(model: nn.Module, x: Tensor, y: Tensor, cfg: OptimConfig, *, batch_size: int = 32,
            start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200,
            smoothing: float | None = None, diverge_factor: float = 4.0, seed: int = 0,
            progress: bool = False) -> LRFinderResult:
    """Sweep the rate from ``start_lr`` to ``end_lr`` over ``steps`` batches of ``(x, y)``.

    ``cfg`` picks the optimizer (its ``lr`` and schedule are ignored; clipping applies). The
    sweep is a run of the training driver with the ramp as its schedule and the model's own
    penalty and max-norm, so what it measures is what training will do. It runs every step (the
    smoothing and the stop at ``diverge_factor`` times the best loss are applied to the recorded
    losses afterwards); a non-finite loss ends it at once. ``smoothing`` is the moving
    average's factor (default: from the sweep's steps per decade, module docstring).
    ``batch_size`` rows per step (default 32), ``seed`` draws the batches, ``progress`` shows a
    bar.
    """
    if not 0 < start_lr < end_lr:
        raise DnnlabError(f"find_lr: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    check_steps(steps)
    if len(x) != len(y) or len(y) == 0:
        raise DnnlabError(f"find_lr: x and y must hold the same number (> 0) of examples, "
                          f"got {len(x)} and {len(y)}")
    if y.dtype != torch.long:
        y = y.long()               # cross-entropy wants int64 class indices
    if not any(p.requires_grad for p in model.parameters()):
        raise DnnlabError("find_lr: the model has no trainable parameters (every layer is frozen)")
    run_cfg = RunConfig(optim=dataclasses.replace(cfg, schedule=ScheduleConfig()),
                        train=TrainConfig(epochs=math.ceil(steps / math.ceil(len(y) / batch_size)),
                                          batch_size=batch_size, seed=seed, patience=None,
                                          monitor="loss",
                                          progress=progress))
    ratio = end_lr / start_lr

    def ramp(step: np.ndarray) -> np.ndarray:     # exponential, from start_lr to end_lr
        lrs: np.ndarray = start_lr * ratio ** (np.minimum(step, steps - 1) / (steps - 1))
        return lrs

    beta = default_smoothing(steps, start_lr, end_lr) if smoothing is None else smoothing
    if not 0 <= beta < 1:
        raise DnnlabError(f"find_lr: smoothing must lie in [0, 1), got {smoothing}")
    # a copy trains on the stacked backend; the module backend trains the model itself, so its
    # weights, each module's mode and torch's random state are put back afterwards
    saved = copy.deepcopy(model.state_dict())
    modes = [(m, m.training) for m in model.modules()]   # per module: MC dropout, frozen BN
    rng = torch.get_rng_state()
    backend = make_backend([model], x.device, seed=seed)
    bar = Progress() if progress else None
    steps_cb = _StepLosses(beta, bar)
    trainer = Trainer(backend, [run_cfg], (x, y), None, rate_fn=ramp, max_steps=steps,
                      progress=False, callbacks=[steps_cb, *([bar] if bar else [])])
    try:
        trainer.run()
    finally:
        backend.close()
        model.load_state_dict(saved)
        for m, training in modes:
            m.training = training
        torch.set_rng_state(rng)
    raw = steps_cb.losses
    lrs, kept, smooth = [], [], []
    avg, best, diverged = _Smoothed(beta), math.inf, len(raw) < steps
    for i, value in enumerate(raw):
        lrs.append(float(ramp(np.array([i]))[0]))
        kept.append(value)
        if not math.isfinite(value):
            smooth.append(math.nan)
            diverged = i < steps - 1
            break
        smoothed = avg.add(value)
        smooth.append(smoothed)
        best = min(best, smoothed)
        if smoothed > diverge_factor * best:
            diverged = i < steps - 1
            break
    arr = np.array(smooth, dtype=float)
    if not np.isfinite(arr).any():
        raise DnnlabError("find_lr: the loss was never finite; check the data (NaNs?) or lower "
                          "start_lr")
    at = lrs[int(np.nanargmin(arr))]
    suggestion = min(max(at / 10.0, start_lr), end_lr)
    return LRFinderResult(lrs=lrs, losses=smooth, raw_losses=kept, suggestion=suggestion,
                          diverged=diverged, min_lr=at, smoothing=beta)

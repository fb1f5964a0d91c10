"""Learning-rate schedules, the chapter's five, as closed-form functions of the step counter.

The trainer needs every model's rate for every step of an epoch up front (it sends one table of
coefficients to the device per epoch, so the loop never waits for the host), so each schedule is
a pure function of ``steps`` (optimizer steps taken before the step) and ``epochs_done``. With
``lr0 = optim.lr`` and ``t`` counting steps or epochs as ``schedule.unit`` says:

* ``power``:       lr0 / (1 + t / decay_steps) ** power
* ``exponential``: lr0 * 0.1 ** (t / decay_steps)
* ``piecewise``:   ``values[i]`` during epochs (0-based) ``boundaries[i-1] <= e < boundaries[i]``, as
  the book's ``piecewise_constant`` (the values are the rates themselves, not factors of lr0).
* ``performance``: Keras' ReduceLROnPlateau on ``val_loss``: after ``patience`` epochs without an
  improvement of at least 1e-4, multiply the rate by ``factor`` (and start counting again). It
  depends on the validation loss, so it is a small per-model state (:class:`Plateau`) whose
  multiplier scales the rate.
* ``1cycle``:      torch's ``OneCycleLR`` with ``three_phase=True`` and linear annealing, as in the
  book's OneCycleScheduler: from max_lr / div_factor up to max_lr over ``pct_start`` of the steps,
  back down over as many, then down to max_lr / div_factor / final_div_factor. With SGD and
  momentum > 0 the momentum cycles the other way, 0.95 -> 0.85 -> 0.95 (the book's values).
  Stepped once per batch; past the end the rate stays at its last value.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from dnnlab.config import OptimConfig
from dnnlab.errors import ConfigError, DnnlabError

PLATEAU_MIN_DELTA = 1e-4   # Keras ReduceLROnPlateau's default
ONECYCLE_MOMENTUM = (0.85, 0.95)


def check_schedule(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> None:
    """Refuse a schedule that cannot run for ``epochs`` x ``steps_per_epoch`` steps: the one rule
    that needs the data's size (every other rule of a schedule is the config's, checked when it
    is built)."""
    if cfg.schedule.name == "1cycle" and steps_per_epoch * epochs < 3:
        raise ConfigError("1cycle needs at least 3 steps in all; train longer or use "
                          "a smaller batch")


def rates(cfg: OptimConfig, steps: np.ndarray, epochs_done: int, steps_per_epoch: int,
          epochs: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The learning rate (and SGD momentum under 1cycle, else None) at each of ``steps``."""
    s, lr0 = cfg.schedule, cfg.lr
    steps = np.asarray(steps, dtype=np.float64)
    if s.name in ("power", "exponential"):
        t = steps if s.unit == "step" else np.full_like(steps, epochs_done)
        if s.name == "power":
            return lr0 / (1.0 + t / s.decay_steps) ** s.power, None
        return lr0 * 0.1 ** (t / s.decay_steps), None
    if s.name == "piecewise":
        return np.full_like(steps, s.values[bisect.bisect_right(s.boundaries, epochs_done)]), None
    if s.name == "1cycle":
        return _one_cycle(cfg, steps, steps_per_epoch * epochs)
    return np.full_like(steps, lr0), None                           # none, performance


def _one_cycle(cfg: OptimConfig, steps: np.ndarray,
               total: int) -> tuple[np.ndarray, np.ndarray | None]:
    """torch's OneCycleLR (linear, three phases)."""
    s = cfg.schedule
    peak = s.max_lr if s.max_lr is not None else cfg.lr
    low = peak / s.div_factor
    ends = [s.pct_start * total - 1, 2 * s.pct_start * total - 2, total - 1]
    lo_m, hi_m = ONECYCLE_MOMENTUM
    phases = [(low, peak, hi_m, lo_m), (peak, low, lo_m, hi_m),
              (low, low / s.final_div_factor, hi_m, hi_m)]   # (lr from, lr to, momentum from, to)
    t = np.minimum(steps, total - 1)              # past the end the rate stays at its last value
    lr, mom = np.empty_like(t), np.empty_like(t)
    start, done = 0.0, np.zeros(t.shape, dtype=bool)
    for i, (end, (lr_a, lr_b, m_a, m_b)) in enumerate(zip(ends, phases)):
        here = ~done & ((t <= end) | (i == len(ends) - 1))
        pct = (t[here] - start) / (end - start)
        lr[here] = (lr_b - lr_a) * pct + lr_a
        mom[here] = (m_b - m_a) * pct + m_a
        done |= here
        start = end
    cycles = cfg.name == "sgd" and cfg.momentum > 0
    return lr, (mom if cycles else None)


class Plateau:
    """Keras' ReduceLROnPlateau on val_loss, for one model: the multiplier of its rate."""

    def __init__(self, cfg: OptimConfig):
        self.active = cfg.schedule.name == "performance"
        self.factor, self.patience = cfg.schedule.factor, cfg.schedule.patience
        self.best, self.wait, self.multiplier = math.inf, 0, 1.0

    def update(self, val_loss: float) -> None:
        if not self.active:
            return
        if math.isnan(val_loss):
            raise DnnlabError("the performance schedule watches val_loss, which this run does not "
                              "have; keep a validation split (data.valid_size > 0) or pick "
                              "another optim.schedule.name")
        if val_loss < self.best - PLATEAU_MIN_DELTA:
            self.best, self.wait = val_loss, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.multiplier *= self.factor
            self.wait = 0

    def state(self) -> dict[str, Any]:
        return {"best": None if math.isinf(self.best) else self.best, "wait": self.wait,
                "multiplier": self.multiplier}

    def load(self, state: dict[str, Any]) -> None:
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.wait, self.multiplier = int(state["wait"]), float(state["multiplier"])

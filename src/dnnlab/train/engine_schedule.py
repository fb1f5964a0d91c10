"""Learning-rate schedules in closed form, per model, for the K-model engine.

:class:`dnnlab.optim.schedules.Schedule` moves one optimizer's rate step by step; the engine needs
each model's rate for every step of an epoch up front (to send one table to the device), so here
the same five schedules are functions of the counters ``steps`` (optimizer steps taken before the
step) and ``epochs_done``. ``tests/test_engine_schedule.py`` checks them against ``Schedule``.
The plateau ("performance") schedule depends on the validation loss, so it is a small per-model
state (:class:`Plateau`) whose multiplier scales the rate.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from dnnlab.config import OptimConfig
from dnnlab.optim.schedules import ONECYCLE_MOMENTUM, PLATEAU_MIN_DELTA


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
    """torch's OneCycleLR (linear, three phases), as ``Schedule`` configures it."""
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
        self.factor, self.patience = cfg.schedule.factor, cfg.schedule.patience
        self.best, self.wait, self.multiplier = math.inf, 0, 1.0

    def update(self, val_loss: float) -> None:
        if val_loss < self.best - PLATEAU_MIN_DELTA:
            self.best, self.wait = val_loss, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.multiplier *= self.factor
            self.wait = 0

"""Learning-rate schedules, the chapter's five, driven by the trainer's two hooks.

The trainer calls ``on_batch_end()`` after every optimizer step and ``on_epoch_end(metrics)`` after
every epoch; ``t`` below counts steps or epochs as ``schedule.unit`` says. With ``lr0`` the rate
each param group starts with:

* ``power``:       lr0 / (1 + t / decay_steps) ** power
* ``exponential``: lr0 * 0.1 ** (t / decay_steps)
* ``piecewise``:   ``values[i]`` during epochs (0-based) ``boundaries[i-1] <= e < boundaries[i]``, as
  the book's ``piecewise_constant`` (the values are the rates themselves, not factors of lr0).
* ``performance``: Keras' ReduceLROnPlateau on ``val_loss``: after ``patience`` epochs without an
  improvement of at least 1e-4, multiply the rate by ``factor`` (and start counting again).
* ``1cycle``:      torch's ``OneCycleLR``, three linear phases as in the book's OneCycleScheduler:
  from max_lr / div_factor up to max_lr over ``pct_start`` of the steps, back down over as many,
  then down to max_lr / div_factor / final_div_factor. With SGD and momentum > 0 the momentum
  cycles the other way, 0.95 -> 0.85 -> 0.95 (the book's values). Stepped once per batch.

The state is plain JSON (counters and floats), so it travels in checkpoint metadata.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

from dnnlab.config import OptimConfig
from dnnlab.errors import ConfigError, DnnlabError

PLATEAU_MIN_DELTA = 1e-4   # Keras ReduceLROnPlateau's default
ONECYCLE_MOMENTUM = (0.85, 0.95)


def _set_lr(group: dict[str, Any], lr: float) -> None:
    """Write ``lr`` into a param group, in place when it is a tensor (graph-captured steps)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


class Schedule:
    """Owns the learning rate of ``optimizer`` for the whole run."""

    def __init__(self, optimizer: Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int):
        s = cfg.schedule
        self.optimizer, self.cfg, self.name = optimizer, s, s.name
        self.steps_per_epoch, self.epochs = int(steps_per_epoch), int(epochs)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.steps = 0
        self.epochs_done = 0
        self.best = math.inf
        self.wait = 0
        self._onecycle: OneCycleLR | None = None
        self._check()
        if self.name == "1cycle":
            self._onecycle = self._make_onecycle(optimizer, cfg)
        else:
            self._apply()

    def _check(self) -> None:
        s = self.cfg
        if self.name in ("power", "exponential") and s.decay_steps <= 0:
            raise ConfigError(f"optim.schedule.decay_steps must be > 0 for {self.name}, "
                              f"got {s.decay_steps}")
        if self.name == "piecewise" and len(s.values) != len(s.boundaries) + 1:
            raise ConfigError("optim.schedule: piecewise needs len(values) == len(boundaries) + 1")
        if self.name == "piecewise" and list(s.boundaries) != sorted(s.boundaries):
            raise ConfigError(f"optim.schedule.boundaries = {s.boundaries} must be increasing")
        if self.name == "performance" and not 0 < s.factor < 1:
            raise ConfigError(f"optim.schedule.factor must lie in (0, 1), got {s.factor}")
        if self.name == "1cycle":
            if not s.pct_start < 0.5:
                raise ConfigError(f"optim.schedule.pct_start = {s.pct_start}: 1cycle goes up for "
                                  "pct_start and down for as long, so it must be < 0.5 (the book: 0.45)")
            if self.steps_per_epoch * self.epochs < 3:
                raise ConfigError("1cycle needs at least 3 steps in all; train longer or use "
                                  "a smaller batch")

    def _make_onecycle(self, optimizer: Optimizer, cfg: OptimConfig) -> OneCycleLR:
        s = self.cfg
        cycle = cfg.name == "sgd" and cfg.momentum > 0
        return OneCycleLR(optimizer, max_lr=s.max_lr if s.max_lr is not None else cfg.lr,
                          total_steps=self.steps_per_epoch * self.epochs, pct_start=s.pct_start,
                          anneal_strategy="linear", three_phase=True, div_factor=s.div_factor,
                          final_div_factor=s.final_div_factor, cycle_momentum=cycle,
                          base_momentum=ONECYCLE_MOMENTUM[0], max_momentum=ONECYCLE_MOMENTUM[1])

    def _factor(self) -> float:
        t = self.steps if self.cfg.unit == "step" else self.epochs_done
        if self.name == "power":
            return 1.0 / (1.0 + t / self.cfg.decay_steps) ** self.cfg.power
        if self.name == "exponential":
            return 0.1 ** (t / self.cfg.decay_steps)
        return 1.0

    def _apply(self) -> None:
        """Write the closed-form rate for the current counters (performance keeps its own)."""
        if self.name in ("power", "exponential"):
            f = self._factor()
            for g, lr0 in zip(self.optimizer.param_groups, self.base_lrs):
                _set_lr(g, lr0 * f)
        elif self.name == "piecewise":
            value = self.cfg.values[bisect.bisect_right(self.cfg.boundaries, self.epochs_done)]
            for g in self.optimizer.param_groups:
                _set_lr(g, value)

    def on_batch_end(self) -> None:
        self.steps += 1
        if self._onecycle is not None:
            if self._onecycle.last_epoch < self._onecycle.total_steps - 1:
                self._onecycle.step()     # past the end the rate stays at its final value
        elif self.cfg.unit == "step" and self.name in ("power", "exponential"):
            self._apply()

    def on_epoch_end(self, metrics: dict[str, float]) -> None:
        self.epochs_done += 1
        if self.name == "performance":
            self._plateau(metrics)
        elif self.name == "piecewise" or (self.cfg.unit == "epoch"
                                          and self.name in ("power", "exponential")):
            self._apply()

    def _plateau(self, metrics: dict[str, float]) -> None:
        value = metrics.get("val_loss")
        if value is None or math.isnan(value):
            raise DnnlabError("the performance schedule watches val_loss, which this run does not "
                              "have; keep a validation split (data.valid_size > 0) or pick "
                              "another optim.schedule.name")
        if value < self.best - PLATEAU_MIN_DELTA:
            self.best, self.wait = float(value), 0
            return
        self.wait += 1
        if self.wait >= self.cfg.patience:
            for g in self.optimizer.param_groups:
                _set_lr(g, float(g["lr"]) * self.cfg.factor)
            self.wait = 0

    def lr(self) -> float:
        """The rate the next step will use (of the first param group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"name": self.name, "steps": self.steps,
                                 "epochs_done": self.epochs_done, "base_lrs": self.base_lrs,
                                 "best": None if math.isinf(self.best) else self.best,
                                 "wait": self.wait,
                                 "lrs": [float(g["lr"]) for g in self.optimizer.param_groups]}
        if self._onecycle is not None:
            state["onecycle"] = self._onecycle.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise DnnlabError(f"the checkpoint's schedule is {state.get('name')!r} but the config "
                              f"asks for {self.name!r}; resume with the run's own config")
        self.steps, self.epochs_done = int(state["steps"]), int(state["epochs_done"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.wait = int(state["wait"])
        if self._onecycle is not None:
            self._onecycle.load_state_dict(state["onecycle"])
        for g, lr in zip(self.optimizer.param_groups, state["lrs"]):
            _set_lr(g, float(lr))


def make_schedule(optimizer: Optimizer, cfg: OptimConfig, steps_per_epoch: int,
                  epochs: int) -> Schedule:
    """The schedule ``cfg.schedule.name`` for a run of ``epochs`` x ``steps_per_epoch`` steps."""
    return Schedule(optimizer, cfg, steps_per_epoch, epochs)

"""The per-model bookkeeping of one training run: history, best epoch, who still trains.

One :class:`Book` per run holds, for each of the K models (by model index, the variant's position):

* ``history``: one list per metric column (what metrics.csv holds);
* ``best`` / ``best_epoch``: the best monitored value so far (stored as ``sign * value``, so
  smaller is better whatever the metric) and its epoch, 0 before any;
* ``ended``: model -> (status, message) for a model that stopped (early, by a callback) or
  diverged; a model not in it still trains (:meth:`Book.training`).

Which row of the stack holds which model is not its business: :class:`dnnlab.train.stack.Stack`.

Its :meth:`state_dict` is plain JSON, part of the resume state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")
METRICS = tuple(c for c in METRIC_COLUMNS if c != "epoch")


class Book:
    """Per-model history, best value and end state of K models (see the module docstring)."""

    def __init__(self, k: int, monitor: str, min_delta: list[float]):
        self.monitor = monitor
        self.sign = 1.0 if "loss" in monitor else -1.0     # sign * value: smaller is better
        self.min_delta = list(min_delta)
        self.best = np.full(k, math.inf)
        self.best_epoch = np.zeros(k, dtype=int)
        self.history: list[dict[str, list[float]]] = [{c: [] for c in METRIC_COLUMNS}
                                                      for _ in range(k)]
        self.ended: dict[int, tuple[str, str]] = {}

    @property
    def k(self) -> int:
        return len(self.history)

    def training(self) -> list[int]:
        """The models still training, in model order."""
        return [i for i in range(self.k) if i not in self.ended]

    def record(self, i: int, metrics: dict[str, float]) -> bool:
        """Append model i's epoch metrics; True when the monitored value improved on the best."""
        for c in METRIC_COLUMNS:
            self.history[i][c].append(metrics[c])
        value = metrics[self.monitor]
        if not math.isnan(value) and self.sign * value < self.best[i] - self.min_delta[i]:
            self.best[i], self.best_epoch[i] = self.sign * value, int(metrics["epoch"])
            return True
        return False

    def end(self, i: int, status: str, message: str) -> None:
        """Model i stops training (the first reason given is kept)."""
        self.ended.setdefault(int(i), (status, message))

    def best_value(self, i: int) -> float:
        """Model i's best monitored value (inf or -inf before any)."""
        if self.best_epoch[i] > 0:
            return float(self.sign * self.best[i])
        return math.inf if self.sign > 0 else -math.inf

    def best_text(self) -> str:
        """"best val_loss 0.1234 (model 2)" over the models with a best so far, else ""."""
        done = [k for k in range(self.k) if self.best_epoch[k] > 0]
        if not done:
            return ""
        k = min(done, key=lambda k: self.best[k])
        return f"best {self.monitor} {self.best_value(k):.4f}" + (
            f" (model {k})" if self.k > 1 else "")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best.tolist(), "best_epoch": self.best_epoch.tolist(),
                "history": self.history, "ended": {str(i): list(v) for i, v in self.ended.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        k = self.k
        if (len(state["best"]) != k or len(state["history"]) != k
                or any(set(h) != set(METRIC_COLUMNS) for h in state["history"])
                or any(len({len(v) for v in h.values()}) != 1 for h in state["history"])):
            raise ValueError(f"its history is not {k} model(s) with the columns "
                             f"{', '.join(METRIC_COLUMNS)} of equal length")
        self.best = np.array(state["best"], dtype=float)
        self.best_epoch = np.array(state["best_epoch"], dtype=int)
        self.history = [{c: list(h[c]) for c in METRIC_COLUMNS} for h in state["history"]]
        self.ended = {int(i): (str(s), str(m)) for i, (s, m) in state["ended"].items()}
        # an older state also holds "ids" (the stack's rows, now train/stack.py's): a resumable
        # run has one model, so they were [0], what the stack starts with; they are ignored

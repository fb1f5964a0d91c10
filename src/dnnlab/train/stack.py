"""The stack: the K models in training, their rows, and everything indexed by row.

A backend holds its models as rows of (K, N) buffers, and when fewer than half still train the
finished ones are dropped (:meth:`Stack.compact`), so row j is no longer model j. Everything that
follows the rows lives here, in one object: the backend, the flat optimizer, the best and last
good snapshots, the per-model penalties and limits (:class:`Constraints`), each row's seed, and
the row -> model map. Outside, the driver and the callbacks speak *model indices* only (the
variant's position): a method here takes model indices and returns per-model values
(:meth:`Stack.per_model`), so no line of the loop needs to understand compaction to be right.

The one exception is the step itself: :meth:`Stack.step` and :meth:`Stack.evaluate` return
device tensors by row, which stay on the device until one host sync per check reads them through
:meth:`Stack.per_model`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from dnnlab.config import RunConfig
from dnnlab.data.batching import epoch_permutation
from dnnlab.optim.flat import FlatOptimizer, clip_
from dnnlab.train.backend import Backend, Snapshot

T = TypeVar("T", Tensor, np.ndarray)


def _column(values: list[float | None], default: float, like: Tensor) -> Tensor | None:
    """A (K, 1) device column of per-model values (None -> default); None if all are default."""
    vals = [default if v is None else float(v) for v in values]
    if all(v == default for v in vals):
        return None
    return torch.tensor(vals, dtype=like.dtype, device=like.device).view(-1, 1)


@dataclass
class Constraints:
    """The per-model penalties and limits of the stack's models, as (K, 1) device columns in row
    order (None where no model has one): Keras' L1/L2 penalty and gradient clipping before the
    update (:meth:`before_update`), max-norm after it (:meth:`after_update`). Written once, over
    ``flat`` and ``grad``, for both backends."""

    l1: Tensor | None
    l2: Tensor | None
    clip_value: Tensor | None
    clip_norm: Tensor | None
    global_clip_norm: Tensor | None
    max_norm: Tensor | None
    segments: list[tuple[int, int]]      # each parameter tensor's columns (per-tensor clipping)

    @classmethod
    def of(cls, configs: Sequence[RunConfig], backend: Backend) -> Constraints:
        """The columns of ``configs`` (one per row of ``backend``, in row order)."""
        like = backend.flat
        mn = _column([c.model.max_norm for c in configs], math.inf, like)
        if mn is not None:
            mn = mn.view(1, 1) if backend.k == 1 else mn.view(-1, 1, 1)
        return cls(l1=_column([c.model.l1 for c in configs], 0.0, like),
                   l2=_column([c.model.l2 for c in configs], 0.0, like),
                   clip_value=_column([c.optim.clip_value for c in configs], math.inf, like),
                   clip_norm=_column([c.optim.clip_norm for c in configs], math.inf, like),
                   global_clip_norm=_column([c.optim.global_clip_norm for c in configs], math.inf,
                                            like),
                   max_norm=mn, segments=backend.segments)

    def before_update(self, backend: Backend, loss: Tensor) -> Tensor:
        """Add the penalty to the gradients (and return it added to ``loss``), then clip."""
        if self.l1 is not None or self.l2 is not None:
            loss = loss + add_penalty_(backend, self.l1, self.l2)
        if self.clip_value is not None or self.clip_norm is not None or \
                self.global_clip_norm is not None:
            clip_(backend.grad, self.clip_value, self.clip_norm, self.global_clip_norm,
                  self.segments)
        return loss

    def after_update(self, backend: Backend) -> None:
        """Max-norm on the hidden kernels."""
        if self.max_norm is not None:
            apply_max_norm_(backend, self.max_norm)


@torch.no_grad()
def add_penalty_(backend: Backend, l1: Tensor | None, l2: Tensor | None) -> Tensor:
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
def apply_max_norm_(backend: Backend, c: Tensor) -> None:
    """Keras' ``max_norm(c)`` on the hidden kernels: each unit's incoming weight vector is
    rescaled to norm ``c`` when longer (as torch.renorm, with its 1e-7)."""
    for w, dim in backend.max_norm_views:
        norm = torch.linalg.vector_norm(w, 2, dim=dim, keepdim=True)
        w.mul_(torch.where(norm > c, c / (norm + 1e-7), 1.0))


class Stack:
    """The models in training as rows of one backend (module docstring), spoken to by model.

    ``configs`` are all K models' full configs (model index -> config); ``fuse`` compiles the
    optimizer's update (:meth:`FlatOptimizer.fuse`).
    """

    def __init__(self, backend: Backend, configs: Sequence[RunConfig], *, fuse: bool = False):
        self.backend, self.configs = backend, list(configs)
        self.opt = FlatOptimizer.from_configs([c.optim for c in configs], backend.flat,
                                              backend.grad)
        if fuse:
            self.opt.fuse()
        self.ids = np.arange(len(self.configs))          # row -> model
        # each model's largest weight before the first step (divergence_cause reads it)
        self.start_max_abs: np.ndarray = backend.flat.abs().amax(1).cpu().numpy()
        self.best: Snapshot = backend.snapshot()
        self.good: Snapshot = backend.snapshot()
        self._rows()

    def _rows(self) -> None:
        """What follows the rows: the constraints' columns and each row's seed."""
        cs = [self.configs[i] for i in self.ids]
        self.constraints = Constraints.of(cs, self.backend)
        self.seeds = [c.train.seed for c in cs]
        self.shared_batches = len(set(self.seeds)) == 1

    # ------------------------------------------------------------------ rows <-> models
    @property
    def k(self) -> int:
        """How many models the stack holds now (its rows)."""
        return len(self.ids)

    @property
    def models(self) -> list[int]:
        """The models in the stack, in row order (finished ones until they are dropped)."""
        return [int(i) for i in self.ids]

    def _row(self, i: int) -> int:
        return int(np.flatnonzero(self.ids == i)[0])

    def _rows_of(self, models: Iterable[int]) -> Tensor:
        return torch.tensor([self._row(i) for i in models], device=self.backend.flat.device)

    def per_model(self, values: T) -> dict[int, T]:
        """Model -> its slice of ``values``, a tensor or array whose last dimension is by row."""
        return {int(i): values[..., j] for j, i in enumerate(self.ids)}

    # ------------------------------------------------------------------ one epoch
    def batch_order(self, n: int, epoch0: int) -> Tensor:
        """(n,) batch order when the models share a seed, else (K, n), one per row's seed."""
        device = self.backend.flat.device
        perms = {s: epoch_permutation(n, s, epoch0, device) for s in set(self.seeds)}
        if self.shared_batches:
            return perms[self.seeds[0]]
        return torch.stack([perms[s] for s in self.seeds])

    def table(self, lrs: Mapping[int, np.ndarray], momenta: Mapping[int, np.ndarray] | None
              ) -> Tensor:
        """The optimizer's per-step coefficients from each model's (steps,) rates (and SGD
        momenta, None for the configured ones): :meth:`FlatOptimizer.table`."""
        rows = self.models
        return self.opt.table(np.stack([lrs[i] for i in rows], axis=1),
                              None if momenta is None else
                              np.stack([momenta[i] for i in rows], 1))

    def step(self, x: Tensor, y: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step of every model: forward and backward, penalty and clipping, the update
        (``c``: this step's row of :meth:`table`), max-norm. Loss and correct count by row."""
        b = self.backend
        loss, hits = b.train_step(x, y)                  # forward, backward into b.grad
        loss = self.constraints.before_update(b, loss)
        self.opt.step(c)                                 # every model's update at once
        self.constraints.after_update(b)
        return loss, hits

    def evaluate(self, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """Summed loss and correct count by row (:meth:`Backend.evaluate`)."""
        return self.backend.evaluate(x, y, batch_size)

    def weights_finite(self) -> Tensor:
        """By row: every weight finite (on the device)."""
        return torch.isfinite(self.backend.flat).all(1)

    # ------------------------------------------------------------------ the snapshots
    def model(self, i: int, *, best: bool = False) -> nn.Module:
        """Model i with its live or its best weights (read it: :meth:`Backend.model_at`)."""
        return self.backend.model_at(self._row(i), self.best if best else None)

    def export(self, i: int, weights: Literal["best", "good", "live"]) -> nn.Module:
        """Model i as a result, with its ``"best"``, last ``"good"`` or ``"live"`` weights."""
        snap = {"best": self.best, "good": self.good, "live": None}[weights]
        return self.backend.export(self._row(i), snap)

    def keep_good(self, models: Sequence[int]) -> None:
        """These models' live weights are checked: they become their last good ones."""
        if models:
            self.backend.copy_rows_(self.good, self._rows_of(models))

    def keep_best(self, models: Sequence[int]) -> None:
        """These models' live weights are their best so far."""
        if models:
            self.backend.copy_rows_(self.best, self._rows_of(models))

    def restore_good(self, i: int) -> None:
        """Put model i's last good weights back (it diverged)."""
        self.backend.restore_rows_(self.good, self._rows_of([i]))

    def compact(self, keep: Sequence[int]) -> None:
        """Keep only the models ``keep`` (in row order), dropping the others' rows everywhere."""
        idx = torch.tensor([self._row(i) for i in keep], device=self.backend.flat.device)
        b = self.backend
        b.select_(idx)
        self.opt.select_(idx, b.flat, b.grad)
        self.best = b.select_snapshot(self.best, idx)
        self.good = b.select_snapshot(self.good, idx)
        self.ids = self.ids[idx.cpu().numpy()]
        self._rows()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The backend's and the optimizer's state and the best weights (Trainer.state_dict)."""
        return {"backend": self.backend.state_dict(), "optim": self.opt.state_tensors(),
                "best": dict(self.best)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.backend.load_state_dict(state["backend"])
        self.opt.load_state_tensors(state["optim"])
        for key, value in state["best"].items():
            self.best[key].copy_(value)
        self.good = self.backend.snapshot()

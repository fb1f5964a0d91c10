"""The Backend protocol: what the training driver needs from the thing that holds K models.

The driver (:mod:`dnnlab.train.driver`) runs one epoch loop over any object with this interface.
Two classes implement it:

* :class:`~dnnlab.train.stacked.StackedMLP`: K >= 1 dnnlab MLPs of one shape as one set of
  (K, N) buffers with a hand-written backward pass (the fast step).
* :class:`~dnnlab.train.module.ModuleBackend`: any ``nn.Module`` (K = 1), gradients by autograd.

Both keep every trainable parameter of model k in row k of a (K, N) tensor ``flat`` and its
gradient in the same row of ``grad``, dense kernels first (columns ``[0, n_kernel)``), so the
optimizer, clipping, the L1/L2 penalty and max-norm are written once, in the driver, for both.

A *snapshot* is a dict of tensors holding every model's weights and buffers (BN statistics): the
best and last good weights the driver keeps. A backend's *state dict* is everything that evolves
while training (weights, buffers, counters, the dropout generator): what a resume restores.

:func:`make_backend` is the one place that chooses between the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from dnnlab.errors import ConfigError
from dnnlab.nn.mlp import MLP
from dnnlab.train.module import ModuleBackend
from dnnlab.train.stacked import StackedMLP

Snapshot = dict[str, Tensor]


class Backend(Protocol):
    """K models trained as one: the interface :class:`~dnnlab.train.driver.Trainer` drives."""

    flat: Tensor                     # (K, N) every trainable parameter, kernels first
    grad: Tensor                     # (K, N) their gradients, written by train_step
    n_kernel: int                    # columns [0, n_kernel) of flat are dense kernels (L1/L2)

    @property
    def k(self) -> int:
        """How many models the backend holds now."""

    @property
    def segments(self) -> list[tuple[int, int]]:
        """[start, stop) columns of each parameter tensor in ``flat`` (per-tensor clipping)."""

    @property
    def max_norm_views(self) -> list[tuple[Tensor, int]]:
        """The hidden kernels that max-norm constrains, with the dim of each unit's weights."""

    def train(self, mode: bool = True) -> Any:
        """Switch dropout and batch norm to training (True) or inference (False) mode."""

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Forward and backward on one batch ((B, D) shared or (K, B, D) per model): write every
        gradient into ``grad``; return the mean loss (K,) and the correct count (K,)."""

    def evaluate(self, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """Summed cross-entropy (K,) and correct count (K,) over (x, y) in inference mode."""

    def snapshot(self) -> Snapshot:
        """A copy of every model's weights and buffers."""

    def copy_rows_(self, dst: Snapshot, rows: Tensor) -> None:
        """Copy the live models at ``rows`` into the snapshot ``dst``."""

    def restore_rows_(self, src: Snapshot, rows: Tensor) -> None:
        """Put the snapshot's models at ``rows`` back into the live weights."""

    def select_(self, keep: Tensor) -> None:
        """Keep only the models at positions ``keep``, in that order (drop finished ones)."""

    def select_snapshot(self, snap: Snapshot, keep: Tensor) -> Snapshot:
        """The snapshot's models at positions ``keep`` (to follow :meth:`select_`)."""

    def model_at(self, k: int, snap: Snapshot | None = None) -> nn.Module:
        """Model k as an nn.Module, from the live weights or a snapshot. Read it; change the
        training models only through the backend (a stacked model is a stand-alone copy)."""

    def export(self, k: int, snap: Snapshot | None = None) -> nn.Module:
        """Model k as the result of training (the trained module itself, or a copy)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything that evolves in training: tensors and plain numbers, for a resume."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (names and shapes were checked by the caller)."""

    def close(self) -> None:
        """Give the models back their own storage when training ends (also after an error)."""


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


def make_backend(models: Sequence[nn.Module], device: torch.device, *, fast: bool = True,
                 seed: int = 0) -> Backend:
    """The backend for ``models``: stacked when ``fast`` and every model is a plain dnnlab MLP
    (the lean step), else the module backend, which trains one module of any kind.

    The stacked backend trains copies (read them back with ``export``); the module backend trains
    the module itself.
    """
    if fast and all(stackable(m) for m in models):
        return StackedMLP.from_models(models, device, seed=seed)   # type: ignore[arg-type]
    if len(models) != 1:
        raise ConfigError("only plain dnnlab MLPs train several at once; these models have frozen "
                          "layers, hooks or another class: train them one at a time")
    return ModuleBackend(models[0], device)

"""The nn.Module backend: any model (K = 1), gradients by autograd, the trainer's own optimizer.

What the stacked MLP cannot express trains here: frozen layers and transfer heads, pruning masks
kept by forward hooks, and models a user wrote. To share the one optimizer and the one clipping,
penalty and max-norm code with the stacked backend, the model's trainable parameters are moved
into one (1, N) buffer ``flat``: each parameter's ``.data`` becomes a view of it, and its ``.grad``
a view of a (1, N) buffer ``grad`` that autograd accumulates into (zeroed once per step). The
parameters stay the same ``nn.Parameter`` objects, so hooks, ``state_dict`` keys and the caller's
references keep working; :meth:`ModuleBackend.release` gives every parameter its own storage back
when training ends.

Dense kernels (the ``weight`` of every ``nn.Linear``, or ``weight_orig`` under torch's pruning) come
first in ``flat``, so the L1/L2 penalty is one slice, as in the stacked MLP.
"""

from __future__ import annotations

import copy
import typing

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab.data.batching import batch_slices
from dnnlab.nn.mlp import MLP


def _kernel_ids(model: nn.Module) -> set[int]:
    out = set()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            w = m._parameters.get("weight_orig", m._parameters.get("weight"))
            if w is not None:
                out.add(id(w))
    return out


class ModuleBackend:
    """One nn.Module trained with autograd over flat parameter and gradient buffers."""

    k = 1

    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        kernels = _kernel_ids(model)
        params.sort(key=lambda p: id(p) not in kernels)         # stable: kernels first
        self.params = params
        self.n_kernel = sum(p.numel() for p in params if id(p) in kernels)
        n = sum(p.numel() for p in params)
        self.flat = torch.empty(1, n, device=device)
        self.grad = torch.zeros(1, n, device=device)
        self.segments: list[tuple[int, int]] = []
        self.views: list[Tensor] = []
        offset = 0
        with torch.no_grad():
            for p in params:
                view = self.flat[0, offset:offset + p.numel()].view_as(p)
                view.copy_(p.data)
                p.data = view
                p.grad = self.grad[0, offset:offset + p.numel()].view_as(p)
                self.views.append(view)
                self.segments.append((offset, offset + p.numel()))
                offset += p.numel()
        # max-norm applies to the hidden kernels of a dnnlab MLP (Keras' max_norm, the head free)
        linears = [typing.cast(nn.Linear, b.linear) for b in model.hidden] if isinstance(model, MLP) else []
        weights = [lin._parameters.get("weight_orig", lin._parameters.get("weight")) for lin in linears]
        self.max_norm_views: list[tuple[Tensor, int]] = [(w, 1) for w in weights
                                                         if w is not None and w.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Forward and backward on one batch: mean cross-entropy (1,) and correct count (1,)."""
        self.grad.zero_()
        logits = self.model(x)
        self._rebind()
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return loss.detach().view(1), (logits.detach().argmax(1) == y).sum().view(1)

    @torch.no_grad()
    def _rebind(self) -> None:
        """Put back any parameter whose storage was replaced (torch's ``prune.remove`` assigns
        ``.data``, e.g. from a pruning hook): its values go into ``flat`` and it views it again."""
        for p, view in zip(self.params, self.views):
            if p.data_ptr() != view.data_ptr():
                view.copy_(p.data)
                p.data = view

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        was = self.model.training
        self.model.eval()
        loss_sum = torch.zeros(1, device=x.device)
        correct = torch.zeros(1, device=x.device, dtype=torch.long)
        for s, e in batch_slices(len(y), batch_size):
            logits = self.model(x[s:e])
            loss_sum += F.cross_entropy(logits, y[s:e], reduction="sum")
            correct += (logits.argmax(1) == y[s:e]).sum()
        self.model.train(was)
        return loss_sum, correct

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def copy_rows_(self, dst: dict[str, Tensor], rows: Tensor) -> None:
        for k, v in self.model.state_dict().items():
            dst[k].copy_(v)

    @torch.no_grad()
    def restore_rows_(self, src: dict[str, Tensor], rows: Tensor | None) -> None:
        for k, v in self.model.state_dict().items():
            v.copy_(src[k])

    def select_(self, keep: Tensor) -> None:
        """One model only: keeping it is all there is to keep."""
        if keep.tolist() != [0]:
            raise ValueError(f"the module backend holds one model; cannot keep {keep.tolist()}")

    def select_snapshot(self, snap: dict[str, Tensor], keep: Tensor) -> dict[str, Tensor]:
        self.select_(keep)
        return snap

    def export(self, k: int, snap: dict[str, Tensor] | None = None) -> nn.Module:
        """The trained model itself (with the snapshot's weights, if given)."""
        if snap is not None:
            self.restore_rows_(snap, None)
        return self.model

    def model_at(self, k: int, snap: dict[str, Tensor] | None = None) -> nn.Module:
        """The live model itself; with a snapshot, a stand-alone copy holding its weights."""
        if snap is None:
            return self.model
        model = copy.deepcopy(self.model)
        for p in model.parameters():                  # own storage, not views of the copied flat
            p.grad = None
            p.data = p.data.clone()
        model.load_state_dict(snap)
        return model

    @torch.no_grad()
    def close(self) -> None:
        """Give each parameter its own storage again and drop the gradient views."""
        for p in self.params:
            p.data = p.data.clone()
            p.grad = None

    def state_dict(self) -> dict[str, Tensor]:
        return {f"model.{k}": v.clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k, v in self.model.state_dict().items():
            v.copy_(state[f"model.{k}"])

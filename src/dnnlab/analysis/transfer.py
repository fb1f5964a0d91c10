"""Transfer learning: reuse the hidden layers of a trained MLP, frozen or not, under a new head.

Three pitfalls are handled here rather than left to each caller:

* **Reused layers are copied.** :func:`reuse_layers` builds a new :class:`~dnnlab.nn.mlp.MLP` and
  loads the pretrained tensors into it by value, so training the new model never changes the
  pretrained one (or the file it came from).
* **A frozen layer is frozen all the way.** Its parameters stop requiring gradients, and its
  BatchNorm runs in inference mode (the source task's running statistics, no updates) with its
  dropout off. Both *stay* so after a parent ``model.train()``: :func:`freeze` gives each such
  module a per-instance ``train`` that keeps it in eval mode, and :func:`unfreeze` removes it.
* **Cached features equal live ones.** Because frozen layers are deterministic, their outputs can
  be computed once (:func:`cache_features`) and only the head trained on them, which gives the
  same model as training through the frozen layers. What is left to train is a linear softmax
  layer, a stacked MLP of depth 0 for the training driver (:func:`fit_head`): two matrix
  products per step and no autograd. That, not only the saved forward passes, is where caching's
  speedup comes from: on a CPU a step of a small network is dominated by per-operation overhead,
  which a cached linear head mostly does without.

When layers are unfrozen for fine-tuning their BatchNorm stays in inference mode by default, as
Keras advises for fine-tuning: 500 images in batches of 32 would otherwise overwrite statistics
estimated on 28,000 images of the source task with noisy small-batch ones.
"""

from __future__ import annotations

import dataclasses
import types

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from dnnlab.config import RunConfig
from dnnlab.data.batching import batch_slices
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import MLP, build_mlp, hidden_sizes
from dnnlab.train.driver import FitResult, fit_tensors

_STOCHASTIC = (_BatchNorm, _DropoutNd)   # modules whose behaviour depends on train/eval mode


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """The ``train`` of a frozen BN or dropout module: whatever is asked, it stays in eval mode."""
    self.training = False
    return self


def is_pinned(module: nn.Module) -> bool:
    """True when ``module`` is held in eval mode by :func:`freeze`."""
    return "train" in vars(module)


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``: no gradients, BN in inference mode, dropout off, for good.

    Returns the same module (frozen in place); :func:`unfreeze` undoes it.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, _STOCHASTIC):
            m.train = types.MethodType(_stay_in_eval, m)   # shadows nn.Module.train on this instance
            m.training = False
    return module


def unfreeze(module: nn.Module, *, batch_norm: bool = False) -> nn.Module:
    """Train ``module`` again; its BN stays in inference mode unless ``batch_norm=True``.

    Released modules take their parent's mode at the parent's next ``train()``/``eval()`` call.
    """
    for p in module.parameters():
        p.requires_grad_(True)
    for m in module.modules():
        if is_pinned(m) and (batch_norm or not isinstance(m, _BatchNorm)):
            del m.train
    return module


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _input_modules(model: MLP) -> list[nn.Module]:
    return [m for name, m in model.named_children() if name in ("input_bn", "input_dropout")]


def reuse_layers(pretrained: MLP, n_layers: int, n_classes: int, *, seed: int = 0,
                 frozen: bool = True) -> MLP:
    """A new MLP: copies of the input stage and first ``n_layers`` hidden blocks, a fresh head.

    ``pretrained`` is a trained dnnlab MLP (e.g. ``dnnlab.load_model(run).module``); it is left
    unchanged.

    The head (``n_classes`` outputs) is drawn as :func:`~dnnlab.nn.mlp.build_mlp` draws it with
    ``seed``. With ``frozen`` the reused part is frozen (see :func:`freeze`); the head trains.
    """
    if not isinstance(pretrained, MLP):
        raise DnnlabError(f"reuse_layers needs a dnnlab MLP (e.g. from load_model), got "
                          f"{type(pretrained).__name__}")
    depth = len(pretrained.hidden)
    if not 1 <= n_layers <= depth:
        raise DnnlabError(f"cannot reuse {n_layers} hidden layers of a model that has {depth}; "
                          f"choose 1..{depth}")
    cfg = dataclasses.replace(pretrained.config, hidden=hidden_sizes(pretrained.config)[:n_layers])
    model = build_mlp(cfg, pretrained.in_features, n_classes, seed=seed)
    keep = tuple(f"hidden.{i}." for i in range(n_layers)) + ("input_bn.",)
    state = {k: v for k, v in pretrained.state_dict().items() if k.startswith(keep)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise DnnlabError(f"the pretrained layers do not fit the new model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    model.to(next(pretrained.parameters()).device)
    if frozen:
        for m in [*_input_modules(model), *model.hidden]:
            freeze(m)
    return model


@torch.no_grad()
def cache_features(model: MLP, n_layers: int, x: Tensor, batch_size: int = 4096) -> Tensor:
    """The outputs of the first ``n_layers`` hidden blocks of ``model`` for every row of ``x``,
    in eval mode, ``batch_size`` rows at once."""
    was_training = model.training
    model.eval()
    try:
        out = [model.features(x[s:e], n_layers) for s, e in batch_slices(len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else x.new_zeros((0, hidden_sizes(model.config)[n_layers - 1]))


def head_model(model: MLP) -> MLP:
    """An MLP without hidden layers whose only layer is a copy of ``model``'s head.

    Trained on :func:`cache_features` outputs of ``model``'s frozen layers it follows the same
    path as ``model`` itself would (same start, same batches), so its head can be put back with
    ``model.head.load_state_dict(head.head.state_dict())``.
    """
    cfg = dataclasses.replace(model.config, hidden=[], input_batch_norm=False, input_dropout=0.0)
    head = MLP(cfg, model.head.in_features, model.n_classes)
    head.head.load_state_dict(model.head.state_dict())
    return head.to(model.head.weight.device)


def fit_head(cfg: RunConfig, head: MLP, train: tuple[Tensor, Tensor],
             valid: tuple[Tensor, Tensor] | None = None,
             test: tuple[Tensor, Tensor] | None = None) -> FitResult:
    """Train ``head`` (an MLP without hidden layers, see :func:`head_model`) on cached features.

    It is the training driver's run on these features (:func:`dnnlab.train.driver.fit_tensors`):
    the optimizer and schedule of ``cfg.optim``, the batches of ``cfg.train.seed``, the L1/L2
    penalty on the kernel, clipping, early stopping with restore-best. A head without hidden
    layers is a stacked MLP of depth 0, so each step is two matrix products and a softmax.
    """
    if len(head.hidden):
        raise DnnlabError("fit_head trains a head without hidden layers; build it with head_model()")
    return fit_tensors(cfg, head, train, valid, test)

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
  layer, so :func:`fit_head` trains it without autograd: the cross-entropy gradient in closed
  form (``(softmax - onehot) / batch`` times the inputs), weight and bias packed in one tensor,
  the config's own optimizer, schedule, batches and early stopping. That, not only the saved
  forward passes, is where caching's speedup comes from: on a CPU a step of a small network is
  dominated by per-operation overhead, which a cached linear head mostly does without.

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

import math
import time

from dnnlab.config import RunConfig
from dnnlab.data.batching import batch_slices, epoch_permutation
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import MLP, build_mlp, hidden_sizes
from dnnlab.optim import clip_gradients_, make_optimizer, make_schedule
from dnnlab.train.loop import METRIC_COLUMNS, EarlyStopping, FitResult

_STOCHASTIC = (_BatchNorm, _DropoutNd)   # modules whose behaviour depends on train/eval mode


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """The ``train`` of a frozen BN or dropout module: whatever is asked, it stays in eval mode."""
    self.training = False
    return self


def is_pinned(module: nn.Module) -> bool:
    """True when ``module`` is held in eval mode by :func:`freeze`."""
    return "train" in vars(module)


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``: no gradients, BN in inference mode, dropout off, for good."""
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
    """The outputs of the first ``n_layers`` hidden blocks for every row of ``x``, in eval mode."""
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


class _PackedHead(nn.Module):
    """A linear layer as one ``(classes, features + 1)`` matrix: weight columns, then the bias."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with torch.no_grad():
            self.theta = nn.Parameter(torch.cat([linear.weight, linear.bias[:, None]], 1).clone())

    def unpack_into(self, linear: nn.Linear) -> None:
        with torch.no_grad():
            linear.weight.copy_(self.theta[:, :-1])
            linear.bias.copy_(self.theta[:, -1])


def _with_ones(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_ones((len(x), 1))], 1)


def _loss_acc_logits(logits: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``logits`` against ``y`` (one host sync)."""
    loss = (torch.logsumexp(logits, 1) - logits.gather(1, y[:, None])[:, 0]).mean()
    both = torch.stack([loss, (logits.argmax(1) == y).float().mean()]).tolist()
    return both[0], both[1]


@torch.no_grad()
def _loss_acc(theta: Tensor, x1: Tensor, y: Tensor) -> tuple[float, float]:
    return _loss_acc_logits(x1 @ theta.t(), y)


@torch.no_grad()
def fit_head(cfg: RunConfig, head: MLP, train: tuple[Tensor, Tensor],
             valid: tuple[Tensor, Tensor] | None = None,
             test: tuple[Tensor, Tensor] | None = None) -> FitResult:
    """Train ``head`` (an MLP without hidden layers, see :func:`head_model`) on cached features.

    The same run as :func:`dnnlab.train.fit` would make on these features: the optimizer and
    schedule of ``cfg.optim``, the batches of ``cfg.train.seed``, the model's L1/L2 penalty on
    the kernel, gradient clipping, early stopping with restore-best; the history has the same
    columns. Features and labels are tensors on the device to train on.
    """
    if len(head.hidden):
        raise DnnlabError("fit_head trains a head without hidden layers; build it with head_model()")
    t, mcfg = cfg.train, head.config
    x1, y = _with_ones(train[0]), train[1]
    v1 = (_with_ones(valid[0]), valid[1]) if valid is not None and len(valid[1]) else None
    n = len(y)
    slices = batch_slices(n, t.batch_size)
    packed = _PackedHead(head.head).to(x1.device)
    theta = packed.theta
    optimizer = make_optimizer([theta], cfg.optim)
    for group in optimizer.param_groups:     # one tensor: the single-tensor path is quicker
        if "foreach" in group:
            group["foreach"] = False
    schedule = make_schedule(optimizer, cfg.optim, len(slices), t.epochs)
    stopper = EarlyStopping(t.monitor, t.patience, t.min_delta)
    onehot = torch.eye(head.n_classes, device=x1.device, dtype=x1.dtype).index_select(0, y)
    clip = cfg.optim.clip_value is not None or cfg.optim.clip_norm is not None
    history: dict[str, list[float]] = {c: [] for c in METRIC_COLUMNS}
    status, message = "completed", ""
    for epoch in range(1, t.epochs + 1):
        t0 = time.perf_counter()
        perm = epoch_permutation(n, t.seed, epoch - 1, x1.device)
        good = theta.detach().clone()
        seen = []                                   # logits before each step, for the epoch's metrics
        for s, e in slices:
            idx = perm[s:e]
            xb = x1.index_select(0, idx)
            logits = xb @ theta.t()
            seen.append(logits)
            grad = logits.softmax(1).sub_(onehot.index_select(0, idx)).t() @ xb
            grad.div_(e - s)
            if mcfg.l2:
                grad[:, :-1].add_(theta[:, :-1], alpha=2 * mcfg.l2)
            if mcfg.l1:
                grad[:, :-1].add_(theta[:, :-1].sign(), alpha=mcfg.l1)
            theta.grad = grad
            if clip:
                clip_gradients_([theta], cfg.optim)
            optimizer.step()
            schedule.on_batch_end()
        loss, acc = _loss_acc_logits(torch.cat(seen), y.index_select(0, perm))
        metrics = {"epoch": epoch, "loss": loss, "accuracy": acc}
        if not math.isfinite(metrics["loss"]) or not bool(torch.isfinite(theta).all()):
            theta.copy_(good)
            status = "diverged"
            message = (f"the loss became {metrics['loss']} at epoch {epoch}; training stopped with "
                       f"the last good weights kept. Try a lower optim.lr (now {cfg.optim.lr:.3g})")
            break
        if v1 is not None:
            metrics["val_loss"], metrics["val_accuracy"] = _loss_acc(theta, *v1)
        else:
            metrics["val_loss"] = metrics["val_accuracy"] = math.nan
        metrics["lr"] = float(optimizer.param_groups[0]["lr"])
        metrics["seconds"] = time.perf_counter() - t0
        for c in METRIC_COLUMNS:
            history[c].append(metrics[c])
        stop = stopper.update(epoch, metrics, packed)
        schedule.on_epoch_end(metrics)
        if stop:
            status = "stopped_early"
            message = (f"no improvement of {t.monitor} for {stopper.wait} epochs; best at "
                       f"epoch {stopper.best_epoch}")
            break
    if t.restore_best and stopper.best_state is not None:
        packed.load_state_dict(stopper.best_state)
    packed.unpack_into(head.head)
    result = FitResult(model=head, history=history, best_epoch=stopper.best_epoch, best=stopper.best,
                       monitor=t.monitor, status=status, message=message)
    if test is not None and len(test[1]) and status != "diverged":
        loss, acc = _loss_acc(theta, _with_ones(test[0]), test[1])
        result.test = {"test_loss": loss, "test_accuracy": acc}
    return result

"""The stacked-MLP backend: K MLPs of one shape as one set of buffers, with a hand-written backward.

Layout. Every trainable tensor of the K models is a view of one (K, N) buffer ``flat`` (kernels
first, then dense biases, then BN scales and shifts and PReLU slopes) and its gradient a view of a
(K, N) buffer ``grad``. So the optimizer updates every parameter of every model with a few
elementwise kernels (:mod:`dnnlab.optim.flat`), a per-model hyperparameter is a (K, 1) column, a
per-model gradient norm is one reduction, and dropping finished models is one ``index_select``.
Kernels are stored (K, in, out) so that ``x @ W`` needs no transpose; nn.Linear's (out, in) weight
is transposed on the way in and out.

Why no autograd. On a CPU a step of the chapter's 20 x 100 MLP at batch 32 is dominated by the
cost of *issuing* operations, not by arithmetic: autograd records ~140 nodes per step and replays
them with its own bookkeeping. The backward pass of a dense stack is short enough to write out
(:meth:`StackedMLP.train_step`): per layer, one matrix product for the kernel's gradient written
straight into its view of ``grad`` (no accumulation, no zeroing), one sum for the bias, one product
for the signal going down, and the activation's derivative as torch's own fused backward kernel
(:func:`dnnlab.nn.activations.activation_grad`). BatchNorm is torch's ``native_batch_norm`` and
its backward over the K models' channels side by side (a (B, K * C) view), so running statistics
and gradients are exactly nn.BatchNorm1d's. The gradients equal autograd's on K separate
:class:`~dnnlab.nn.mlp.MLP` modules (``tests/test_train_stacked.py``).

In a net of equal hidden widths without batch norm or hidden dropout (the chapter's 20 x 100 ELU
net), the activation is computed in place over its product's output (its derivative reads the
output alone: :func:`dnnlab.nn.activations.activation_inplace`), every hidden layer writes its
output into one (L, K, B, W) buffer and its gradient into another, and the kernel and bias
gradients of all hidden layers are taken after the backward loop as one batched product and one
sum (:meth:`StackedMLP._stacked_grads`) instead of a product and a sum a layer: on a CPU, issuing
an operation costs about as much as a 32 x 100 x 100 product's arithmetic. benchmarks/roofline.py
measures the step against the machine's own matrix-product rate (benchmarks/README.md).

Input BatchNorm needs no backward pass of its own: the data needs no gradient, and gamma's and
beta's gradients follow from the first kernel's gradient product (:meth:`StackedMLP._input_grads`).

On a CPU, batch norm runs on one thread within a training step, so that the step's result does not
depend on the thread count (:meth:`StackedMLP._one_thread`), and the input-sized tensors of a step
live in buffers kept between steps (:meth:`StackedMLP._scratch`).

Dropout and alpha dropout take a per-model rate; the masks of all K models are drawn at once from
the backend's own generator, so they differ from the masks a single nn.Module run draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dnnlab.config import ModelConfig, hidden_sizes, shape_of
from dnnlab.data.batching import batch_slices
from dnnlab.errors import ConfigError
from dnnlab.nn.activations import (
    RRELU_LOWER,
    RRELU_UPPER,
    activation_fn,
    activation_grad,
    activation_inplace,
)
from dnnlab.nn.mlp import MLP

ALPHA_DROPOUT = 1.7580993408473766          # -selu_scale * selu_alpha, torch's and Keras' constant
_aten = torch.ops.aten
BNViews = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]   # see _Layer.bn
Tape = list[Any]            # what the forward pass keeps for the backward pass, in order


class _Stacks(NamedTuple):
    """The hidden layers' outputs and the gradients at their products' outputs, (L, K, B, W)
    each, and their per-layer views (made once: each view costs a dispatch per step)."""
    acts: Tensor
    grads: Tensor
    acts_at: tuple[Tensor, ...]
    grads_at: tuple[Tensor, ...]


def dropout_seed(seed: int) -> int:
    """A seed for the dropout masks unrelated to ``seed`` itself, which the initial weights use:
    two generators seeded alike give the same stream, and masks would correlate with weights."""
    return int(np.random.SeedSequence([int(seed), 0xD80]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class _Slot:
    """Where one MLP tensor lives in ``flat``: columns [offset, offset + numel), stacked shape."""
    key: str                  # the MLP state_dict key
    offset: int
    shape: tuple[int, ...]    # per model, in the stack's layout
    transposed: bool          # kernels: stack (in, out) <-> MLP (out, in)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class _Layer:
    """One hidden layer's views: kernel, bias (None under BN-before), BN, PReLU slope; grads."""
    w: Tensor
    gw: Tensor
    b: Tensor | None
    gb: Tensor | None
    bn: BNViews | None        # (running_mean, running_var, gamma, beta, g_gamma, g_beta)
    slope: Tensor | None      # PReLU (K, C)
    gslope: Tensor | None

    def __post_init__(self) -> None:  # the views a step uses, made once (each costs a dispatch per step)
        self.w_t = self.w.transpose(1, 2)                       # (K, out, in): signal going down
        self.b_row = None if self.b is None else self.b.unsqueeze(1)   # (K, 1, out): broadcast


class StackedMLP:
    """K MLPs with the same shape (see :func:`shape_of`), trained as one.

    ``forward(x)`` takes (K, B, D) per-model batches or one (B, D) batch shared by all models and
    returns (K, B, n_classes) logits; :meth:`train_step` also computes the loss and writes every
    gradient into ``grad``. Build it with :meth:`from_models`; get model k back with
    :meth:`to_mlp`. The weights are copied exactly both ways.
    """

    def __init__(self, configs: list[ModelConfig], in_features: int, n_classes: int,
                 device: torch.device | str = "cpu", seed: int = 0):
        if not configs:
            raise ConfigError("a stacked model needs at least one model config")
        shape = shape_of(configs[0])
        for i, c in enumerate(configs[1:], 1):
            diff = [k for k, v in shape_of(c).items() if v != shape[k]]
            if diff:
                raise ConfigError(f"model {i} differs from model 0 in {', '.join(diff)}; the K-model "
                                  "engine stacks models of one shape: train such variants in "
                                  "separate groups (dnnlab sweep groups them by shape)")
        self.configs = list(configs)
        self.in_features, self.n_classes = int(in_features), int(n_classes)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(dropout_seed(seed))
        self.training = True
        cfg = configs[0]
        self.sizes = [self.in_features] + hidden_sizes(cfg)
        self.bn_position = cfg.batch_norm
        self.bn_momentum = round(1.0 - cfg.bn_momentum, 12)      # as nn/mlp.py
        self.bn_eps = cfg.bn_epsilon
        self.activation, self.act_param = cfg.activation, cfg.activation_param
        plain = cfg.activation not in ("prelu", "rrelu")
        self.act = activation_fn(cfg.activation, cfg.activation_param) if plain else None
        self.act_grad = activation_grad(cfg.activation, cfg.activation_param) if plain else None
        self.act_ = activation_inplace(cfg.activation, cfg.activation_param) if plain else None
        self.alpha_dropout = cfg.dropout_kind == "alpha"
        self.dropout_all = cfg.dropout_layers == "all"           # else after the last layer only
        self.bn_steps = 0                                       # BN's num_batches_tracked
        self._bufs: dict[str, Tensor] = {}                      # see _scratch
        self._stack_views: _Stacks | None = None                # see _stacks
        self._threads: int | None = None                        # see _one_thread
        self.slots, self.n_kernel = self._plan()
        k, n = len(configs), sum(s.numel for s in self.slots)
        self.flat = torch.zeros(k, n, device=self.device)
        self.grad = torch.zeros(k, n, device=self.device)
        self.buffers_: dict[str, Tensor] = {}
        for key, width in self._bn_layers():
            self.buffers_[f"{key}.running_mean"] = torch.zeros(k, width, device=self.device)
            self.buffers_[f"{key}.running_var"] = torch.ones(k, width, device=self.device)
        self._set_rates()
        self._bind()

    # ------------------------------------------------------------------ structure
    def _bn_layers(self) -> list[tuple[str, int]]:
        out = [("input_bn", self.in_features)] if self.configs[0].input_batch_norm else []
        if self.bn_position != "none":
            out += [(f"hidden.{i}.bn", w) for i, w in enumerate(self.sizes[1:])]
        return out

    def _plan(self) -> tuple[list[_Slot], int]:
        """Kernels first, then dense biases, then BN and PReLU parameters; where kernels end."""
        kernels, dense_biases, rest = [], [], []
        layers = list(zip(self.sizes[:-1], self.sizes[1:]))
        for i, (a, b) in enumerate(layers):
            kernels.append((f"hidden.{i}.linear.weight", (a, b), True))
            if self.bn_position != "before":
                dense_biases.append((f"hidden.{i}.linear.bias", (b,), False))
        kernels.append(("head.weight", (self.sizes[-1], self.n_classes), True))
        dense_biases.append(("head.bias", (self.n_classes,), False))
        for key, width in self._bn_layers():
            rest += [(f"{key}.weight", (width,), False), (f"{key}.bias", (width,), False)]
        if self.activation == "prelu":
            rest += [(f"hidden.{i}.act.weight", (b,), False) for i, (a, b) in enumerate(layers)]
        slots, offset = [], 0
        n_kernel = sum(math.prod(s) for _, s, _ in kernels)
        for key, shape, transposed in kernels + dense_biases + rest:
            slots.append(_Slot(key, offset, shape, transposed))
            offset += math.prod(shape)
        return slots, n_kernel

    def _bind(self) -> None:
        """(Re)create the parameter views of ``flat`` and their gradient views of ``grad``."""
        k = self.flat.shape[0]
        views: dict[str, tuple[Tensor, Tensor]] = {}
        for s in self.slots:
            cols = slice(s.offset, s.offset + s.numel)
            views[s.key] = (self.flat[:, cols].view(k, *s.shape),
                            self.grad[:, cols].view(k, *s.shape))
        none = (None, None)
        self.layers = []
        for i in range(len(self.sizes) - 1):
            w, gw = views[f"hidden.{i}.linear.weight"]
            b, gb = views.get(f"hidden.{i}.linear.bias", none)
            slope, gslope = views.get(f"hidden.{i}.act.weight", none)
            self.layers.append(_Layer(w, gw, b, gb, self._bn(f"hidden.{i}.bn", views), slope,
                                      gslope))
        w, gw = views["head.weight"]
        b, gb = views["head.bias"]
        self.head = _Layer(w, gw, b, gb, None, None, None)
        self.input_bn = self._bn("input_bn", views)
        self._grad_blocks = self._blocks()

    def _blocks(self) -> tuple[Tensor, Tensor] | None:
        """For a net of equal hidden widths W with plain dense layers (no batch norm, an
        activation computed in place): the kernel gradients of hidden layers 1.. as one
        (K, L - 1, W, W) view of ``grad`` and the hidden biases' gradients as one (K, L, W) view
        (each block lies in one piece: see :meth:`_plan`). None for any other net."""
        widths = set(self.sizes[1:])
        if len(widths) != 1 or self.bn_position != "none" or self.act_ is None:
            return None
        width, n, k = widths.pop(), len(self.layers), self.grad.shape[0]
        kernel = next(s for s in self.slots if s.key == "hidden.0.linear.weight")
        bias = next(s for s in self.slots if s.key == "hidden.0.linear.bias")
        start = kernel.offset + kernel.numel
        gw = self.grad[:, start:start + (n - 1) * width * width].view(k, n - 1, width, width)
        gb = self.grad[:, bias.offset:bias.offset + n * width].view(k, n, width)
        return gw, gb

    def _bn(self, key: str, views: dict[str, tuple[Tensor, Tensor]]) -> BNViews | None:
        if f"{key}.running_mean" not in self.buffers_:
            return None
        (gamma, g_gamma), (beta, g_beta) = views[f"{key}.weight"], views[f"{key}.bias"]
        return (self.buffers_[f"{key}.running_mean"], self.buffers_[f"{key}.running_var"],
                gamma, beta, g_gamma, g_beta)

    def _set_rates(self) -> None:
        """Per-model dropout rates as (K, 1, 1) tensors with the mask values they imply."""
        self.dropout = self._rate_tensors([c.dropout for c in self.configs])
        self.input_dropout = self._rate_tensors([c.input_dropout for c in self.configs])

    def _rate_tensors(self, rates: list[float]) -> tuple[Tensor, ...] | None:
        """(rate, value where kept, ...) for y = x * a (+ b for alpha dropout), or None if all 0."""
        if not any(rates):
            return None
        p = torch.tensor(rates, dtype=torch.float64)
        vals: tuple[Tensor, ...]
        if self.alpha_dropout:
            a = 1.0 / torch.sqrt((ALPHA_DROPOUT ** 2 * p + 1) * (1 - p))
            kept_a, kept_b = a, ALPHA_DROPOUT * a * p
            dropped_b = -ALPHA_DROPOUT * a + ALPHA_DROPOUT * a * p
            vals = (p, kept_a, kept_b, dropped_b)
        else:
            vals = (p, 1.0 / (1.0 - p))
        return tuple(v.to(torch.float32).view(-1, 1, 1).to(self.device) for v in vals)

    @property
    def k(self) -> int:
        return self.flat.shape[0]

    def train(self, mode: bool = True) -> StackedMLP:
        self.training = mode
        return self

    def eval(self) -> StackedMLP:
        return self.train(False)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, tape: Tape | None = None,
                acts: tuple[Tensor, ...] | None = None) -> Tensor:
        """Logits (K, B, n_classes). With a ``tape`` list, what the backward pass needs is kept;
        with ``acts`` (L views (K, B, W)), hidden layer i's output is written into ``acts[i]``."""
        k = self.k
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(k, -1, -1)
        elif x.dim() > 3:
            x = x.flatten(2)
        training = self.training
        if training and (self.input_bn is not None or self.bn_position != "none"):
            self.bn_steps += 1
        if self.input_bn is not None:
            x = self._input_norm(x, tape)
        if self.input_dropout is not None and training:
            x = self._drop(x, self.input_dropout, tape)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            self._one_thread(False)
            if tape is not None:
                tape.append(x)                                   # the layer's input
            out = None if acts is None else acts[i]
            x = torch.bmm(x, layer.w, out=out) if layer.b is None else torch.baddbmm(
                cast(Tensor, layer.b_row), x, layer.w, out=out)
            if layer.bn is not None and self.bn_position == "before":
                x = self._batch_norm(x, layer.bn, tape)
            x = self._activate(x, layer, tape)
            if layer.bn is not None and self.bn_position == "after":
                x = self._batch_norm(x, layer.bn, tape)
            if self.dropout is not None and training and (self.dropout_all or i == last):
                x = self._drop(x, self.dropout, tape)
        self._one_thread(False)
        if tape is not None:
            tape.append(x)
        return torch.baddbmm(cast(Tensor, self.head.b_row), x, self.head.w)

    __call__ = forward

    def _batch_norm(self, x: Tensor, bn: BNViews, tape: Tape | None) -> Tensor:
        self._one_thread(True)
        mean, var, gamma, beta = bn[:4]
        k, b, c = x.shape
        x2 = x.transpose(0, 1).reshape(b, k * c)
        out: tuple[Tensor, Tensor, Tensor] = _aten.native_batch_norm(
            x2, gamma.reshape(-1), beta.reshape(-1), mean.view(-1), var.view(-1), self.training,
            self.bn_momentum, self.bn_eps)
        y, save_mean, save_invstd = out
        if tape is not None:
            tape.append((x2, save_mean, save_invstd))
        return y.view(b, k, c).transpose(0, 1)

    def _input_norm(self, x: Tensor, tape: Tape | None) -> Tensor:
        """Input BatchNorm: each model's (B, D) slice normalized on its own (contiguous, so no
        transposed copy of the widest activation, and a slice stays in cache), then scaled and
        shifted for all models at once. The tape keeps the normalized input x_hat."""
        self._one_thread(True)
        assert self.input_bn is not None
        mean, var, gamma, beta = self.input_bn[:4]
        xhat = self._scratch("xhat", x.shape, x) if tape is not None else torch.empty_like(x)
        save = torch.empty(2, *mean.shape, device=x.device, dtype=x.dtype)
        for j in range(self.k):     # no weight or bias: native_batch_norm returns x_hat itself
            _aten.native_batch_norm.out(x[j], None, None, mean[j], var[j], self.training,
                                        self.bn_momentum, self.bn_eps, out=xhat[j],
                                        save_mean=save[0, j], save_invstd=save[1, j])
        if tape is None:
            return torch.addcmul(beta.unsqueeze(1), xhat, gamma.unsqueeze(1))
        tape.append(xhat)
        return torch.addcmul(beta.unsqueeze(1), xhat, gamma.unsqueeze(1),
                             out=self._scratch("y", x.shape, x))

    def _activate(self, z: Tensor, layer: _Layer, tape: Tape | None) -> Tensor:
        if self.act_ is not None:                               # derivative from the output
            y = self.act_(z)
            if tape is not None:
                tape.append((y, y))
            return y
        if self.act is not None:
            y = self.act(z)
            if tape is not None:
                tape.append((z, y))
            return y
        if self.activation == "prelu":
            slope = cast(Tensor, layer.slope).unsqueeze(1)
            if tape is not None:
                tape.append((z, slope))
            return torch.where(z >= 0, z, z * slope)
        if not self.training:                                    # rrelu at inference: mean slope
            return F.leaky_relu(z, (RRELU_LOWER + RRELU_UPPER) / 2)
        noise = torch.empty_like(z).uniform_(RRELU_LOWER, RRELU_UPPER, generator=self.generator)
        noise = torch.where(z >= 0, 1.0, noise)
        if tape is not None:
            tape.append((z, noise))
        return z * noise

    def _drop(self, x: Tensor, rates: tuple[Tensor, ...], tape: Tape | None = None) -> Tensor:
        keep = torch.rand(x.shape, generator=self.generator, device=x.device,
                          dtype=x.dtype) >= rates[0]
        if len(rates) == 2:
            mult = torch.where(keep, rates[1], 0.0)
            y = x * mult
        else:
            _, kept_a, kept_b, dropped_b = rates
            mult = torch.where(keep, kept_a, 0.0)
            y = torch.addcmul(torch.where(keep, kept_b, dropped_b), x, mult)
        if tape is not None:
            tape.append(mult)
        return y

    # ------------------------------------------------------------------ backward
    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Forward and backward on one batch: per-model mean cross-entropy (K,) and correct
        count (K,) on the device; every parameter's gradient is written into ``grad``.

        ``x`` is (B, D) shared by all models or (K, B, D); ``y`` is (B,) or (K, B).
        """
        tape: Tape = []
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and threads > 1:
            self._threads = threads                         # see _one_thread
        stacks = None
        if self._grad_blocks is not None and (self.dropout is None or not self.training):
            stacks = self._stacks((len(self.layers), self.k, x.shape[-2], self.sizes[1]), x)
        try:
            logits = self.forward(x, tape, None if stacks is None else stacks.acts_at)
            k, b, _ = logits.shape
            y = y.expand(k, b) if y.dim() == 1 else y
            logp = torch.log_softmax(logits, -1)
            target = y.unsqueeze(-1)
            loss = logp.gather(-1, target).squeeze(-1).mean(1).neg_()
            correct = (logits.argmax(-1) == y).sum(1)
            g = logp.exp_().scatter_add_(-1, target, _minus_ones(k, b, logp)).div_(b)  # d mean CE
            self._backward(g, tape, stacks)
        finally:
            if self._threads is not None:
                self._threads = None
                torch.set_num_threads(threads)
        return loss, correct

    def _one_thread(self, one: bool) -> None:
        """In a training step on a CPU with several threads: batch norm (``one``) runs on one
        thread, everything else on all of them. torch's batch norm sums in an order that depends
        on the thread count (its products do not: checked for these shapes), so a step's result
        stays the same whatever threads it is given (the thread policy changes them while a
        run trains, :mod:`dnnlab.train.threads`)."""
        if self._threads is not None:
            want = 1 if one else self._threads
            if torch.get_num_threads() != want:
                torch.set_num_threads(want)

    def _backward(self, g: Tensor, tape: Tape, stacks: _Stacks | None) -> None:
        """The gradients, last layer first. With ``stacks`` (the hidden layers' outputs and the
        buffer their gradients go into, (L, K, B, W) each), the hidden layers' kernel and bias
        gradients are taken after the loop, for all layers at once (:meth:`_stacked_grads`)."""
        grads = None if stacks is None else stacks.grads_at
        h = tape.pop()
        self._dense_grads(h, g, self.head)
        last = len(self.layers) - 1
        g = torch.bmm(g, self.head.w_t, out=None if grads is None else grads[last])
        for i in range(last, -1, -1):
            layer = self.layers[i]
            if self.dropout is not None and (self.dropout_all or i == last):
                g = g * tape.pop()
            if layer.bn is not None and self.bn_position == "after":
                g = self._batch_norm_grad(g, layer.bn, tape.pop())
            g = self._activate_grad(g, layer, tape.pop())
            if layer.bn is not None and self.bn_position == "before":
                g = self._batch_norm_grad(g, layer.bn, tape.pop())
            self._one_thread(False)
            h = tape.pop()
            if i == 0 and self.input_bn is not None:
                self._input_grads(h, g, tape)
                break
            if stacks is None or i == 0:
                self._dense_grads(h, g, layer)
            if i > 0:                                           # the input itself needs none
                g = torch.bmm(g, layer.w_t, out=None if grads is None else grads[i - 1])
        if stacks is not None:
            self._stacked_grads(stacks.acts, stacks.grads)

    def _stacked_grads(self, acts: Tensor, grads: Tensor) -> None:
        """The hidden layers' bias gradients as one sum, and the kernel gradients of layers
        1.. as one batched product per model (layer i's input is layer i - 1's output): two
        calls where one product and one sum a layer were ~40 (on a CPU each costs microseconds
        to issue, about as much as a 32 x 100 x 100 product's arithmetic)."""
        assert self._grad_blocks is not None
        gw, gb = self._grad_blocks
        torch.sum(grads, 2, out=gb.transpose(0, 1))
        for j in range(self.k):
            torch.bmm(acts[:-1, j].transpose(1, 2), grads[1:, j], out=gw[j])

    def _input_grads(self, h: Tensor, g: Tensor, tape: Tape) -> None:
        """The first layer's and the input BatchNorm's gradients, from the first layer's input
        ``h`` and output gradient ``g`` (K, B, W).

        The data needs no gradient, so BN's own backward (through the batch statistics) is not
        needed: only gamma's (sum_b g_y * x_hat) and beta's (sum_b g_y), with g_y = g @ W^T the
        gradient at BN's output. Without input dropout between them, h = x_hat * gamma + beta,
        and both follow from M = x_hat^T g (D, W), the one product the kernel's gradient needs
        anyway: dW = gamma * M + beta * colsum(g), d_gamma = rowsum(W * M),
        d_beta = W @ colsum(g). That replaces the (B, D) product g @ W^T and BN's backward,
        about a quarter of a step of the chapter's BN net on 3072 inputs (profiled, K = 3).
        With input dropout in between, g_y carries the mask and is computed."""
        layer = self.layers[0]
        assert self.input_bn is not None
        g_gamma, g_beta = self.input_bn[4:]
        s = g.sum(1)                                                    # (K, W)
        if layer.gb is not None:
            layer.gb.copy_(s)
        if self.input_dropout is not None:
            self._dense_grads(h, g, layer)
            g_y = torch.bmm(g, layer.w_t).mul_(tape.pop())
            torch.sum(g_y * tape.pop(), 1, out=g_gamma)
            torch.sum(g_y, 1, out=g_beta)
            return
        xhat = tape.pop()
        gamma, beta = self.input_bn[2:4]
        m = self._scratch("m", layer.w.shape, g)
        torch.bmm(xhat.transpose(1, 2), g, out=m)                       # (K, D, W)
        torch.mul(m, gamma.unsqueeze(-1), out=layer.gw).addcmul_(beta.unsqueeze(-1), s.unsqueeze(1))
        torch.sum(m.mul_(layer.w), -1, out=g_gamma)
        torch.bmm(layer.w, s.unsqueeze(-1), out=g_beta.unsqueeze(-1))

    @staticmethod
    def _dense_grads(h: Tensor, g: Tensor, layer: _Layer) -> None:
        torch.bmm(h.transpose(1, 2), g, out=layer.gw)
        if layer.gb is not None:
            torch.sum(g, 1, out=layer.gb)

    def _batch_norm_grad(self, g: Tensor, bn: BNViews, saved: tuple[Tensor, Tensor, Tensor]
                         ) -> Tensor:
        self._one_thread(True)
        mean, var, gamma, _, g_gamma, g_beta = bn
        x2, save_mean, save_invstd = saved
        k, b, c = g.shape
        grads: tuple[Tensor, Tensor, Tensor] = _aten.native_batch_norm_backward(
            g.transpose(0, 1).reshape(b, k * c), x2, gamma.reshape(-1), mean.view(-1),
            var.view(-1), save_mean, save_invstd, True, self.bn_eps, [True, True, True])
        gx, gg, gb = grads
        g_gamma.copy_(gg.view(k, c))
        g_beta.copy_(gb.view(k, c))
        return gx.view(b, k, c).transpose(0, 1)

    def _activate_grad(self, g: Tensor, layer: _Layer, saved: tuple[Tensor, Tensor]) -> Tensor:
        z, extra = saved
        if self.act_grad is not None:
            return self.act_grad(g, z, extra)
        if self.activation == "prelu":
            negative = z < 0
            torch.sum(torch.where(negative, g * z, 0.0), 1, out=layer.gslope)
            return torch.where(negative, g * extra, g)
        return g * extra                                          # rrelu: the drawn slopes

    def _stacks(self, shape: tuple[int, ...], like: Tensor) -> _Stacks:
        """The buffers of :meth:`_stacked_grads` (:meth:`_scratch`), with their views."""
        acts, grads = self._scratch("acts", shape, like), self._scratch("grads", shape, like)
        if self._stack_views is None or self._stack_views.acts is not acts \
                or self._stack_views.grads is not grads:
            self._stack_views = _Stacks(acts, grads, acts.unbind(0), grads.unbind(0))
        return self._stack_views

    def _scratch(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A buffer kept from one training step to the next, for the input-sized tensors: a fresh
        megabyte-sized tensor each step is fresh memory pages each time (mapped and zeroed by
        the OS), which on a CPU cost more than the arithmetic written into them."""
        buf = self._bufs.get(name)
        if buf is None or buf.shape != shape or buf.device != like.device:
            buf = self._bufs[name] = torch.empty(shape, device=like.device, dtype=like.dtype)
        return buf

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
        """Per-model (loss sum, correct count) over (x, y), in eval mode, in large batches."""
        was = self.training
        self.eval()
        k = self.k
        loss_sum = torch.zeros(k, device=x.device)
        correct = torch.zeros(k, device=x.device, dtype=torch.long)
        for s, e in batch_slices(len(y), batch_size):
            logits = self.forward(x[s:e])
            yb = y[s:e].expand(k, e - s)
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                        reduction="none").view(k, -1).sum(1)
            correct += (logits.argmax(-1) == yb).sum(1)
        self.train(was)
        return loss_sum, correct

    # ------------------------------------------------------------------ for the driver
    @property
    def max_norm_views(self) -> list[tuple[Tensor, int]]:
        """The hidden kernels (K, in, out) and the dim of each unit's incoming weights."""
        return [(layer.w, 1) for layer in self.layers]

    @property
    def segments(self) -> list[tuple[int, int]]:
        """[start, stop) columns of each parameter tensor in ``flat`` (per-tensor clipping)."""
        return [(s.offset, s.offset + s.numel) for s in self.slots]

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_models(cls, models: list[MLP], device: torch.device | str | None = None,
                    seed: int = 0) -> StackedMLP:
        """Stack ``models`` (MLPs of one shape); the K-th row holds an exact copy of model K."""
        if not models:
            raise ConfigError("from_models needs at least one MLP")
        m0 = models[0]
        for m in models[1:]:
            if (m.in_features, m.n_classes) != (m0.in_features, m0.n_classes):
                raise ConfigError("the models to stack have different input or output sizes; "
                                  "stack models of one shape only")
        device = device if device is not None else next(m0.parameters()).device
        stack = cls([m.config for m in models], m0.in_features, m0.n_classes, device, seed)
        stack.load_states([m.state_dict() for m in models])
        return stack

    @torch.no_grad()
    def load_states(self, states: list[dict[str, Tensor]]) -> None:
        """Copy K MLP state_dicts into the stack's rows (exactly)."""
        for s in self.slots:
            cols = self.flat[:, s.offset:s.offset + s.numel]
            for i, st in enumerate(states):
                t = st[s.key]
                cols[i].copy_((t.t() if s.transposed else t).reshape(-1))
        for key, buf in self.buffers_.items():
            buf.copy_(torch.stack([st[key] for st in states]))
        counts = [int(st[k]) for st in states for k in st if k.endswith("num_batches_tracked")]
        self.bn_steps = max(counts, default=0)

    def state_of(self, k: int, snap: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Model k's MLP state_dict (on the CPU), from the live weights or from a snapshot."""
        snap = snap if snap is not None else self._views()
        row = snap["flat"][k].detach().cpu()
        state = {}
        for s in self.slots:
            t = row[s.offset:s.offset + s.numel].view(s.shape)
            state[s.key] = (t.t() if s.transposed else t).contiguous().clone()
        for key in self.buffers_:
            state[key] = snap[f"buffer.{key}"][k].detach().cpu().clone()
            if key.endswith("running_mean"):
                state[key.replace("running_mean", "num_batches_tracked")] = torch.tensor(
                    self.bn_steps, dtype=torch.long)
        return state

    def export(self, k: int, snap: dict[str, Tensor] | None = None) -> MLP:
        """Model k (from the live weights or a snapshot) as a stand-alone MLP on the CPU."""
        return self.to_mlp(k, snap)

    model_at = export

    def to_mlp(self, k: int, snap: dict[str, Tensor] | None = None) -> MLP:
        """Model k as a stand-alone MLP on the CPU (an exact copy of its weights)."""
        with torch.random.fork_rng(devices=[]):      # nn.Linear's default init draws: not ours
            model = MLP(self.configs[k], self.in_features, self.n_classes)
        model.load_state_dict(self.state_of(k, snap))
        return model

    @torch.no_grad()
    def select_(self, keep: Tensor) -> None:
        """Keep only the models at positions ``keep`` (a 1-D index tensor), in that order."""
        keep = keep.to(self.flat.device)
        self.flat = self.flat.index_select(0, keep)
        self.grad = self.grad.index_select(0, keep)
        self.buffers_ = {k: v.index_select(0, keep) for k, v in self.buffers_.items()}
        self.configs = [self.configs[i] for i in keep.tolist()]
        self._set_rates()
        self._bind()

    def select_snapshot(self, snap: dict[str, Tensor], keep: Tensor) -> dict[str, Tensor]:
        """The snapshot's models at positions ``keep`` (every entry has the models first)."""
        keep = keep.to(self.flat.device)
        return {k: v.index_select(0, keep) for k, v in snap.items()}

    def _views(self) -> dict[str, Tensor]:
        """The live weights and buffers, named as in a snapshot (views, not copies)."""
        return {"flat": self.flat, **{f"buffer.{k}": v for k, v in self.buffers_.items()}}

    def snapshot(self) -> dict[str, Tensor]:
        """A copy of every model's weights and BN statistics (to restore or export later)."""
        return {k: v.detach().clone() for k, v in self._views().items()}

    @torch.no_grad()
    def copy_rows_(self, dst: dict[str, Tensor], rows: Tensor) -> None:
        """Copy the models at ``rows`` into the snapshot ``dst`` (e.g. new best weights)."""
        for k, v in self._views().items():
            dst[k].index_copy_(0, rows, v.index_select(0, rows))

    @torch.no_grad()
    def restore_rows_(self, src: dict[str, Tensor], rows: Tensor) -> None:
        """Put the snapshot's models at ``rows`` back into the live weights (e.g. last good)."""
        for k, v in self._views().items():
            v.index_copy_(0, rows, src[k].index_select(0, rows))

    def state_dict(self) -> dict[str, Tensor | int]:
        """Everything that evolves in training, for a resume checkpoint."""
        return {**self._views(), "generator": self.generator.get_state(),
                "bn_steps": self.bn_steps}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        for k, v in self._views().items():
            src = state[k]
            assert isinstance(src, Tensor)
            v.copy_(src)
        generator = state["generator"]
        assert isinstance(generator, Tensor)
        self.generator.set_state(generator.cpu())
        self.bn_steps = int(state["bn_steps"])

    def close(self) -> None:
        """Nothing to give back: the stack trained copies of the models."""


_MINUS_ONES: dict[tuple[Any, ...], Tensor] = {}


def _minus_ones(k: int, b: int, like: Tensor) -> Tensor:
    """A cached (K, B, 1) tensor of -1 (the one-hot subtracted from the softmax, by scatter)."""
    key = (k, b, like.device, like.dtype)
    if key not in _MINUS_ONES:
        _MINUS_ONES[key] = torch.full((k, b, 1), -1.0, device=like.device, dtype=like.dtype)
    return _MINUS_ONES[key]

"""K MLPs of one shape as one module: stacked weights and batched matrix products.

Layout. Every trainable tensor of the K models is a view of one (K, N) buffer ``flat`` (kernels
first, then biases, BN scales and shifts, PReLU slopes) and its gradient a view of a (K, N) buffer
``grad``. So the optimizer updates all parameters of all models with a few elementwise kernels, a
per-model hyperparameter is a (K, 1) column, a per-model gradient norm is one reduction, and
dropping finished models is one ``index_select``. Kernels are stored (K, in, out) so that
``x @ W`` needs no transpose; nn.Linear's (out, in) weight is transposed on the way in and out.

Every parameter reaches the graph through a small autograd Function whose backward *writes* its
gradient into its view of ``grad``: :class:`_StackedLinear` for dense layers, :class:`_Param` for
BN scales and shifts and PReLU slopes. So there is no fresh (K, in, out) gradient per step, no
accumulation pass, and no zeroing: each parameter is used once per forward, and its gradient is
overwritten by each backward.

BatchNorm runs torch's own kernel over the K models' channels side by side (a (B, K * C) view),
so running statistics and their update are exactly nn.BatchNorm1d's. Dropout and alpha dropout
take a per-model rate. The masks of all K models are drawn at once from the module's generator,
so they differ from the masks a single-model run draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab.config import ModelConfig
from dnnlab.errors import ConfigError
from dnnlab.nn.activations import RRELU_LOWER, RRELU_UPPER, activation_fn
from dnnlab.nn.mlp import MLP, hidden_sizes

ALPHA_DROPOUT = 1.7580993408473766          # -selu_scale * selu_alpha, torch's and Keras' constant
MAX_NORM_EPS = 1e-7                          # torch.renorm's


def shape_of(cfg: ModelConfig) -> dict:
    """What must be equal for two model configs to be stacked (everything else can differ)."""
    return {"hidden": hidden_sizes(cfg), "activation": cfg.activation,
            "activation_param": cfg.activation_param, "batch_norm": cfg.batch_norm,
            "input_batch_norm": cfg.input_batch_norm, "bn_momentum": cfg.bn_momentum,
            "bn_epsilon": cfg.bn_epsilon, "dropout_kind": cfg.dropout_kind,
            "dropout_layers": cfg.dropout_layers,
            "output_activation": cfg.output_activation}


def _dropout_seed(seed: int) -> int:
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


class _StackedLinear(torch.autograd.Function):
    """y = x @ w + b for K models; backward writes dw and db into the given gradient views."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, gw: Tensor, gb: Tensor | None):
        ctx.save_for_backward(x, w)
        ctx.gw, ctx.gb = gw, gb
        return torch.bmm(x, w) if b is None else torch.baddbmm(b.unsqueeze(1), x, w)

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, w = ctx.saved_tensors
        torch.bmm(x.transpose(1, 2), gy, out=ctx.gw)
        if ctx.gb is not None:
            torch.sum(gy, 1, out=ctx.gb)
        gx = torch.bmm(gy, w.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, None


class _Param(torch.autograd.Function):
    """A (K, C) parameter view as a contiguous tensor; backward writes its gradient into ``g``."""

    @staticmethod
    def forward(ctx, p: Tensor, g: Tensor):
        ctx.g = g
        return p.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):
        ctx.g.copy_(grad)
        return None, None


class StackedMLP(nn.Module):
    """K MLPs with the same shape (see :func:`shape_of`), trained as one.

    ``forward(x)`` takes (K, B, D) per-model batches or one (B, D) batch shared by all models and
    returns (K, B, n_classes) logits. Build it with :meth:`from_models`; get model k back with
    :meth:`to_mlp`. The weights are copied exactly both ways.
    """

    def __init__(self, configs: list[ModelConfig], in_features: int, n_classes: int,
                 device: torch.device | str = "cpu", seed: int = 0):
        super().__init__()
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
        self.generator = torch.Generator(device=self.device).manual_seed(_dropout_seed(seed))
        cfg = configs[0]
        self.sizes = [self.in_features] + hidden_sizes(cfg)
        self.bn_position = cfg.batch_norm
        self.bn_momentum = round(1.0 - cfg.bn_momentum, 12)      # as nn/mlp.py
        self.bn_eps = cfg.bn_epsilon
        self.activation, self.act_param = cfg.activation, cfg.activation_param
        self.act = None if cfg.activation in ("prelu", "rrelu") else activation_fn(
            cfg.activation, cfg.activation_param)
        self.alpha_dropout = cfg.dropout_kind == "alpha"
        self.dropout_all = cfg.dropout_layers == "all"           # else after the last layer only
        self.bn_steps = 0                                       # BN's num_batches_tracked
        self.slots, self.n_kernel, _, n = self._plan()
        k = len(configs)
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

    def _plan(self) -> tuple[list[_Slot], int, int, int]:
        """Kernels first, then dense biases, then BN and PReLU parameters.

        Returns the slots and where the kernels end, where the dense biases end, the total size.
        """
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
        slots, offset, ends = [], 0, []
        for group in (kernels, dense_biases, rest):
            for key, shape, transposed in group:
                slots.append(_Slot(key, offset, shape, transposed))
                offset += math.prod(shape)
            ends.append(offset)
        return slots, *ends

    def _bind(self) -> None:
        """(Re)create the parameter views of ``flat`` and their gradient views of ``grad``."""
        k = self.flat.shape[0]
        self.params = nn.ParameterDict()
        views: dict[str, tuple[Tensor, Tensor]] = {}
        for s in self.slots:
            cols = slice(s.offset, s.offset + s.numel)
            p = nn.Parameter(self.flat[:, cols].view(k, *s.shape))
            g = self.grad[:, cols].view(k, *s.shape)
            self.params[s.key.replace(".", "__")] = p
            views[s.key] = (p, g)

        def get(key):
            return views.get(key, (None, None))

        self.layers = []
        for i in range(len(self.sizes) - 1):
            w, gw = get(f"hidden.{i}.linear.weight")
            b, gb = get(f"hidden.{i}.linear.bias")
            self.layers.append((w, b, gw, gb, self._bn(f"hidden.{i}.bn", get),
                                get(f"hidden.{i}.act.weight")))
        (w, gw), (b, gb) = get("head.weight"), get("head.bias")
        self.head = (w, b, gw, gb)
        self.input_bn = self._bn("input_bn", get)

    def _bn(self, key: str, get) -> tuple | None:
        if f"{key}.running_mean" not in self.buffers_:
            return None
        return (self.buffers_[f"{key}.running_mean"], self.buffers_[f"{key}.running_var"],
                get(f"{key}.weight"), get(f"{key}.bias"))

    def _set_rates(self) -> None:
        """Per-model dropout rates as (K, 1, 1) tensors with the mask values they imply."""
        self.dropout = self._rate_tensors([c.dropout for c in self.configs])
        self.input_dropout = self._rate_tensors([c.input_dropout for c in self.configs])

    def _rate_tensors(self, rates: list[float]) -> tuple[Tensor, Tensor, Tensor] | None:
        """(rate, value where kept, value where dropped) for y = x * a + b, or None if all zero."""
        if not any(rates):
            return None
        p = torch.tensor(rates, dtype=torch.float64)
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

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        k = self.k
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(k, -1, -1)
        elif x.dim() > 3:
            x = x.flatten(2)
        training = self.training
        if training and (self.input_bn is not None or self.bn_position != "none"):
            self.bn_steps += 1
        if self.input_bn is not None:
            x = self._batch_norm(x, self.input_bn)
        if self.input_dropout is not None and training:
            x = self._drop(x, self.input_dropout)
        last = len(self.layers) - 1
        for i, (w, b, gw, gb, bn, slope) in enumerate(self.layers):
            x = _StackedLinear.apply(x, w, b, gw, gb)
            if bn is not None and self.bn_position == "before":
                x = self._batch_norm(x, bn)
            x = self._activate(x, slope)
            if bn is not None and self.bn_position == "after":
                x = self._batch_norm(x, bn)
            if self.dropout is not None and training and (self.dropout_all or i == last):
                x = self._drop(x, self.dropout)
        return _StackedLinear.apply(x, *self.head)

    def _batch_norm(self, x: Tensor, bn: tuple) -> Tensor:
        mean, var, gamma, beta = bn
        k, b, c = x.shape
        y = F.batch_norm(x.transpose(0, 1).reshape(b, k * c), mean.view(-1), var.view(-1),
                         _Param.apply(*gamma).view(-1), _Param.apply(*beta).view(-1),
                         self.training, self.bn_momentum, self.bn_eps)
        return y.view(b, k, c).transpose(0, 1)

    def _activate(self, x: Tensor, slope: tuple) -> Tensor:
        if self.act is not None:
            return self.act(x)
        if self.activation == "rrelu":
            return F.rrelu(x, RRELU_LOWER, RRELU_UPPER, training=self.training)
        return torch.where(x >= 0, x, x * _Param.apply(*slope).unsqueeze(1))  # prelu, (K, C) slopes

    def _drop(self, x: Tensor, rates: tuple) -> Tensor:
        r = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        keep = r >= rates[0]
        if len(rates) == 2:
            return x * torch.where(keep, rates[1], 0.0)
        _, kept_a, kept_b, dropped_b = rates
        return torch.addcmul(torch.where(keep, kept_b, dropped_b), x,
                             torch.where(keep, kept_a, 0.0))

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def add_penalty_(self, l1: Tensor | None, l2: Tensor | None) -> Tensor:
        """Add the L1/L2 kernel penalty's gradient to ``grad``; return each model's penalty (K,).

        ``l1``, ``l2`` are (K, 1) columns (None when zero for every model): Keras' L1L2 on every
        dense kernel, as ``MLP.penalty``.
        """
        w = self.flat[:, :self.n_kernel]
        g = self.grad[:, :self.n_kernel]
        total = torch.zeros(self.k, device=self.flat.device)
        if l1 is not None:
            total += l1[:, 0] * torch.linalg.vector_norm(w, 1, dim=1)
            g.addcmul_(torch.sign(w), l1)
        if l2 is not None:
            total += l2[:, 0] * torch.linalg.vector_norm(w, 2, dim=1).square()
            g.addcmul_(w, 2.0 * l2)
        return total

    @torch.no_grad()
    def apply_max_norm_(self, c: Tensor) -> None:
        """Rescale each hidden unit's incoming weights to norm <= c ((K, 1, 1)), as torch.renorm."""
        for w, *_ in self.layers:
            norm = torch.linalg.vector_norm(w, 2, dim=1, keepdim=True)
            w.mul_(torch.where(norm > c, c / (norm + MAX_NORM_EPS), 1.0))

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
        states = [m.state_dict() for m in models]
        with torch.no_grad():
            for s in stack.slots:
                cols = stack.flat[:, s.offset:s.offset + s.numel]
                for i, st in enumerate(states):
                    t = st[s.key]
                    cols[i].copy_((t.t() if s.transposed else t).reshape(-1))
            for key, buf in stack.buffers_.items():
                buf.copy_(torch.stack([st[key] for st in states]))
        bn_counts = [int(st[k]) for st in states for k in st if k.endswith("num_batches_tracked")]
        stack.bn_steps = max(bn_counts, default=0)
        return stack

    def state_of(self, k: int, flat: Tensor | None = None,
                 buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Model k's MLP state_dict (on the CPU), from the live weights or from a snapshot."""
        flat = self.flat if flat is None else flat
        buffers = self.buffers_ if buffers is None else buffers
        row = flat[k].detach().cpu()
        state = {}
        for s in self.slots:
            t = row[s.offset:s.offset + s.numel].view(s.shape)
            state[s.key] = (t.t() if s.transposed else t).contiguous().clone()
        for key, buf in buffers.items():
            state[key] = buf[k].detach().cpu().clone()
            if key.endswith("running_mean"):
                state[key.replace("running_mean", "num_batches_tracked")] = torch.tensor(
                    self.bn_steps, dtype=torch.long)
        return state

    def to_mlp(self, k: int, flat: Tensor | None = None,
               buffers: dict[str, Tensor] | None = None) -> MLP:
        """Model k as a stand-alone MLP on the CPU (an exact copy of its weights)."""
        model = MLP(self.configs[k], self.in_features, self.n_classes)
        model.load_state_dict(self.state_of(k, flat, buffers))
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

    def snapshot(self) -> tuple[Tensor, dict[str, Tensor]]:
        """A copy of every model's weights and BN statistics (to restore or export later)."""
        return self.flat.detach().clone(), {k: v.clone() for k, v in self.buffers_.items()}

    @torch.no_grad()
    def copy_rows_(self, dst: tuple[Tensor, dict[str, Tensor]], rows: Tensor) -> None:
        """Copy the models at ``rows`` into the snapshot ``dst`` (e.g. new best weights)."""
        flat, bufs = dst
        flat.index_copy_(0, rows, self.flat.index_select(0, rows))
        for k, v in self.buffers_.items():
            bufs[k].index_copy_(0, rows, v.index_select(0, rows))


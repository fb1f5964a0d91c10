"""Optimizers for K stacked models, with per-model hyperparameters, as torch.optim computes them.

The K models' parameters live in one (K, N) tensor and their gradients in another (see
``engine_model``), so one update is a handful of elementwise kernels over those two tensors,
whatever the number of layers, and a per-model hyperparameter is a (K, 1) column that broadcasts.

The scalars that change with the step (the scheduled learning rate, Adam's bias corrections,
Nadam's momentum schedule) are computed on the host in float64 for a whole epoch at once, exactly as
torch.optim computes them in Python floats, and sent to the device as one (steps, C, K, 1) table
(:meth:`StackedOptimizer.table`); a step reads its row, so the loop never waits for the host.

Each formula follows torch.optim (``foreach`` path) so that K = 1 reproduces ``make_optimizer``:
``weight_decay`` is added to the gradient except in adamw (decoupled); nadam uses Keras 3's
momentum schedule (``momentum_decay = 1``); ftrl is dnnlab's Keras-style FTRL. A model whose
learning rate is 0 is not moved (ftrl, where the rate divides, gets an explicit mask instead).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import Tensor

from dnnlab.config import OPTIMIZERS, OptimConfig
from dnnlab.errors import ConfigError
from dnnlab.optim import KERAS_NADAM_MOMENTUM_DECAY

# the OptimConfig fields that may differ between the K models (each becomes a (K, 1) column)
PER_MODEL = ("lr", "momentum", "beta1", "beta2", "rho", "eps", "weight_decay",
             "initial_accumulator", "l1", "l2", "lr_power")


def hypers_of(configs: list[OptimConfig]) -> dict[str, np.ndarray]:
    """The per-model hyperparameters of K optimizer configs, as K-vectors."""
    return {k: np.array([getattr(c, k) for c in configs], dtype=np.float64) for k in PER_MODEL}


def _col(values: np.ndarray, like: Tensor) -> Tensor:
    """A host vector of K values as a (K, 1) column on ``like``'s device."""
    return torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(-1, 1),
                           dtype=like.dtype).to(like.device)


class StackedOptimizer:
    """One optimizer over the (K, N) parameter buffer ``p`` with gradient buffer ``g``.

    ``hypers`` maps each name in ``PER_MODEL`` to K host values (see :func:`hypers_of`);
    ``nesterov`` is shared. The gradient buffer is used as scratch: it is garbage after :meth:`step`.
    """

    def __init__(self, name: str, p: Tensor, g: Tensor, hypers: dict[str, np.ndarray],
                 nesterov: bool = False):
        if name not in OPTIMIZERS:
            raise ConfigError(f"optim.name = {name!r} is not allowed; choose one of: "
                              f"{', '.join(OPTIMIZERS)}")
        self.name, self.p, self.g, self.nesterov = name, p, g, nesterov
        self.h = {k: np.asarray(v, dtype=np.float64).copy() for k, v in hypers.items()}
        self.t = 0                                     # steps taken
        self.state: dict[str, Tensor] = {}
        self.power = -float(self.h["lr_power"][0])     # ftrl
        self.fused: Callable | None = None
        self.scratch: list[Tensor] | None = None
        self._check()
        self._init_state()

    # ---------------------------------------------------------------- setup
    def _check(self) -> None:
        h, name = self.h, self.name
        if name == "ftrl":
            if np.any(h["lr"] <= 0):
                raise ConfigError("ftrl: optim.lr must be > 0 for every model")
            if np.any(h["weight_decay"] != 0):
                raise ConfigError("ftrl has no weight_decay; use optim.l2 (and optim.l1) instead")
            if np.any(h["lr_power"] != h["lr_power"][0]):
                raise ConfigError("optim.lr_power must be the same for every model of a K-model run")
        if name == "sgd" and self.nesterov and np.any(h["momentum"] == 0):
            raise ConfigError("optim.nesterov = true needs optim.momentum > 0 (the book uses 0.9)")

    def _init_state(self) -> None:
        """Optimizer state (K, N) and the constant per-model columns (K, 1) in ``self.k``."""
        h, p, s, name = self.h, self.p, self.state, self.name
        k: dict[str, Tensor] = {}
        if np.any(h["weight_decay"] != 0):
            k["wd"] = _col(h["weight_decay"], p)
        if name in ("sgd", "rmsprop") and np.any(h["momentum"] != 0):
            s["momentum_buffer"] = torch.zeros_like(p)
            k["momentum"] = _col(h["momentum"], p)          # rmsprop's; sgd reads it per step
        if name == "adagrad":
            s["sum"] = _col(h["initial_accumulator"], p).expand_as(p).clone()
        if name == "rmsprop":
            s["square_avg"] = torch.zeros_like(p)
            k["rho"], k["one_minus_rho"] = _col(h["rho"], p), _col(1 - h["rho"], p)
        if name in ("adam", "adamw", "nadam", "adamax"):
            s["exp_avg"] = torch.zeros_like(p)
            s["exp_avg_sq" if name != "adamax" else "exp_inf"] = torch.zeros_like(p)
            k["one_minus_beta1"] = _col(1 - h["beta1"], p)
            k["beta2"], k["one_minus_beta2"] = _col(h["beta2"], p), _col(1 - h["beta2"], p)
        if name == "nadam":
            self.mu_product = np.ones(len(h["beta1"]))
        if name == "ftrl":
            s["accumulator"] = _col(h["initial_accumulator"], p).expand_as(p).clone()
            s["linear"] = torch.zeros_like(p)
            k["l1"], k["l2"] = _col(h["l1"], p), _col(2.0 * h["l2"], p)
        if name not in ("sgd", "ftrl"):
            k["eps"] = _col(h["eps"], p)
        self.k = k

    # ---------------------------------------------------------------- the time-dependent scalars
    def table(self, lrs: np.ndarray, momenta: np.ndarray | None = None) -> Tensor:
        """Per-step coefficients for the next ``len(lrs)`` steps, given their (steps, K) rates.

        ``momenta`` (steps, K) are SGD momenta that change per step (1cycle); else the configured.

        Advances the host-side counters (step count, Nadam's mu product): call it once for the
        steps that will then be taken, in order.
        """
        lrs = np.asarray(lrs, dtype=np.float64)
        steps = self.t + 1 + np.arange(len(lrs), dtype=np.float64)[:, None]     # 1-based, (S, 1)
        h = self.h
        if self.name == "sgd":
            cols = [-lrs, h["momentum"] if momenta is None else np.asarray(momenta, np.float64)]
        elif self.name in ("adagrad", "rmsprop"):
            cols = [-lrs]
        elif self.name in ("adam", "adamw"):
            bc1 = 1 - h["beta1"] ** steps
            bc2_sqrt = np.sqrt(1 - h["beta2"] ** steps)
            cols = [-lrs / bc1, 1.0 / bc2_sqrt]
            if self.name == "adamw":
                cols.append(1 - lrs * h["weight_decay"])
        elif self.name == "adamax":
            cols = [-lrs / (1 - h["beta1"] ** steps)]
        elif self.name == "nadam":
            decay = KERAS_NADAM_MOMENTUM_DECAY
            mu = h["beta1"] * (1.0 - 0.5 * 0.96 ** (steps * decay))
            mu_next = h["beta1"] * (1.0 - 0.5 * 0.96 ** ((steps + 1) * decay))
            mu_product = self.mu_product * np.cumprod(mu, axis=0)
            self.mu_product = mu_product[-1].copy()
            cols = [1.0 / np.sqrt(1 - h["beta2"] ** steps),
                    -lrs * (1.0 - mu) / (1.0 - mu_product),
                    -lrs * mu_next / (1.0 - mu_product * mu_next)]
        else:                                                       # ftrl: 1/lr and a freeze mask
            active = (lrs > 0).astype(np.float64)
            cols = [1.0 / np.where(lrs > 0, lrs, 1.0), active]
        self.t += len(lrs)
        out = np.stack([np.broadcast_to(c, lrs.shape) for c in cols], axis=1)   # (S, C, K)
        return torch.as_tensor(out[..., None], dtype=self.p.dtype).to(self.p.device)

    # ---------------------------------------------------------------- one update
    @torch.no_grad()
    def step(self, c: Tensor) -> None:
        """One update of every model, with ``c`` a (C, K, 1) row of :meth:`table`."""
        if self.fused is not None:
            try:
                self.fused(self.p, self.g, self.state, self.k, c)
                return
            except Exception as e:                  # no compiler, unsupported device: stay eager
                warnings.warn(f"the fused optimizer step could not be compiled ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); using the eager one")
                self.fused = None
        if self.scratch is None:
            self.scratch = [torch.zeros_like(self.p) for _ in range(2 if self.name == "ftrl" else 1)]
        _eager_step(self.name, self.nesterov, self.power, self.p, self.g, self.state, self.k, c,
                    *self.scratch)

    def fuse(self) -> None:
        """Compile the update into one fused kernel (torch.compile), several times faster on big
        stacks: the eager update makes about ten passes over the (K, N) buffers, the fused one
        reads each buffer once. Compiling takes seconds, so the engine asks for it only when a
        run is long enough; if compiling fails, the first step warns and stays eager."""
        self.fused = torch.compile(partial(_fused_step, self.name, self.nesterov, self.power),
                                   dynamic=True)
        self.scratch = None

    # ---------------------------------------------------------------- bookkeeping
    @torch.no_grad()
    def select_(self, keep: Tensor, p: Tensor, g: Tensor) -> None:
        """Keep only the models at positions ``keep`` (compaction); ``p``, ``g``: the new buffers."""
        idx = keep.cpu().numpy()
        self.p, self.g = p, g
        self.h = {k: v[idx] for k, v in self.h.items()}
        self.state = {k: v.index_select(0, keep) for k, v in self.state.items()}
        self.k = {k: v.index_select(0, keep) for k, v in self.k.items()}
        if self.name == "nadam":
            self.mu_product = self.mu_product[idx]
        if self.scratch is not None:
            self.scratch = [torch.zeros_like(p) for _ in self.scratch]


def _eager_step(name: str, nesterov: bool, power: float, p: Tensor, g: Tensor,
                s: dict[str, Tensor], k: dict[str, Tensor], c: Tensor, tmp: Tensor,
                tmp2: Tensor | None = None) -> None:
    """The update with preallocated scratch and ``out=``: no (K, N) allocation per step."""
    if "wd" in k and name not in ("adamw", "ftrl"):
        g.addcmul_(p, k["wd"])
    if name == "sgd":
        if "momentum_buffer" in s:
            buf = s["momentum_buffer"]
            buf.mul_(c[1]).add_(g)
            if nesterov:
                g.addcmul_(buf, c[1])
            else:
                g = buf
        p.addcmul_(g, c[0])
    elif name == "adagrad":
        s["sum"].addcmul_(g, g)
        torch.sqrt(s["sum"], out=tmp).add_(k["eps"])
        p.addcmul_(g.div_(tmp), c[0])
    elif name == "rmsprop":
        torch.mul(g, g, out=tmp)
        s["square_avg"].mul_(k["rho"]).addcmul_(tmp, k["one_minus_rho"])
        torch.sqrt(s["square_avg"], out=tmp).add_(k["eps"])
        g.div_(tmp)
        if "momentum_buffer" in s:
            g = s["momentum_buffer"].mul_(k["momentum"]).add_(g)
        p.addcmul_(g, c[0])
    elif name in ("adam", "adamw", "nadam"):
        if name == "adamw" and "wd" in k:
            p.mul_(c[2])
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m.lerp_(g, k["one_minus_beta1"])
        torch.mul(g, g, out=tmp)
        v.mul_(k["beta2"]).addcmul_(tmp, k["one_minus_beta2"])
        torch.sqrt(v, out=tmp)
        if name == "nadam":
            torch.addcmul(k["eps"], tmp, c[0], out=tmp)          # sqrt(v) / sqrt(bc2) + eps
            p.add_(g.mul_(c[1]).addcmul_(m, c[2]).div_(tmp))
        else:
            torch.addcmul(k["eps"], tmp, c[1], out=tmp)
            p.addcmul_(torch.div(m, tmp, out=tmp), c[0])
    elif name == "adamax":
        m, u = s["exp_avg"], s["exp_inf"]
        m.lerp_(g, k["one_minus_beta1"])
        torch.abs(g, out=tmp).add_(k["eps"])
        torch.maximum(u.mul_(k["beta2"]), tmp, out=u)
        p.addcmul_(torch.div(m, u, out=tmp), c[0])
    else:                                                        # ftrl
        n, z, n_pow, n_new_pow = s["accumulator"], s["linear"], tmp, tmp2
        _pow(n, power, out=n_pow)
        n.addcmul_(g, g)
        _pow(n, power, out=n_new_pow)
        sigma = n_pow.neg_().add_(n_new_pow).mul_(c[0])         # (n_new^p - n^p) / lr
        z.add_(g).addcmul_(sigma, p, value=-1.0)
        quadratic = n_new_pow.mul_(c[0]).add_(k["l2"])
        new = torch.clamp(z, min=-k["l1"], max=k["l1"], out=n_pow).sub_(z).div_(quadratic)
        p.lerp_(new, c[1])                                       # frozen models keep their weights


def _fused_step(name: str, nesterov: bool, power: float, p: Tensor, g: Tensor,
                s: dict[str, Tensor], k: dict[str, Tensor], c: Tensor) -> None:
    """The same update as :func:`_eager_step` in plain expressions, for torch.compile to fuse
    (it writes only the parameters and the state; no scratch, so the kernel reads each once)."""
    if "wd" in k and name not in ("adamw", "ftrl"):
        g = g + p * k["wd"]
    if name == "sgd":
        if "momentum_buffer" in s:
            buf = s["momentum_buffer"]
            buf.copy_(buf * c[1] + g)
            g = g + buf * c[1] if nesterov else buf
        p.copy_(p + g * c[0])
    elif name == "adagrad":
        total = s["sum"]
        total.copy_(total + g * g)
        p.copy_(p + g / (torch.sqrt(total) + k["eps"]) * c[0])
    elif name == "rmsprop":
        sq = s["square_avg"]
        sq.copy_(sq * k["rho"] + g * g * k["one_minus_rho"])
        d = g / (torch.sqrt(sq) + k["eps"])
        if "momentum_buffer" in s:
            buf = s["momentum_buffer"]
            buf.copy_(buf * k["momentum"] + d)
            d = buf
        p.copy_(p + d * c[0])
    elif name in ("adam", "adamw", "nadam"):
        if name == "adamw" and "wd" in k:
            p.copy_(p * c[2])
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m.copy_(torch.lerp(m, g, k["one_minus_beta1"]))
        v.copy_(v * k["beta2"] + g * g * k["one_minus_beta2"])
        if name == "nadam":
            p.copy_(p + (g * c[1] + m * c[2]) / (torch.sqrt(v) * c[0] + k["eps"]))
        else:
            p.copy_(p + m / (torch.sqrt(v) * c[1] + k["eps"]) * c[0])
    elif name == "adamax":
        m, u = s["exp_avg"], s["exp_inf"]
        m.copy_(torch.lerp(m, g, k["one_minus_beta1"]))
        u.copy_(torch.maximum(u * k["beta2"], torch.abs(g) + k["eps"]))
        p.copy_(p + m / u * c[0])
    else:                                                        # ftrl
        n, z = s["accumulator"], s["linear"]
        n_new = n + g * g
        n_new_pow = torch.pow(n_new, power)
        sigma = (n_new_pow - torch.pow(n, power)) * c[0]
        z.copy_(z + g - sigma * p)
        new = (torch.clamp(z, min=-k["l1"], max=k["l1"]) - z) / (n_new_pow * c[0] + k["l2"])
        n.copy_(n_new)
        p.copy_(torch.lerp(p, new, c[1]))


def _pow(x: Tensor, power: float, out: Tensor) -> Tensor:
    return torch.sqrt(x, out=out) if power == 0.5 else torch.pow(x, power, out=out)


@torch.no_grad()
def clip_(g: Tensor, clip_value: Tensor | None, clip_norm: Tensor | None) -> None:
    """Clip each model's gradient row like ``clip_gradients_``: by value, then by global norm.

    ``clip_norm`` is a (K, 1) column (inf where a model has none): a row longer than it is scaled by
    ``clip_norm / (norm + 1e-6)``, torch's ``clip_grad_norm_``.
    """
    if clip_value is not None:
        torch.clamp(g, min=-clip_value, max=clip_value, out=g)
    if clip_norm is not None:
        norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
        g.mul_(torch.clamp(clip_norm / (norm + 1e-6), max=1.0))

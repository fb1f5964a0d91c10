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
        h, p, s = self.h, self.p, self.state
        zeros = lambda: torch.zeros_like(p)                              # noqa: E731
        self.wd = _col(h["weight_decay"], p) if np.any(h["weight_decay"] != 0) else None
        if self.name in ("sgd", "rmsprop") and np.any(h["momentum"] != 0):
            s["momentum_buffer"] = zeros()
            self.momentum = _col(h["momentum"], p)          # rmsprop's; sgd reads it per step
        if self.name == "adagrad":
            s["sum"] = _col(h["initial_accumulator"], p).expand_as(p).clone()
        if self.name == "rmsprop":
            s["square_avg"] = zeros()
            self.rho, self.one_minus_rho = _col(h["rho"], p), _col(1 - h["rho"], p)
        if self.name in ("adam", "adamw", "nadam", "adamax"):
            s["exp_avg"] = zeros()
            s["exp_avg_sq" if self.name != "adamax" else "exp_inf"] = zeros()
            self.one_minus_beta1 = _col(1 - h["beta1"], p)
            self.beta2, self.one_minus_beta2 = _col(h["beta2"], p), _col(1 - h["beta2"], p)
        if self.name == "nadam":
            self.mu_product = np.ones(len(h["beta1"]))
        if self.name == "ftrl":
            s["accumulator"] = _col(h["initial_accumulator"], p).expand_as(p).clone()
            s["linear"] = zeros()
            self.l1, self.l2 = _col(h["l1"], p), _col(2.0 * h["l2"], p)
            self.scratch2 = zeros()
        if "eps" in h:
            self.eps = _col(h["eps"], p)
        self.scratch = zeros()

    # ---------------------------------------------------------------- the time-dependent scalars
    def table(self, lrs: np.ndarray, momenta: np.ndarray | None = None) -> Tensor:
        """Per-step coefficients for the next ``len(lrs)`` steps, given their (steps, K) learning rates.

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
        p, g, s, tmp = self.p, self.g, self.state, self.scratch
        name = self.name
        if self.wd is not None and name not in ("adamw", "ftrl"):
            g.addcmul_(p, self.wd)
        if name == "sgd":
            if "momentum_buffer" in s:
                buf = s["momentum_buffer"]
                buf.mul_(c[1]).add_(g)
                if self.nesterov:
                    g.addcmul_(buf, c[1])
                else:
                    g = buf
            p.addcmul_(g, c[0])
        elif name == "adagrad":
            s["sum"].addcmul_(g, g)
            torch.sqrt(s["sum"], out=tmp).add_(self.eps)
            p.addcmul_(g.div_(tmp), c[0])
        elif name == "rmsprop":
            torch.mul(g, g, out=tmp)
            s["square_avg"].mul_(self.rho).addcmul_(tmp, self.one_minus_rho)
            torch.sqrt(s["square_avg"], out=tmp).add_(self.eps)
            g.div_(tmp)
            if "momentum_buffer" in s:
                g = s["momentum_buffer"].mul_(self.momentum).add_(g)
            p.addcmul_(g, c[0])
        elif name in ("adam", "adamw"):
            if name == "adamw" and self.wd is not None:
                p.mul_(c[2])
            m, v = s["exp_avg"], s["exp_avg_sq"]
            m.lerp_(g, self.one_minus_beta1)
            torch.mul(g, g, out=tmp)
            v.mul_(self.beta2).addcmul_(tmp, self.one_minus_beta2)
            torch.sqrt(v, out=tmp)
            torch.addcmul(self.eps, tmp, c[1], out=tmp)            # sqrt(v) / sqrt(bc2) + eps
            p.addcmul_(torch.div(m, tmp, out=tmp), c[0])
        elif name == "adamax":
            m, u = s["exp_avg"], s["exp_inf"]
            m.lerp_(g, self.one_minus_beta1)
            torch.abs(g, out=tmp).add_(self.eps)
            torch.maximum(u.mul_(self.beta2), tmp, out=u)
            p.addcmul_(torch.div(m, u, out=tmp), c[0])
        elif name == "nadam":
            m, v = s["exp_avg"], s["exp_avg_sq"]
            m.lerp_(g, self.one_minus_beta1)
            torch.mul(g, g, out=tmp)
            v.mul_(self.beta2).addcmul_(tmp, self.one_minus_beta2)
            torch.sqrt(v, out=tmp)
            torch.addcmul(self.eps, tmp, c[0], out=tmp)            # sqrt(v) / sqrt(bc2) + eps
            g.mul_(c[1]).addcmul_(m, c[2]).div_(tmp)
            p.add_(g)
        else:
            self._ftrl(c)

    def _ftrl(self, c: Tensor) -> None:
        p, g, s, n_pow, n_new_pow = self.p, self.g, self.state, self.scratch, self.scratch2
        n, z = s["accumulator"], s["linear"]
        power = -float(self.h["lr_power"][0])
        _pow(n, power, out=n_pow)
        n.addcmul_(g, g)
        _pow(n, power, out=n_new_pow)
        sigma = n_pow.neg_().add_(n_new_pow).mul_(c[0])           # (n_new^p - n^p) / lr
        z.add_(g).addcmul_(sigma, p, value=-1.0)
        quadratic = n_new_pow.mul_(c[0]).add_(self.l2)
        new = torch.clamp(z, min=-self.l1, max=self.l1, out=n_pow).sub_(z).div_(quadratic)
        p.lerp_(new, c[1])                                         # frozen models keep their weights

    # ---------------------------------------------------------------- bookkeeping
    @torch.no_grad()
    def select_(self, keep: Tensor, p: Tensor, g: Tensor) -> None:
        """Keep only the models at positions ``keep`` (compaction); ``p``, ``g`` are the new buffers."""
        idx = keep.cpu().numpy()
        self.p, self.g = p, g
        self.h = {k: v[idx] for k, v in self.h.items()}
        for k, v in self.state.items():
            self.state[k] = v.index_select(0, keep)
        for attr in ("wd", "momentum", "rho", "one_minus_rho", "one_minus_beta1", "beta2",
                     "one_minus_beta2", "l1", "l2", "eps"):
            v = getattr(self, attr, None)
            if v is not None:
                setattr(self, attr, v.index_select(0, keep))
        if self.name == "nadam":
            self.mu_product = self.mu_product[idx]
        self.scratch = torch.zeros_like(p)
        if self.name == "ftrl":
            self.scratch2 = torch.zeros_like(p)


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

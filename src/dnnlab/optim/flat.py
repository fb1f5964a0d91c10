"""The optimizers, each written once, over flat (K, N) parameter and gradient buffers.

Both training backends keep the parameters of their K models in one (K, N) tensor and the
gradients in another (the stacked MLP by construction, any nn.Module by re-pointing its
parameters at views of a (1, N) buffer), so an update is a handful of elementwise kernels over
two tensors, whatever the number of layers, and a per-model hyperparameter is a (K, 1) column.

:func:`update` is the one definition of every rule. It runs eagerly, or compiled by
``torch.compile`` into one fused kernel (:meth:`FlatOptimizer.fuse`): the same function either way.

The scalars that change with the step (the scheduled learning rate, Adam's bias corrections,
Nadam's momentum schedule) are computed on the host in float64 for a whole epoch at once and sent
to the device as one (steps, C, K, 1) table (:meth:`FlatOptimizer.table`); a step reads its row,
so the loop never waits for the host.

Meanings follow Keras 3 (the book's library) and are checked against its published update rules
in ``tests/test_optim_flat.py``:

* ``sgd``: ``v = momentum * v + g`` (torch's form; with a constant rate it is Keras'
  ``v = momentum * v - lr * g``), Nesterov as torch.
* ``adam``/``adamax``/``adamw``: torch adds eps to sqrt(v_hat), Keras to sqrt(v) with the bias
  correction folded into the step size; the two differ only while sqrt(v) is near eps.
  ``adamw``'s decay is decoupled (``w -= lr * weight_decay * w``).
* ``nadam``: Keras 3's momentum schedule ``mu_t = beta1 * (1 - 0.5 * 0.96**t)``
  (keras/src/optimizers/nadam.py); torch's NAdam with ``momentum_decay=1`` computes the same.
* ``rmsprop``: Keras' ``w -= lr * g / sqrt(v + eps)`` (eps inside the root, where torch adds it
  to sqrt(v): for small gradients the two differ by up to 4x), and with momentum Keras'
  ``m = momentum * m + lr * g / sqrt(v + eps); w -= m``.
* ``adagrad``: ``w -= lr * g / (sqrt(sum) + eps)``, accumulator starting at 0.1 as Keras'.
* ``ftrl``: Keras' FTRL (McMahan et al. 2013) with ``lr_power``, L1 and L2 shrinkage.
* ``weight_decay`` (every rule but adamw and ftrl) is added to the gradient as torch does, an L2
  penalty of ``weight_decay / 2 * sum(w**2)``; ``model.l2`` is the Keras-style penalty.

A model whose learning rate is 0 is not moved (ftrl, where the rate divides, gets a mask).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import Tensor

from dnnlab.config import OPTIM_HYPERS, OPTIMIZERS, OptimConfig
from dnnlab.errors import ConfigError

KERAS_NADAM_MOMENTUM_DECAY = 1.0     # torch's name for the exponent scale of Nadam's mu schedule


def hypers_of(configs: list[OptimConfig]) -> dict[str, np.ndarray]:
    """The hyperparameters of K optimizer configs (:data:`~dnnlab.config.OPTIM_HYPERS`), as
    K-vectors: each becomes a (K, 1) column of the update."""
    return {k: np.array([getattr(c, k) for c in configs], dtype=np.float64) for k in OPTIM_HYPERS}


def _col(values: np.ndarray, like: Tensor) -> Tensor:
    """A host vector of K values as a (K, 1) column on ``like``'s device."""
    return torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(-1, 1),
                           dtype=like.dtype).to(like.device)


def update(name: str, nesterov: bool, power: float, p: Tensor, g: Tensor, s: dict[str, Tensor],
           k: dict[str, Tensor], c: Tensor, tmp: Tensor | None = None) -> None:
    """One step of optimizer ``name`` on every model: the only definition of each rule.

    ``p``, ``g``: (K, N) parameters and gradients (``g`` is used as scratch, and so is ``tmp``,
    a (K, N) buffer); ``s``: the state buffers; ``k``: constant (K, 1) columns; ``c``: this step's
    (C, K, 1) row of the table. Every op writes in place or into ``tmp``: a fresh (K, N) tensor
    per op would cost an allocation each (on a CPU, pages mapped and zeroed anew), more than the
    arithmetic. torch.compile fuses the whole function into one pass over the buffers; it gets no
    ``tmp``, so the scratch is an intermediate it never writes to memory.
    """
    if tmp is None:
        tmp = torch.empty_like(p)
    if "wd" in k and name not in ("adamw", "ftrl"):
        g.addcmul_(p, k["wd"])
    if name == "sgd":
        if "momentum_buffer" in s:
            buf = s["momentum_buffer"].mul_(c[1]).add_(g)
            if nesterov:
                g.addcmul_(buf, c[1])
            else:
                g = buf
        p.addcmul_(g, c[0])
    elif name == "adagrad":
        total = s["sum"].addcmul_(g, g)
        torch.sqrt(total, out=tmp)
        p.addcmul_(g.div_(tmp.add_(k["eps"])), c[0])
    elif name == "rmsprop":
        torch.mul(g, g, out=tmp)
        sq = s["square_avg"].lerp_(tmp, k["one_minus_rho"])          # rho * v + (1 - rho) g^2
        torch.add(sq, k["eps"], out=tmp)
        g.div_(tmp.sqrt_()).mul_(c[0])                               # lr * g / sqrt(v + eps)
        if "momentum_buffer" in s:
            g = s["momentum_buffer"].mul_(k["momentum"]).add_(g)
        p.sub_(g)
    elif name in ("adam", "adamw", "nadam"):
        if name == "adamw" and "wd" in k:
            p.mul_(c[2])
        m = s["exp_avg"].lerp_(g, k["one_minus_beta1"])
        torch.mul(g, g, out=tmp)
        v = s["exp_avg_sq"].lerp_(tmp, k["one_minus_beta2"])        # beta2 v + (1 - beta2) g^2
        torch.sqrt(v, out=tmp)
        if name == "nadam":                                          # sqrt(v) / sqrt(bc2) + eps
            tmp.mul_(c[0]).add_(k["eps"])
            p.add_(g.mul_(c[1]).addcmul_(m, c[2]).div_(tmp))
        else:
            tmp.mul_(c[1]).add_(k["eps"])
            p.addcmul_(torch.div(m, tmp, out=tmp), c[0])
    elif name == "adamax":
        m = s["exp_avg"].lerp_(g, k["one_minus_beta1"])
        u = s["exp_inf"].mul_(k["beta2"])
        torch.maximum(u, g.abs_().add_(k["eps"]), out=u)
        p.addcmul_(torch.div(m, u, out=tmp), c[0])
    else:                                                            # ftrl
        n, z = s["accumulator"], s["linear"]
        _pow(n, power, out=tmp)                                      # n^p
        n.addcmul_(g, g)
        z.add_(g)
        sigma = _pow(n, power, out=g).sub_(tmp).mul_(c[0])           # (n_new^p - n^p) / lr
        z.sub_(sigma.mul_(p))
        quadratic = _pow(n, power, out=tmp).mul_(c[0]).add_(k["l2"])
        new = torch.clamp(z, min=-k["l1"], max=k["l1"], out=g).sub_(z).div_(quadratic)
        p.lerp_(new, c[1])                                           # frozen models keep theirs


def _pow(x: Tensor, power: float, out: Tensor) -> Tensor:
    return torch.sqrt(x, out=out) if power == 0.5 else torch.pow(x, power, out=out)


class FlatOptimizer:
    """One optimizer over the (K, N) parameter buffer ``p`` with gradient buffer ``g``.

    ``hypers`` maps each name in ``OPTIM_HYPERS`` to K host values (see :func:`hypers_of`);
    ``nesterov`` is shared. The gradient buffer is used as scratch: it is garbage after
    :meth:`step`.
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
        self.fused: Callable[..., None] | None = None
        self.tmp = torch.empty_like(p)                 # scratch of the update, never saved
        self._check()
        self._init_state()

    @classmethod
    def from_configs(cls, configs: list[OptimConfig], p: Tensor, g: Tensor) -> FlatOptimizer:
        """The optimizer of K models whose optimizer configs are ``configs`` (one name)."""
        return cls(configs[0].name, p, g, hypers_of(configs), nesterov=configs[0].nesterov)

    # ---------------------------------------------------------------- setup
    def _check(self) -> None:
        h = self.h
        if np.any(h["lr_power"] != h["lr_power"][0]):     # a stack shares one (config.KEYS)
            raise ConfigError("optim.lr_power must be the same for every model of a K-model run")

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
        elif self.name == "adagrad":
            cols = [-lrs]
        elif self.name == "rmsprop":
            cols = [lrs]
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
                              f"{str(e).splitlines()[0] if str(e) else ''}); using the eager one",
                              stacklevel=2)
                self.fused = None
        update(self.name, self.nesterov, self.power, self.p, self.g, self.state, self.k, c,
               self.tmp)

    def fuse(self) -> None:
        """Compile :func:`update` into one fused kernel (torch.compile): the eager update makes
        about ten passes over the (K, N) buffers, the fused one reads each buffer once. Compiling
        takes seconds once per shape (Inductor caches the result on disk, so later runs load it),
        so the trainer asks for it only when a run is long enough to repay it; if compiling
        fails, the first step warns and stays eager."""
        self.fused = torch.compile(partial(update, self.name, self.nesterov, self.power),
                                   dynamic=False)

    # ---------------------------------------------------------------- bookkeeping
    @torch.no_grad()
    def select_(self, keep: Tensor, p: Tensor, g: Tensor) -> None:
        """Keep only the models at positions ``keep`` (compaction); ``p``, ``g``: the new buffers."""
        idx = keep.cpu().numpy()
        self.p, self.g, self.tmp = p, g, torch.empty_like(p)
        self.h = {k: v[idx] for k, v in self.h.items()}
        self.state = {k: v.index_select(0, keep) for k, v in self.state.items()}
        self.k = {k: v.index_select(0, keep) for k, v in self.k.items()}
        if self.name == "nadam":
            self.mu_product = self.mu_product[idx]

    def state_tensors(self) -> dict[str, Tensor]:
        """The evolving state as tensors (for a checkpoint); the host counters as well."""
        out = dict(self.state)
        out["t"] = torch.tensor([self.t], dtype=torch.float64)
        if self.name == "nadam":
            out["mu_product"] = torch.as_tensor(self.mu_product, dtype=torch.float64)
        return out

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for key, v in self.state.items():
            v.copy_(tensors[key])
        self.t = int(tensors["t"][0])
        if self.name == "nadam":
            self.mu_product = tensors["mu_product"].numpy().astype(np.float64).copy()


@torch.no_grad()
def clip_(g: Tensor, clip_value: Tensor | None, clip_norm: Tensor | None,
          global_clip_norm: Tensor | None, segments: list[tuple[int, int]]) -> None:
    """Clip each model's gradient row as Keras does: by value (``clipvalue``), then each
    parameter tensor to its own norm (``clipnorm``), then the whole row (``global_clipnorm``).

    The limits are (K, 1) columns (inf where a model has none). A tensor or row whose norm is
    larger is scaled by ``limit / norm`` (Keras' ``clip_by_norm``), keeping its direction.
    ``segments`` are the [start, stop) columns of each parameter tensor.
    """
    if clip_value is not None:
        torch.clamp(g, min=-clip_value, max=clip_value, out=g)
    if clip_norm is not None:
        for a, b in segments:
            part = g[:, a:b]
            norm = torch.linalg.vector_norm(part, dim=1, keepdim=True)
            part.mul_(torch.where(norm > clip_norm, clip_norm / norm, 1.0))
    if global_clip_norm is not None:
        norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
        g.mul_(torch.where(norm > global_clip_norm, global_clip_norm / norm, 1.0))

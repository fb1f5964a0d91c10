"""The optimizers, each written once, over flat (K, N) parameter and gradient buffers.

Both training backends keep the parameters of their K models in one (K, N) tensor and the
gradients in another (the stacked MLP by construction, any nn.Module by re-pointing its
parameters at views of a (1, N) buffer), so an update is a handful of elementwise kernels over
two tensors, whatever the number of layers, and a per-model hyperparameter is a (K, 1) column.

Each optimizer is one :class:`OptimInfo` record in :data:`OPTIMIZERS` (as timm's ``OptimInfo``):
its name, its flags, its state buffers and columns, its per-step scalars and its rule, written
next to each other below and registered once; :class:`FlatOptimizer`, the driver and the module
backend (which trains through the same :class:`FlatOptimizer`) read the record, never the name.
:func:`update` is the one entry to every rule. It runs eagerly, or compiled by
``torch.compile`` into one fused kernel (:meth:`FlatOptimizer.fuse`): the same function either way.
``dnnlab.config.OPTIMIZERS`` is the list of names the config accepts: the config sits below this
layer and imports no torch, so it cannot read the records; ``tests/test_optim_flat.py`` checks
that the two name the same optimizers, in the same order.

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
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from dnnlab.config import OPTIM_HYPERS, OptimConfig
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


# ---------------------------------------------------------------------- the optimizers, one record each
Hypers = dict[str, np.ndarray]          # hyperparameter name -> K host values (hypers_of)
Columns = dict[str, Tensor]             # name -> (K, N) state buffer or (K, 1) constant column


@dataclass(frozen=True)
class OptimInfo:
    """One optimizer, registered once in :data:`OPTIMIZERS` (timm's ``OptimInfo``): everything
    :class:`FlatOptimizer` and the driver need to know about it, in one place.

    ``rule(p, g, s, k, c, tmp, nesterov, power)``
        one step on every model (see :func:`update`, which adds the coupled weight decay first).
    ``state(h, p) -> (buffers, constants)``
        its (K, N) state buffers (saved in checkpoints, under these names) and its constant
        (K, 1) columns, from the K models' hyperparameters ``h``.
    ``coefficients(h, lrs, steps, momenta, host) -> columns``
        its time-dependent scalars for ``len(lrs)`` steps (``lrs``: (S, K) rates, ``steps``:
        (S, 1) 1-based step numbers, ``momenta``: SGD's per-step momenta or None), each column
        (S, K) or broadcastable to it: row ``c[j]`` of the table is column j. It may advance
        ``host`` in place.
    ``host(h) -> {name: (K,) array}``
        per-model counters kept on the host in float64 (Nadam's momentum product), saved in
        checkpoints and compacted with the models.
    ``uses_eps``: reads ``optim.eps`` (a tiny eps is a cause of divergence it can name).
    ``own_decay``: ``optim.weight_decay`` is part of the rule (decoupled), not added to the
    gradient.
    """
    name: str
    rule: Callable[[Tensor, Tensor, Columns, Columns, Tensor, Tensor, bool, float], None]
    state: Callable[[Hypers, Tensor], tuple[Columns, Columns]]
    coefficients: Callable[[Hypers, np.ndarray, np.ndarray, np.ndarray | None,
                            dict[str, np.ndarray]], list[np.ndarray]]
    host: Callable[[Hypers], dict[str, np.ndarray]] = lambda h: {}
    uses_eps: bool = True
    own_decay: bool = False


OPTIMIZERS: dict[str, OptimInfo] = {}


def register(info: OptimInfo) -> OptimInfo:
    """Add an optimizer to :data:`OPTIMIZERS` (its name must be new)."""
    if info.name in OPTIMIZERS:
        raise ValueError(f"optimizer {info.name!r} is registered twice")
    OPTIMIZERS[info.name] = info
    return info


def update(name: str, nesterov: bool, power: float, p: Tensor, g: Tensor, s: Columns,
           k: Columns, c: Tensor, tmp: Tensor | None = None) -> None:
    """One step of optimizer ``name`` on every model (its ``rule``, after the coupled weight
    decay): the one entry to every rule, eager or compiled.

    ``p``, ``g``: (K, N) parameters and gradients (``g`` is used as scratch, and so is ``tmp``,
    a (K, N) buffer); ``s``: the state buffers; ``k``: constant (K, 1) columns; ``c``: this step's
    (C, K, 1) row of the table. Every op writes in place or into ``tmp``: a fresh (K, N) tensor
    per op would cost an allocation each (on a CPU, pages mapped and zeroed anew), more than the
    arithmetic. torch.compile fuses the whole function into one pass over the buffers; it gets no
    ``tmp``, so the scratch is an intermediate it never writes to memory.
    """
    if tmp is None:
        tmp = torch.empty_like(p)
    info = OPTIMIZERS[name]
    if "wd" in k and not info.own_decay:
        g.addcmul_(p, k["wd"])
    info.rule(p, g, s, k, c, tmp, nesterov, power)


def _no_state(h: Hypers, p: Tensor) -> tuple[Columns, Columns]:
    return {}, {}


def _minus_lr(h: Hypers, lrs: np.ndarray, steps: np.ndarray, momenta: np.ndarray | None,
              host: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [-lrs]


# sgd: v = momentum * v + g (torch's form), Nesterov as torch; c = [-lr, momentum]
def _sgd(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor, nesterov: bool,
         power: float) -> None:
    if "momentum_buffer" in s:
        buf = s["momentum_buffer"].mul_(c[1]).add_(g)
        if nesterov:
            g.addcmul_(buf, c[1])
        else:
            g = buf
    p.addcmul_(g, c[0])


def _sgd_state(h: Hypers, p: Tensor) -> tuple[Columns, Columns]:
    if not np.any(h["momentum"] != 0):
        return {}, {}
    return {"momentum_buffer": torch.zeros_like(p)}, {"momentum": _col(h["momentum"], p)}


register(OptimInfo(
    "sgd", _sgd, _sgd_state, uses_eps=False,
    coefficients=lambda h, lrs, steps, momenta, host: [
        -lrs, h["momentum"] if momenta is None else np.asarray(momenta, np.float64)]))


# adagrad: w -= lr * g / (sqrt(sum) + eps), the sum starting at initial_accumulator
def _adagrad(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor,
             nesterov: bool, power: float) -> None:
    total = s["sum"].addcmul_(g, g)
    torch.sqrt(total, out=tmp)
    p.addcmul_(g.div_(tmp.add_(k["eps"])), c[0])


register(OptimInfo(
    "adagrad", _adagrad, coefficients=_minus_lr,
    state=lambda h, p: ({"sum": _col(h["initial_accumulator"], p).expand_as(p).clone()}, {})))


# rmsprop: Keras' w -= lr * g / sqrt(v + eps); with momentum m = momentum * m + that, w -= m
def _rmsprop(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor,
             nesterov: bool, power: float) -> None:
    torch.mul(g, g, out=tmp)
    sq = s["square_avg"].lerp_(tmp, k["one_minus_rho"])          # rho * v + (1 - rho) g^2
    torch.add(sq, k["eps"], out=tmp)
    g.div_(tmp.sqrt_()).mul_(c[0])                               # lr * g / sqrt(v + eps)
    if "momentum_buffer" in s:
        g = s["momentum_buffer"].mul_(k["momentum"]).add_(g)
    p.sub_(g)


def _rmsprop_state(h: Hypers, p: Tensor) -> tuple[Columns, Columns]:
    s, k = _sgd_state(h, p)
    s["square_avg"] = torch.zeros_like(p)
    k["rho"], k["one_minus_rho"] = _col(h["rho"], p), _col(1 - h["rho"], p)
    return s, k


register(OptimInfo("rmsprop", _rmsprop, _rmsprop_state,
                   coefficients=lambda h, lrs, steps, momenta, host: [lrs]))


# adam (and adamw, nadam): m and v as torch's, eps added to sqrt(v) / sqrt(1 - beta2^t)
def _adam_state(h: Hypers, p: Tensor, second: str = "exp_avg_sq") -> tuple[Columns, Columns]:
    s = {"exp_avg": torch.zeros_like(p), second: torch.zeros_like(p)}
    k = {"one_minus_beta1": _col(1 - h["beta1"], p), "beta2": _col(h["beta2"], p),
         "one_minus_beta2": _col(1 - h["beta2"], p)}
    return s, k


def _adam_moments(g: Tensor, s: Columns, k: Columns, tmp: Tensor) -> Tensor:
    """Update m and v; return m, with sqrt(v) in ``tmp``."""
    m = s["exp_avg"].lerp_(g, k["one_minus_beta1"])
    torch.mul(g, g, out=tmp)
    v = s["exp_avg_sq"].lerp_(tmp, k["one_minus_beta2"])        # beta2 v + (1 - beta2) g^2
    torch.sqrt(v, out=tmp)
    return m


def _adam(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor, nesterov: bool,
          power: float) -> None:
    m = _adam_moments(g, s, k, tmp)
    tmp.mul_(c[1]).add_(k["eps"])
    p.addcmul_(torch.div(m, tmp, out=tmp), c[0])


def _adam_coefficients(h: Hypers, lrs: np.ndarray, steps: np.ndarray,
                       momenta: np.ndarray | None, host: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [-lrs / (1 - h["beta1"] ** steps), 1.0 / np.sqrt(1 - h["beta2"] ** steps)]


register(OptimInfo("adam", _adam, _adam_state, _adam_coefficients))


# adamax: u = max(beta2 * u, |g| + eps), w -= lr / (1 - beta1^t) * m / u
def _adamax(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor,
            nesterov: bool, power: float) -> None:
    m = s["exp_avg"].lerp_(g, k["one_minus_beta1"])
    u = s["exp_inf"].mul_(k["beta2"])
    torch.maximum(u, g.abs_().add_(k["eps"]), out=u)
    p.addcmul_(torch.div(m, u, out=tmp), c[0])


register(OptimInfo(
    "adamax", _adamax, partial(_adam_state, second="exp_inf"),
    coefficients=lambda h, lrs, steps, momenta, host: [-lrs / (1 - h["beta1"] ** steps)]))


# nadam: Keras 3's momentum schedule mu_t = beta1 * (1 - 0.5 * 0.96**t)
def _nadam(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor, nesterov: bool,
           power: float) -> None:
    m = _adam_moments(g, s, k, tmp)
    tmp.mul_(c[0]).add_(k["eps"])                                # sqrt(v) / sqrt(bc2) + eps
    p.add_(g.mul_(c[1]).addcmul_(m, c[2]).div_(tmp))


def _nadam_coefficients(h: Hypers, lrs: np.ndarray, steps: np.ndarray,
                        momenta: np.ndarray | None, host: dict[str, np.ndarray]) -> list[np.ndarray]:
    decay = KERAS_NADAM_MOMENTUM_DECAY
    mu = h["beta1"] * (1.0 - 0.5 * 0.96 ** (steps * decay))
    mu_next = h["beta1"] * (1.0 - 0.5 * 0.96 ** ((steps + 1) * decay))
    mu_product = host["mu_product"] * np.cumprod(mu, axis=0)
    host["mu_product"] = mu_product[-1].copy()
    return [1.0 / np.sqrt(1 - h["beta2"] ** steps),
            -lrs * (1.0 - mu) / (1.0 - mu_product),
            -lrs * mu_next / (1.0 - mu_product * mu_next)]


register(OptimInfo("nadam", _nadam, _adam_state, _nadam_coefficients,
                   host=lambda h: {"mu_product": np.ones(len(h["beta1"]))}))


# adamw: adam with the decay decoupled, w *= 1 - lr * weight_decay before the step
def _adamw(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor, nesterov: bool,
           power: float) -> None:
    if "wd" in k:
        p.mul_(c[2])
    _adam(p, g, s, k, c, tmp, nesterov, power)


register(OptimInfo(
    "adamw", _adamw, _adam_state, own_decay=True,
    coefficients=lambda h, lrs, steps, momenta, host: [
        *_adam_coefficients(h, lrs, steps, momenta, host), 1 - lrs * h["weight_decay"]]))


# ftrl: Keras' FTRL (McMahan et al. 2013) with lr_power, L1 and L2 shrinkage; c = [1/lr, active]
def _ftrl(p: Tensor, g: Tensor, s: Columns, k: Columns, c: Tensor, tmp: Tensor, nesterov: bool,
          power: float) -> None:
    n, z = s["accumulator"], s["linear"]
    _pow(n, power, out=tmp)                                      # n^p
    n.addcmul_(g, g)
    z.add_(g)
    sigma = _pow(n, power, out=g).sub_(tmp).mul_(c[0])           # (n_new^p - n^p) / lr
    z.sub_(sigma.mul_(p))
    quadratic = _pow(n, power, out=tmp).mul_(c[0]).add_(k["l2"])
    new = torch.clamp(z, min=-k["l1"], max=k["l1"], out=g).sub_(z).div_(quadratic)
    p.lerp_(new, c[1])                                           # frozen models keep theirs


def _ftrl_state(h: Hypers, p: Tensor) -> tuple[Columns, Columns]:
    s = {"accumulator": _col(h["initial_accumulator"], p).expand_as(p).clone(),
         "linear": torch.zeros_like(p)}
    return s, {"l1": _col(h["l1"], p), "l2": _col(2.0 * h["l2"], p)}


register(OptimInfo(
    "ftrl", _ftrl, _ftrl_state, uses_eps=False, own_decay=True,
    coefficients=lambda h, lrs, steps, momenta, host: [      # 1/lr, and a mask freezing lr = 0
        1.0 / np.where(lrs > 0, lrs, 1.0), (lrs > 0).astype(np.float64)]))


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
        self.info = OPTIMIZERS[name]
        self.h = {k: np.asarray(v, dtype=np.float64).copy() for k, v in hypers.items()}
        self.t = 0                                     # steps taken
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
        """Optimizer state (K, N) and the constant per-model columns (K, 1) in ``self.k``: the
        weight decay and eps columns every rule shares, and the optimizer's own (its ``state``)."""
        h, p = self.h, self.p
        k: dict[str, Tensor] = {}
        if np.any(h["weight_decay"] != 0):
            k["wd"] = _col(h["weight_decay"], p)
        self.state, own = self.info.state(h, p)
        k.update(own)
        if self.info.uses_eps:
            k["eps"] = _col(h["eps"], p)
        self.k = k
        self.host: dict[str, np.ndarray] = self.info.host(h)

    # ---------------------------------------------------------------- the time-dependent scalars
    def table(self, lrs: np.ndarray, momenta: np.ndarray | None = None) -> Tensor:
        """Per-step coefficients for the next ``len(lrs)`` steps, given their (steps, K) rates.

        ``momenta`` (steps, K) are SGD momenta that change per step (1cycle); else the configured.
        Advances the host-side counters (step count, Nadam's mu product): call it once for the
        steps that will then be taken, in order.
        """
        lrs = np.asarray(lrs, dtype=np.float64)
        steps = self.t + 1 + np.arange(len(lrs), dtype=np.float64)[:, None]     # 1-based, (S, 1)
        cols = self.info.coefficients(self.h, lrs, steps, momenta, self.host)
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
        self.host = {k: v[idx] for k, v in self.host.items()}

    def state_tensors(self) -> dict[str, Tensor]:
        """The evolving state as tensors (for a checkpoint); the host counters as well."""
        out = dict(self.state)
        out["t"] = torch.tensor([self.t], dtype=torch.float64)
        out.update({k: torch.as_tensor(v, dtype=torch.float64) for k, v in self.host.items()})
        return out

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for key, v in self.state.items():
            v.copy_(tensors[key])
        self.t = int(tensors["t"][0])
        self.host = {k: tensors[k].numpy().astype(np.float64).copy() for k in self.host}


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

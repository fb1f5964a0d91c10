"""Optimizers by name, with the book's (Keras 3's) meanings, and gradient clipping.

Every optimizer but FTRL is torch's own; the config carries Keras' defaults (eps 1e-7, beta1 0.9,
beta2 0.999, rho 0.9, initial accumulator 0.1). Where torch and Keras differ:

* ``nadam``: torch's ``NAdam`` with ``momentum_decay=1.0``. Keras 3's Nadam
  (keras/src/optimizers/nadam.py) uses the momentum schedule ``mu_t = beta1 * (1 - 0.5 * 0.96**t)``;
  torch computes ``mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))``, so ``momentum_decay=1``
  is Keras 3. torch's default 0.004 is the old Keras 2 / TF1 ``schedule_decay``, where mu_t stays
  near beta1 / 2 for thousands of steps. The rest of the update (bias corrections with the product
  of the mu's, eps added to sqrt(v_hat)) is the same in both.
* ``adam``/``adamax``/``adamw``: torch adds eps to sqrt(v_hat), Keras to sqrt(v) with the bias
  correction folded into the step size; the two differ only while sqrt(v) is near eps.
* ``rmsprop``: torch's ``alpha`` is Keras' ``rho``; ``momentum`` applies as in Keras.
* ``weight_decay``: decoupled for ``adamw``; for the other torch optimizers torch adds
  ``weight_decay * w`` to the gradient (an L2 penalty of ``weight_decay / 2 * sum(w**2)``).
  ``model.l2`` is the Keras-style penalty and usually what the book means.
* ``ftrl``: dnnlab's FTRL (Keras semantics, see ``ftrl.py``).

``clip_gradients_`` follows the book: ``clip_value`` clips each gradient component, ``clip_norm``
rescales the whole gradient (all parameters together) when its norm is larger, keeping its
direction. (That is Keras' ``global_clipnorm``; Keras' ``clipnorm`` clips each tensor separately.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer

from dnnlab.config import OPTIMIZERS, OptimConfig
from dnnlab.errors import ConfigError
from dnnlab.optim.ftrl import FTRL

KERAS_NADAM_MOMENTUM_DECAY = 1.0


def make_optimizer(params, cfg: OptimConfig) -> Optimizer:
    """The optimizer ``cfg.name`` over ``params`` (tensors or param-group dicts)."""
    name, lr, betas = cfg.name, cfg.lr, (cfg.beta1, cfg.beta2)
    common = dict(lr=lr, weight_decay=cfg.weight_decay, foreach=True)
    if name == "sgd":
        if cfg.nesterov and cfg.momentum == 0:
            raise ConfigError("optim.nesterov = true needs optim.momentum > 0 (the book uses 0.9)")
        return torch.optim.SGD(params, momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if name == "adagrad":
        return torch.optim.Adagrad(params, eps=cfg.eps,
                                   initial_accumulator_value=cfg.initial_accumulator, **common)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, alpha=cfg.rho, eps=cfg.eps, momentum=cfg.momentum,
                                   **common)
    if name == "adam":
        return torch.optim.Adam(params, betas=betas, eps=cfg.eps, **common)
    if name == "adamax":
        return torch.optim.Adamax(params, betas=betas, eps=cfg.eps, **common)
    if name == "nadam":
        return torch.optim.NAdam(params, betas=betas, eps=cfg.eps,
                                 momentum_decay=KERAS_NADAM_MOMENTUM_DECAY, **common)
    if name == "adamw":
        return torch.optim.AdamW(params, betas=betas, eps=cfg.eps, **common)
    if name == "ftrl":
        if cfg.weight_decay:
            raise ConfigError("ftrl has no weight_decay; use optim.l2 (and optim.l1) instead")
        return FTRL(params, lr=lr, lr_power=cfg.lr_power,
                    initial_accumulator=cfg.initial_accumulator, l1=cfg.l1, l2=cfg.l2)
    raise ConfigError(f"optim.name = {name!r} is not allowed; choose one of: {', '.join(OPTIMIZERS)}")


def clip_gradients_(params: Iterable[torch.Tensor], cfg: OptimConfig) -> None:
    """Clip the gradients of ``params`` in place by ``cfg.clip_value`` and/or ``cfg.clip_norm``."""
    if cfg.clip_value is None and cfg.clip_norm is None:
        return
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return
    if cfg.clip_value is not None:
        torch.nn.utils.clip_grad_value_(grads, cfg.clip_value, foreach=True)
    if cfg.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(grads, cfg.clip_norm, foreach=True)

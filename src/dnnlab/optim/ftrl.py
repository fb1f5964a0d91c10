"""FTRL-proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", 2013), as Keras' Ftrl.

torch has no FTRL. Per coordinate, with accumulator ``n`` (starting at ``initial_accumulator``) and
linear term ``z`` (starting at 0), one step with gradient ``g`` on weight ``w`` is::

    n_new = n + g**2
    sigma = (n_new**(-lr_power) - n**(-lr_power)) / lr
    z     = z + g - sigma * w
    w     = 0                                                    if |z| <= l1
          = (sign(z) * l1 - z) / (n_new**(-lr_power) / lr + 2 * l2)   otherwise

With ``lr_power = -0.5`` this is the paper's Algorithm 1 (alpha = lr, beta = 0, lambda_1 = l1,
lambda_2 = 2 * l2: Keras, and so dnnlab, doubles l2). The L1 term sets weights to exact zeros,
which is why FTRL is one of the chapter's three ways to a sparse model.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from dnnlab.errors import ConfigError


class FTRL(Optimizer):
    """Follow-the-regularized-leader with L1/L2, per coordinate, with Keras' defaults."""

    def __init__(self, params, lr: float = 1e-3, lr_power: float = -0.5,
                 initial_accumulator: float = 0.1, l1: float = 0.0, l2: float = 0.0):
        if not lr > 0:
            raise ConfigError(f"ftrl: optim.lr must be > 0, got {lr}")
        if lr_power > 0:
            raise ConfigError(f"ftrl: optim.lr_power must be <= 0 (-0.5 is the paper's), got {lr_power}")
        if initial_accumulator < 0:
            raise ConfigError(f"ftrl: optim.initial_accumulator must be >= 0, got {initial_accumulator}")
        if l1 < 0 or l2 < 0:
            raise ConfigError(f"ftrl: optim.l1 and optim.l2 must be >= 0, got {l1} and {l2}")
        defaults = dict(lr=lr, lr_power=lr_power, initial_accumulator=initial_accumulator,
                        l1=l1, l2=l2)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, p_neg = group["lr"], -group["lr_power"]
            l1, l2 = group["l1"], group["l2"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                if w.grad.is_sparse:
                    raise ConfigError("ftrl: sparse gradients are not supported")
                g = w.grad
                state = self.state[w]
                if not state:
                    state["accumulator"] = torch.full_like(w, group["initial_accumulator"],
                                                          memory_format=torch.preserve_format)
                    state["linear"] = torch.zeros_like(w, memory_format=torch.preserve_format)
                n, z = state["accumulator"], state["linear"]
                n_new = n + g * g
                n_new_pow = n_new.pow(p_neg)
                sigma = (n_new_pow - n.pow(p_neg)) / lr
                z.add_(g - sigma * w)
                quadratic = n_new_pow / lr + 2.0 * l2
                w.copy_((z.clamp(-l1, l1) - z) / quadratic)
                n.copy_(n_new)
        return loss

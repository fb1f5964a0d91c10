"""Weight initializers, defined as Keras defines them (the book's definitions).

Keras' ``VarianceScaling`` picks a target variance ``scale / fan`` and draws from one of three
distributions that all have exactly that variance:

=========  =======  ===========================
family     scale    fan
=========  =======  ===========================
glorot     1        fan_avg = (fan_in + fan_out) / 2
he         2        fan_in
lecun      1        fan_in
=========  =======  ===========================

* ``*_uniform``: U(-limit, limit) with ``limit = sqrt(3 * scale / fan)``.
* ``*_truncated_normal``: a normal truncated at 2 standard deviations, with the std divided by
  0.87962566103423978 (the std of a standard normal truncated to [-2, 2]) so that the variance
  after truncation is ``scale / fan``.
* ``*_normal``: **the same as** ``*_truncated_normal``. Keras' ``he_normal``, ``glorot_normal`` and
  ``lecun_normal`` are truncated normals (``VarianceScaling`` maps ``"normal"`` to
  ``"truncated_normal"``); dnnlab keeps the book's names meaning what they mean in the book.

Three more: ``"normal"`` draws N(0, value**2) (``value`` is the std, e.g. 1.0 for the
"N(0, 1) weights" experiment), ``"constant"`` sets every weight to ``value`` (the symmetric
initialization question), and ``"torch_default"`` is ``nn.Linear``'s own weight init,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Weights use torch's layout ``(..., out, in)``. A stacked tensor ``(K, out, in)`` (the K-model
engine) is filled slice by slice, so slice k equals what an unstacked ``(out, in)`` tensor gets
from the same generator after k earlier draws. Values are drawn on the generator's device (the
CPU by default) and copied, so a seed gives the same weights on the CPU and on CUDA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dnnlab.config import INITIALIZERS
from dnnlab.errors import ConfigError

TRUNCATED_STD = 0.87962566103423978   # std of N(0, 1) truncated to [-2, 2]
_FAMILIES = {"glorot": (1.0, "fan_avg"), "he": (2.0, "fan_in"), "lecun": (1.0, "fan_in")}


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight in torch layout ``(..., out, in)``; a vector has fan = length."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    return int(shape[-1]), int(shape[-2])


def variance(name: str, shape) -> float:
    """The variance ``init_(name)`` gives a tensor of ``shape`` (for the glorot/he/lecun families)."""
    family = name.split("_", 1)[0]
    if family not in _FAMILIES:
        raise ConfigError(f"init {name!r} has no fixed variance; only glorot_*, he_* and lecun_* do")
    scale, mode = _FAMILIES[family]
    fan_in, fan_out = fans(shape)
    fan = fan_in if mode == "fan_in" else (fan_in + fan_out) / 2.0
    return scale / max(1.0, fan)


def init_(tensor: Tensor, name: str, value: float = 0.0,
          generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` in place with the initializer ``name`` (one of ``config.INITIALIZERS``)."""
    if name not in INITIALIZERS:
        raise ConfigError(f"unknown initializer {name!r}; choose one of: {', '.join(INITIALIZERS)}")
    if name == "normal" and not value > 0:
        raise ConfigError("init = 'normal' draws N(0, std**2) with std = model.init_value; "
                          f"set model.init_value > 0 (got {value})")
    with torch.no_grad():
        if name == "constant":
            return tensor.fill_(value)
        if tensor.dim() > 2:
            for k in range(tensor.shape[0]):
                init_(tensor[k], name, value, generator)
            return tensor
        device = generator.device if generator is not None else torch.device("cpu")
        draw = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
        _fill(draw, name, value, generator)
        return tensor.copy_(draw)


def _fill(t: Tensor, name: str, value: float, g: torch.Generator | None) -> None:
    if name == "normal":
        t.normal_(0.0, value, generator=g)
        return
    if name == "torch_default":
        bound = 1.0 / math.sqrt(max(1, fans(t.shape)[0]))
        t.uniform_(-bound, bound, generator=g)
        return
    var = variance(name, t.shape)
    if name.endswith("_uniform"):
        limit = math.sqrt(3.0 * var)
        t.uniform_(-limit, limit, generator=g)
    else:  # *_normal and *_truncated_normal: Keras' truncated normal
        std = math.sqrt(var) / TRUNCATED_STD
        torch.nn.init.trunc_normal_(t, 0.0, std, -2.0 * std, 2.0 * std, generator=g)

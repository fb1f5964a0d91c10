"""Activation functions by name: modules (for the MLP), functions and their derivatives (for the
stacked MLP, whose backward pass is written out by hand).

Defaults follow Keras 3 so results compare with the book:

* ``leaky_relu``: slope 0.3 (``keras.layers.LeakyReLU``'s default ``negative_slope``; the book's
  examples often pass 0.2 explicitly: set ``model.activation_param = 0.2`` for that).
* ``elu``: alpha 1.0.
* ``prelu``: one learned slope per unit, starting at 0.0 as Keras' ``PReLU`` (``alpha_initializer=
  "zeros"``) does; ``param`` sets another starting slope (He et al. used 0.25).
* ``rrelu``: torch's defaults, slope drawn from U(1/8, 1/3) while training, their mean at inference
  (Keras has no RReLU).
* ``swish`` and ``silu`` are the same function, x * sigmoid(x). ``gelu`` is the exact (erf) form.
* ``linear`` is the identity.

``param`` is read only by leaky_relu, elu and prelu; the others ignore it, so one config can sweep
over activations without editing ``activation_param`` each time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab.config import ACTIVATIONS
from dnnlab.errors import ConfigError, DnnlabError

LEAKY_RELU_SLOPE = 0.3
ELU_ALPHA = 1.0
PRELU_INIT = 0.0
RRELU_LOWER, RRELU_UPPER = 1.0 / 8.0, 1.0 / 3.0


def _check(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")


def make_activation(name: str, param: float | None = None, *, units: int = 1) -> nn.Module:
    """A fresh activation module. ``units`` is the number of PReLU slopes (one per unit in the MLP)."""
    _check(name)
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_RELU_SLOPE if param is None else param)
    if name == "elu":
        return nn.ELU(ELU_ALPHA if param is None else param)
    if name == "prelu":
        return nn.PReLU(num_parameters=units, init=PRELU_INIT if param is None else param)
    if name == "rrelu":
        return nn.RReLU(RRELU_LOWER, RRELU_UPPER)
    return {
        "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU, "gelu": nn.GELU,
        "swish": nn.SiLU, "silu": nn.SiLU, "mish": nn.Mish, "softplus": nn.Softplus,
        "linear": nn.Identity,
    }[name]()


def _identity(x: Tensor) -> Tensor:
    return x


def _rrelu(x: Tensor, training: bool = False) -> Tensor:
    return F.rrelu(x, RRELU_LOWER, RRELU_UPPER, training=training)


def activation_fn(name: str, param: float | None = None) -> Callable[[Tensor], Tensor]:
    """The same activation as a function of one tensor (no state, so usable on stacked weights).

    ``rrelu``'s function takes ``training=False`` as a second argument (the mean slope unless told);
    ``prelu`` has a learned parameter and exists only as a module.
    """
    _check(name)
    if name == "prelu":
        raise DnnlabError("prelu learns its slopes, so it has no functional form; use "
                          "make_activation('prelu') (the single-model trainer), or another "
                          "activation for stacked K-model training")
    if name == "leaky_relu":
        return partial(F.leaky_relu, negative_slope=LEAKY_RELU_SLOPE if param is None else param)
    if name == "elu":
        return partial(F.elu, alpha=ELU_ALPHA if param is None else param)
    if name == "rrelu":
        return _rrelu
    return {
        "sigmoid": F.sigmoid, "tanh": F.tanh, "relu": F.relu, "selu": F.selu, "gelu": F.gelu,
        "swish": F.silu, "silu": F.silu, "mish": F.mish, "softplus": F.softplus,
        "linear": _identity,
    }[name]


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805   # torch's (and Keras') constants
SOFTPLUS_THRESHOLD = 20.0                                         # F.softplus's default

_aten = torch.ops.aten


def activation_inplace(name: str, param: float | None = None) -> Callable[[Tensor], Tensor] | None:
    """:func:`activation_fn` applied in place, for the activations whose derivative
    (:func:`activation_grad`) reads the output alone; None for those whose derivative needs the
    input. The stacked MLP's forward pass then writes each layer's activation over its product's
    output: one tensor and one allocation a layer instead of two."""
    _check(name)
    if name == "elu":
        return partial(F.elu_, alpha=ELU_ALPHA if param is None else param)
    return {"selu": F.selu_, "relu": F.relu_, "sigmoid": torch.sigmoid_, "tanh": torch.tanh_,
            "linear": _identity}.get(name)


def activation_grad(name: str, param: float | None = None) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The derivative of :func:`activation_fn` as ``grad(g, z, y) -> g * f'(z)``, where ``z`` is
    the input and ``y = f(z)`` the output; the activations of :func:`activation_inplace` read
    ``y`` alone (their ``z`` may be ``y`` itself). Each is torch's own fused backward kernel (the
    one autograd would call), so a hand-written backward pass gets autograd's numbers at one
    kernel per layer instead of autograd's bookkeeping. The result is written over ``g`` (a
    temporary of the backward pass) where torch has an ``out`` form, so no new tensor is made.
    ``prelu`` and ``rrelu`` carry a learned slope or a random one and are differentiated where
    that slope lives (``dnnlab.train.stacked``).
    """
    _check(name)
    if name in ("prelu", "rrelu"):
        raise DnnlabError(f"{name}'s slope is a parameter or random draw; its derivative lives "
                          "in the stacked MLP, not here")
    if name == "leaky_relu":
        slope = LEAKY_RELU_SLOPE if param is None else param
        return lambda g, z, y: _aten.leaky_relu_backward.grad_input(g, z, slope, False,
                                                                     grad_input=g)
    if name == "elu":
        alpha = ELU_ALPHA if param is None else param
        return lambda g, z, y: _aten.elu_backward.grad_input(g, alpha, 1, 1, True, y,
                                                              grad_input=g)
    return {
        "selu": lambda g, z, y: _aten.elu_backward.grad_input(g, SELU_ALPHA, SELU_SCALE, 1, True,
                                                              y, grad_input=g),
        "relu": lambda g, z, y: _aten.threshold_backward.grad_input(g, y, 0, grad_input=g),
        "sigmoid": lambda g, z, y: _aten.sigmoid_backward.grad_input(g, y, grad_input=g),
        "tanh": lambda g, z, y: _aten.tanh_backward.grad_input(g, y, grad_input=g),
        "gelu": lambda g, z, y: _aten.gelu_backward.grad_input(g, z, grad_input=g),
        "swish": lambda g, z, y: _aten.silu_backward.grad_input(g, z, grad_input=g),
        "silu": lambda g, z, y: _aten.silu_backward.grad_input(g, z, grad_input=g),
        "mish": lambda g, z, y: _aten.mish_backward(g, z),
        "softplus": lambda g, z, y: _aten.softplus_backward.grad_input(
            g, z, 1, SOFTPLUS_THRESHOLD, grad_input=g),
        "linear": lambda g, z, y: g,
    }[name]

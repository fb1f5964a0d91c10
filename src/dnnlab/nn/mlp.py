"""The deep MLP every study trains: dense blocks with optional BN and dropout, logits out.

Submodule names are part of the contract (checkpoints, transfer learning and the K-model engine
read them): ``input_bn``, ``input_dropout``, ``hidden[i].linear|bn|act|drop`` and ``head``. A
submodule that a config does not ask for is absent, not ``None``.

Keras conventions, for comparability with the book:

* BatchNorm momentum is given the Keras way (``running = m * running + (1 - m) * batch``, default
  0.99), so torch's ``momentum = 1 - m``; epsilon defaults to Keras' 1e-3. (torch keeps an unbiased
  running variance where Keras keeps the biased one; with batches of 32 the two differ by 3%.)
* With BN before the activation the dense layer has no bias, as in the book (BN's beta replaces it).
* ``penalty()`` is Keras' ``L1L2`` kernel regularizer on every dense kernel, the head included:
  ``l1 * sum|w| + l2 * sum(w**2)``, biases excluded.
* ``apply_max_norm_()`` is Keras' ``max_norm(c)`` on the hidden kernels (the book's MaxNormDense
  leaves the softmax layer unconstrained): each unit's incoming weight vector is rescaled to norm
  ``c`` when longer.
* Every dense kernel, the head's too, uses ``config.init`` (a constant init must reach the head for
  the symmetry experiment to show anything).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dnnlab.config import ModelConfig, hidden_sizes
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.nn.activations import make_activation
from dnnlab.nn.init import init_


def _batch_norm(n: int, cfg: ModelConfig) -> nn.BatchNorm1d:
    # rounded so that Keras 0.99 gives exactly 0.01, not 0.010000000000000009
    return nn.BatchNorm1d(n, eps=cfg.bn_epsilon, momentum=round(1.0 - cfg.bn_momentum, 12))


def _dropout(rate: float, kind: str) -> nn.Module:
    return nn.AlphaDropout(rate) if kind == "alpha" else nn.Dropout(rate)


class Block(nn.Module):
    """One hidden layer: ``linear``, then ``bn`` before or after ``act``, then ``drop``."""

    def __init__(self, in_features: int, out_features: int, cfg: ModelConfig, dropout: bool = True):
        super().__init__()
        self.bn_position = cfg.batch_norm
        self.linear = nn.Linear(in_features, out_features, bias=cfg.batch_norm != "before")
        if cfg.batch_norm != "none":
            self.bn = _batch_norm(out_features, cfg)
        self.act = make_activation(cfg.activation, cfg.activation_param, units=out_features)
        if cfg.dropout > 0 and dropout:
            self.drop = _dropout(cfg.dropout, cfg.dropout_kind)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x)
        bn = self._modules.get("bn")
        if bn is not None and self.bn_position == "before":
            x = bn(x)
        x = self.act(x)
        if bn is not None and self.bn_position == "after":
            x = bn(x)
        drop = self._modules.get("drop")
        return drop(x) if drop is not None else x


class MLP(nn.Module):
    """A classifier: ``forward`` returns logits (the softmax lives in the cross-entropy loss)."""

    def __init__(self, cfg: ModelConfig, in_features: int, n_classes: int):
        super().__init__()
        if cfg.batch_norm not in ("none", "before", "after"):
            raise ConfigError(f"model.batch_norm = {cfg.batch_norm!r}; choose none, before or after")
        self.config, self.in_features, self.n_classes = cfg, int(in_features), int(n_classes)
        if cfg.input_batch_norm:
            self.input_bn = _batch_norm(in_features, cfg)
        if cfg.input_dropout > 0:
            self.input_dropout = _dropout(cfg.input_dropout, cfg.dropout_kind)
        sizes = [in_features] + hidden_sizes(cfg)
        n = len(sizes) - 1   # model.dropout_layers: after every hidden layer, or the last only
        self.hidden = nn.ModuleList(
            Block(a, b, cfg, dropout=cfg.dropout_layers == "all" or i == n - 1)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
        self.head = nn.Linear(sizes[-1], n_classes)

    def _input(self, x: Tensor) -> Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        bn = self._modules.get("input_bn")
        if bn is not None:
            x = bn(x)
        drop = self._modules.get("input_dropout")
        return drop(x) if drop is not None else x

    def forward(self, x: Tensor) -> Tensor:
        x = self._input(x)
        for block in self.hidden:
            x = block(x)
        return self.head(x)

    def features(self, x: Tensor, n_layers: int) -> Tensor:
        """The output of the first ``n_layers`` hidden blocks (0 = the prepared input)."""
        if not 0 <= n_layers <= len(self.hidden):
            raise DnnlabError(f"features(n_layers={n_layers}): this MLP has {len(self.hidden)} "
                              f"hidden layers; pass 0..{len(self.hidden)}")
        x = self._input(x)
        for block in self.hidden[:n_layers]:
            x = block(x)
        return x

    def kernels(self) -> list[Tensor]:
        """The dense weight matrices, hidden layers then head (what penalties apply to)."""
        return [b.linear.weight for b in self.hidden] + [self.head.weight]

    def penalty(self) -> Tensor:
        """``l1 * sum|w| + l2 * sum(w**2)`` over the dense kernels (Keras' L1L2 regularizer)."""
        cfg = self.config
        total = self.head.weight.new_zeros(())
        if cfg.l1 == 0 and cfg.l2 == 0:
            return total
        for w in self.kernels():
            if cfg.l1:
                total = total + cfg.l1 * w.abs().sum()
            if cfg.l2:
                total = total + cfg.l2 * w.square().sum()
        return total

    @torch.no_grad()
    def apply_max_norm_(self) -> None:
        """Rescale each hidden unit's incoming weights (a row of ``linear.weight``) to norm <= max_norm."""
        c = self.config.max_norm
        if c is None:
            return
        for block in self.hidden:
            block.linear.weight.renorm_(2, 0, c)


def build_mlp(cfg: ModelConfig, in_features: int, n_classes: int, seed: int = 0) -> MLP:
    """An MLP whose weights depend only on ``cfg``, the shapes and ``seed``.

    ``cfg`` is the ``[model]`` table (a :class:`~dnnlab.config.ModelConfig`); ``in_features``
    the width of an input row; ``n_classes`` the number of outputs (logits).

    Kernels are drawn from one ``torch.Generator().manual_seed(seed)`` in layer order (hidden 0..n-1,
    then the head), nothing else is drawn; biases are zeros or ``bias_value``; BN starts at
    gamma = 1, beta = 0; PReLU at its initial slope. torch's global random state is left as it was
    (``nn.Linear`` draws a default init from it, which is then overwritten), so dropout in training
    sees the same random stream whether the model was built here or passed in.
    """
    if in_features < 1 or n_classes < 2:
        raise DnnlabError(f"an MLP needs at least 1 input feature and 2 classes, got "
                          f"{in_features} and {n_classes}")
    with torch.random.fork_rng(devices=[]):
        model = MLP(cfg, in_features, n_classes)
    g = torch.Generator().manual_seed(int(seed))
    for layer in [b.linear for b in model.hidden] + [model.head]:
        init_(layer.weight, cfg.init, cfg.init_value, generator=g)
        if layer.bias is not None:
            with torch.no_grad():
                layer.bias.fill_(cfg.bias_value if cfg.bias_init == "constant" else 0.0)
    return model

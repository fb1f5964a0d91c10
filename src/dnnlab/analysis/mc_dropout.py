"""MC Dropout: predictions averaged over many stochastic forward passes, and how to judge them.

Monte Carlo Dropout (Gal & Ghahramani, 2016) keeps dropout switched on at inference and averages
the softmax outputs of ``N`` passes. Done carelessly (``model.train()``) it also puts BatchNorm in
training mode, so every prediction would use the statistics of its own batch and overwrite the
running statistics. :func:`enable_mc_dropout` switches on the dropout modules and nothing else.

Only dropout *modules* can be reached: ``nn.Dropout`` (and 1d/2d/3d), ``nn.AlphaDropout``,
``nn.FeatureAlphaDropout`` and their subclasses. A custom layer that calls
``F.dropout(x, training=self.training)`` is governed by its own ``training`` flag, which stays
``False`` here, so its dropout stays off: make it a module to use it with MC Dropout.

Calibration is measured with the expected calibration error (Guo et al., 2017): predictions are
binned by confidence (15 equal-width bins on [0, 1]) and the gaps between accuracy and mean
confidence are averaged, weighted by the share of predictions in each bin.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnnlab.data.batching import batch_slices
from dnnlab.errors import DnnlabError

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The dropout modules of ``model`` (alpha dropout included), in registration order."""
    return [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)]


@contextlib.contextmanager
def enable_mc_dropout(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Inside the block, ``model`` is in eval mode except its dropout modules, which sample.

    BatchNorm (and everything else) runs in inference mode, so running statistics are used and
    left unchanged. Every module's own ``training`` flag is restored on exit, also after an error.
    Yields the list of dropout modules switched on (empty when the model has none).
    """
    modes = [(m, m.training) for m in model.modules()]
    drops = dropout_modules(model)
    try:
        model.eval()
        for m in drops:
            m.train()
        yield drops
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """A seeded RNG scope that leaves the global generators as they were (no-op without seed)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.inference_mode()
def plain_predict(model: nn.Module, x: Tensor, batch_size: int = 4096) -> Tensor:
    """Softmax probabilities ``(N, C)`` of ordinary inference (every module in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([F.softmax(model(x[s:e]), 1) for s, e in batch_slices(len(x), batch_size)])
    finally:
        model.train(was_training)


@torch.inference_mode()
def mc_predict(model: nn.Module, x: Tensor, n_samples: int = 10, batch_size: int = 4096,
               seed: int | None = None) -> Tensor:
    """Softmax probabilities of ``n_samples`` dropout passes, shape ``(n_samples, N, C)``.

    ``model`` keeps its dropout on for these passes (its mode is restored), ``batch_size`` rows
    go through at once.

    Average over the first axis for the MC Dropout prediction. ``seed`` makes the dropout masks
    reproducible without touching the global random state.
    """
    if n_samples < 1:
        raise DnnlabError(f"mc_predict: n_samples must be >= 1, got {n_samples}")
    with enable_mc_dropout(model) as drops, _seeded(seed, x.device):
        if not drops:
            raise DnnlabError("MC Dropout needs dropout layers, and this model has none; train "
                              "one with model.dropout > 0 (nn.Dropout or nn.AlphaDropout modules)")
        out = [torch.cat([F.softmax(model(x[s:e]), 1) for s, e in batch_slices(len(x), batch_size)])
               for _ in range(n_samples)]
    return torch.stack(out)


def _mean_probs(probs: Tensor) -> Tensor:
    if probs.dim() == 3:
        return probs.mean(0)
    if probs.dim() != 2:
        raise DnnlabError(f"expected probabilities of shape (N, C) or (samples, N, C), got "
                          f"{tuple(probs.shape)}")
    return probs


def predictive_entropy(probs: Tensor) -> Tensor:
    """Entropy in nats of the (mean) predictive distribution, one value per input.

    ``probs`` is ``(N, C)`` or the ``(samples, N, C)`` output of :func:`mc_predict`, which is
    averaged over samples first. 0 means certain; ``log(C)`` is a uniform guess.
    """
    p = _mean_probs(probs).double()
    return -(p * torch.log(p.clamp_min(1e-300))).sum(1).to(probs.dtype)


def mutual_information(probs: Tensor) -> Tensor:
    """The part of the predictive entropy due to disagreement between the dropout samples.

    ``H[mean_s p_s] - mean_s H[p_s]`` for ``probs`` of shape ``(samples, N, C)`` (BALD's score,
    Houlsby et al. 2011): 0 when every pass predicts the same distribution, large when confident
    passes disagree. Plain inference has no such term; it is what MC Dropout adds.
    """
    if probs.dim() != 3:
        raise DnnlabError(f"mutual_information needs MC samples of shape (samples, N, C), got "
                          f"{tuple(probs.shape)}")
    p = probs.double()
    per_sample = -(p * torch.log(p.clamp_min(1e-300))).sum(2).mean(0)
    return (predictive_entropy(p) - per_sample).clamp_min(0).to(probs.dtype)


def expected_calibration_error(probs: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between accuracy and confidence, over ``n_bins`` bins.

    Bins are ``(k/n, (k+1)/n]`` on the top-class probability; an empty bin counts for nothing.
    """
    p = _mean_probs(probs)
    if len(p) != len(y):
        raise DnnlabError(f"{len(p)} predictions but {len(y)} labels")
    if len(y) == 0:
        return float("nan")
    conf, pred = p.max(1)
    correct = (pred == y.to(pred.device)).to(conf.dtype)
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp_(0, n_bins - 1)
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    return float((conf_sum - acc_sum).abs().sum() / len(y))


def _scores(probs: Tensor, y: Tensor, n_bins: int) -> dict[str, float]:
    p = _mean_probs(probs)
    y = y.to(p.device)
    return {"accuracy": float((p.argmax(1) == y).float().mean()),
            "nll": float(F.nll_loss(torch.log(p.clamp_min(1e-12)), y)),
            "ece": expected_calibration_error(p, y, n_bins),
            "entropy": float(predictive_entropy(p).mean())}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mc_dropout_eval(model: nn.Module, x: Tensor, y: Tensor, n_samples: int = 10,
                    batch_size: int = 4096, seed: int | None = None,
                    n_bins: int = 15) -> dict[str, float]:
    """MC Dropout on (x, y): accuracy, NLL, ECE, mean predictive entropy and inference seconds.

    ``model`` is averaged over ``n_samples`` dropout passes (:func:`mc_predict`, ``batch_size``
    rows at once, masks from ``seed``); ECE over ``n_bins`` confidence bins.
    """
    _sync(x.device)
    t0 = time.perf_counter()
    probs = mc_predict(model, x, n_samples, batch_size, seed)
    _sync(x.device)
    seconds = time.perf_counter() - t0
    return {**_scores(probs, y, n_bins), "seconds": seconds, "n_samples": n_samples}


def plain_eval(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096,
               n_bins: int = 15) -> dict[str, float]:
    """Ordinary inference on (x, y), with the same fields as :func:`mc_dropout_eval`.

    ``model`` in eval mode (dropout off), ``batch_size`` rows at once, ECE over ``n_bins`` bins.
    """
    _sync(x.device)
    t0 = time.perf_counter()
    probs = plain_predict(model, x, batch_size)
    _sync(x.device)
    seconds = time.perf_counter() - t0
    return {**_scores(probs, y, n_bins), "seconds": seconds, "n_samples": 0}

"""Layer statistics: what the signal and the gradient look like at each dense layer of an MLP.

Answers the chapter's questions about unstable gradients by measurement: does the activation
std stay near 1 through depth (Glorot/He, SELU's self-normalization), do gradient norms vanish
or explode toward the input, how many ReLU units are dead.

The statistics are taken with forward hooks, so any ``nn.Module`` built from ``nn.Linear``
layers works, not only dnnlab's MLP. A layer's *activation* is the output of the last leaf
module that runs after its ``nn.Linear`` and before the next one: for dnnlab's blocks that is
the activation, or the batch norm / dropout that follows it, i.e. what the next layer receives.
The last ``nn.Linear`` is the output layer; its "activation" is the logits.

Gradients are taken with ``torch.autograd.grad`` on the dense kernels, so the model's ``.grad``
fields (and an optimizer's view of them) are left untouched.

Dead and saturated units are judged on the output of the activation function itself (the first
leaf after the ``nn.Linear`` that is not batch norm or dropout), so a batch norm placed after the
activation, or dropout zeroing units at random, does not hide or fake them.

Statistics over seeds live here too (:func:`mean_std`, :func:`pm`, :func:`mean_interval`,
:func:`welch`): the one mean ± std every study, sweep and report prints.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnnlab.errors import DnnlabError

# A unit's output is *saturated* where the activation's derivative is under SATURATION_DERIVATIVE
# of its peak: the chapter's flat tails, which pass almost no gradient back. 4% is where sigmoid's
# output is under 0.0102 or over 0.9898, tanh's |output| over 0.98, and ELU's output within 0.04
# of -alpha. The derivative is read off the output (no second pass): sigmoid' = a (1 - a),
# tanh' = 1 - a^2, ELU' = a + alpha and SELU' = a + scale * alpha on the negative side.
# ReLU's zeros are not saturation (the derivative is exactly 0 by design); a unit that is always
# 0 is counted as *dead*.
SATURATION_DERIVATIVE = 0.04
_SELU_SCALE, _SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
# Leaves that follow an activation without being one: skipped when looking for the activation.
_NOT_ACTIVATION = (nn.BatchNorm1d, nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _relative_derivative(a: torch.Tensor, module: nn.Module) -> torch.Tensor | None:
    """The activation's derivative at each output ``a``, divided by its peak (None if unknown)."""
    if isinstance(module, nn.Sigmoid):
        return a * (1 - a) / 0.25
    if isinstance(module, nn.Tanh):
        return 1 - a * a
    if isinstance(module, nn.ELU):
        return torch.where(a < 0, a + module.alpha, torch.ones_like(a))
    if isinstance(module, nn.SELU):
        return torch.where(a < 0, a + _SELU_SCALE * _SELU_ALPHA, torch.full_like(a, _SELU_SCALE)) \
            / _SELU_SCALE
    return None


def saturated_fraction(values: torch.Tensor, module: nn.Module) -> float:
    """Share of the outputs of ``module`` (an activation) that sit in its flat, saturated tails.

    0.0 for activations without saturating tails (ReLU's zeros are *dead*, counted by ``dead``).
    """
    rel = _relative_derivative(values.detach().double(), module)
    if rel is None:
        return 0.0
    return float((rel < SATURATION_DERIVATIVE).double().mean())


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def layer_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                train: bool = False, tensors: bool = False) -> list[dict]:
    """Per dense layer: ``layer`` (1-based), ``name``, ``units``, ``mean`` and ``std`` of its
    activation over the batch and units, ``dead`` (fraction of units whose activation function
    outputs exactly 0 for every input in ``x``: dead ReLUs), ``saturated`` (share of the
    activation function's outputs in a bounded activation's flat tails, see
    :func:`saturated_fraction`), ``constant`` (fraction of units whose output is the same
    for every input, whatever the value: dead or saturated units of any activation), ``output``
    (True for the last layer), ``grad_norm`` and ``grad_rms`` (the L2 norm and the RMS of the
    kernel's gradient of the mean cross-entropy on ``(x, y)``) and ``out_grad_rms`` (the RMS of
    that loss's gradient with respect to the layer's activation: the back-propagated signal);
    the gradients are None without ``y``. With ``tensors=True`` each row also holds the raw
    ``values`` (the activation), ``weight`` and ``grad`` (the kernel and its gradient) tensors,
    detached, for histograms.

    The model runs in eval mode unless ``train=True`` (dropout active, batch norm on batch
    statistics, e.g. to measure alpha dropout's effect on self-normalization); its mode is
    restored afterwards and, in train mode, so are batch-norm running statistics.
    """
    leaves = _leaves(model)
    if not any(isinstance(m, nn.Linear) for _, m in leaves):
        raise DnnlabError(f"layer_stats needs a model made of nn.Linear layers; "
                          f"{type(model).__name__} has none")
    records: list[tuple[str, nn.Module, torch.Tensor]] = []

    def hook(module, _inputs, output, name=None):
        records.append((name, module, output))

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name))
               for name, m in leaves]
    was_training = model.training
    saved_bn = ({k: v.detach().clone() for k, v in model.state_dict().items()
                 if "running_" in k or "num_batches_tracked" in k} if train else {})
    model.train(train)
    try:
        with torch.enable_grad():
            logits = model(x)
            starts = [i for i, (_, m, _) in enumerate(records) if isinstance(m, nn.Linear)]
            ends = [starts[k + 1] - 1 if k + 1 < len(starts) else len(records) - 1
                    for k in range(len(starts))]
            kernels = [records[i][1].weight for i in starts]
            outputs = [records[i][2] for i in ends]
            grads: list[torch.Tensor | None] = [None] * len(starts)
            out_grads: list[torch.Tensor | None] = [None] * len(starts)
            if y is not None:
                loss = F.cross_entropy(logits, y)
                want = [(grads, k, w) for k, w in enumerate(kernels) if w.requires_grad]
                want += [(out_grads, k, o) for k, o in enumerate(outputs) if o.requires_grad]
                got = torch.autograd.grad(loss, [t for _, _, t in want], allow_unused=True)
                for (slot, k, _), g in zip(want, got):
                    slot[k] = g
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if saved_bn:
            model.load_state_dict(saved_bn, strict=False)

    out = []
    for k, (start, end) in enumerate(zip(starts, ends)):
        name, linear, _ = records[start]
        act = outputs[k].detach().double()
        fn = next((records[i] for i in range(start + 1, end + 1)
                   if not isinstance(records[i][1], _NOT_ACTIVATION)), records[start])
        fn_out = fn[2].detach()
        g, og = grads[k], out_grads[k]
        row = {
            "layer": k + 1,
            "name": name,
            "units": int(linear.out_features),
            "mean": float(act.mean()),
            "std": float(act.std()),
            "dead": float((fn_out == 0).all(0).double().mean()),
            "saturated": saturated_fraction(fn_out, fn[1]),
            "constant": float((act.amax(0) - act.amin(0) <= 1e-6 * (1 + act.abs().amax(0)))
                              .double().mean()),
            "output": k + 1 == len(starts),
            # float64: exploding nets reach 1e27, whose square overflows float32
            "grad_norm": float(g.double().norm()) if g is not None else None,
            "grad_rms": float(g.double().square().mean().sqrt()) if g is not None else None,
            "out_grad_rms": float(og.double().square().mean().sqrt()) if og is not None else None,
        }
        if tensors:
            row.update(values=outputs[k].detach(), weight=linear.weight.detach(),
                       grad=g.detach() if g is not None else None)
        out.append(row)
    return out


def hidden_stats(stats: list[dict]) -> list[dict]:
    """The hidden layers only (drops the output layer's row)."""
    return [s for s in stats if not s["output"]]


# Over seeds: the one mean ± std of the lab (studies, sweeps, reports), its interval and the one
# rule that says whether two variants differ beyond seed noise (:func:`compare`). Pure Python on
# purpose: the Student t distribution is all that is needed, and it is not worth scipy as a
# dependency.

NOISE_LEVEL = 0.05   # two means differ beyond seed noise when the test's two-sided p is below this


def _finite(values: Iterable[float | None]) -> list[float]:
    """The values that are neither None nor NaN/inf (a seed that diverged, a metric not measured)."""
    return [float(x) for x in values if x is not None and math.isfinite(float(x))]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the finite values.

    ddof=1 because the seeds are a sample: with 3 of them the spread of *all* seeds is what is
    estimated. None and non-finite values (a seed that diverged, a metric not measured) are left
    out; std is 0.0 for one value; (None, None) when nothing is left, which JSON can hold (NaN
    it cannot).
    """
    v = _finite(values)
    if not v:
        return None, None
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0


def pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` as text, in percent by default (``98.91 ± 0.12``); a dash when missing, the
    mean alone when ``std`` is None (one seed has no spread to show).

    The unit is the caller's to write (``f"{pm(m, s)} %"``), so the one format reads the same in a
    table cell, whose header names the unit, and in a sentence.
    """
    if mean is None or math.isnan(mean):
        return "–"
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (Lentz's continued fraction, as in
    Numerical Recipes' betacf; converges to 1e-15 in well under 200 terms for the t CDF)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):            # the fraction converges fast only below this
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (``df`` may be fractional, as
    Welch's is)."""
    if df <= 0:
        raise DnnlabError(f"t_cdf: df = {df}; the t distribution needs df > 0")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf` to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise DnnlabError(f"t_quantile: p = {p}; give a probability strictly between 0 and 1")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def mean_interval(values: Iterable[float | None], level: float = 0.95) -> tuple[float | None, float | None]:
    """The ``level`` confidence interval of the mean over seeds: mean ± t(n-1) · std / √n.

    Student's t with n - 1 degrees of freedom, because the std is itself estimated from the same
    few seeds (with 3 seeds the 95% factor is 4.30, not the normal 1.96). (None, None) for fewer
    than two finite values: one seed says nothing about the spread.
    """
    v = _finite(values)
    if len(v) < 2:
        return None, None
    mean, std = mean_std(v)
    assert mean is not None and std is not None
    half = t_quantile(0.5 + level / 2.0, len(v) - 1) * std / math.sqrt(len(v))
    return mean - half, mean + half


def welch(a: Iterable[float | None], b: Iterable[float | None]) -> tuple[float, float, float] | None:
    """Welch's t-test of mean(a) - mean(b): (t, degrees of freedom, two-sided p).

    Welch's, not Student's pooled test: variants of a sweep differ in their seed spread (a high
    learning rate scatters more than a low one), and Welch's does not assume equal variances.
    The degrees of freedom are Welch-Satterthwaite's. None when either side has fewer than two
    finite values. Both sides without any spread: p is 1 for equal means, 0 for different ones.
    """
    xa = _finite(a)
    xb = _finite(b)
    if len(xa) < 2 or len(xb) < 2:
        return None
    va, vb = statistics.variance(xa) / len(xa), statistics.variance(xb) / len(xb)
    diff = statistics.fmean(xa) - statistics.fmean(xb)
    if va + vb == 0.0:
        return (0.0, math.inf, 1.0) if diff == 0 else (math.copysign(math.inf, diff), math.inf, 0.0)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    return t, df, 2.0 * t_cdf(-abs(t), df)


def _differences(a: Iterable[float | None], b: Iterable[float | None]) -> list[float]:
    """a[i] - b[i] for the pairs whose sides are both finite."""
    return [float(x) - float(y) for x, y in zip(a, b) if x is not None and y is not None
            and math.isfinite(float(x)) and math.isfinite(float(y))]


def _one_sample_t(d: list[float]) -> tuple[float, float, float] | None:
    """The t-test of mean(d) = 0 (on paired differences: the paired t-test): (t, n - 1,
    two-sided p); None under 2 values; no spread: p is 1 for a zero mean, 0 otherwise."""
    if len(d) < 2:
        return None
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    if sd == 0.0:
        return (0.0, math.inf, 1.0) if mean == 0 else (math.copysign(math.inf, mean), math.inf, 0.0)
    t = mean / (sd / math.sqrt(len(d)))
    return t, len(d) - 1.0, 2.0 * t_cdf(-abs(t), len(d) - 1.0)


def compare(a: Iterable[float | None], b: Iterable[float | None], *,
            paired: bool = False) -> dict[str, Any]:
    """Whether ``a``'s seeds differ from ``b``'s beyond seed noise: the lab's one rule, used by
    every study, sweep and explain topic that calls a difference real.

    Returns ``difference`` (mean(a) - mean(b)), ``t``, ``p`` (two-sided), ``beyond_noise``
    (p < :data:`NOISE_LEVEL`) and ``test``, the test that gave them:

    * ``"welch"`` (default): two independent sets of seeds (:func:`welch`). With 3 seeds a side
      a real difference needs |t| above about 2.8-4.3 (Welch's degrees of freedom lie between 2
      and 4), not the "two standard errors" of a normal approximation, which calls too many
      seed-noise gaps real.
    * ``"paired"`` (``paired=True``): ``a[i]`` and ``b[i]`` share seed ``i`` (the same trained
      model measured two ways, as MC Dropout against plain inference, or two variants whose
      every draw but one is the same); the test is on the per-seed differences
      (the paired t-test), which removes the spread between seeds that both sides share.

    ``t`` is None where there is no spread (it would be infinite); ``p`` and ``beyond_noise`` are
    None with under 2 values (pairs) to test, and everything is None when a side has none.
    """
    a, b = list(a), list(b)
    if paired and len(a) != len(b):
        raise ValueError(f"compare(paired=True): {len(a)} values against {len(b)}; pairs need "
                         "one value per seed on each side")
    xa, xb = _finite(a), _finite(b)
    kind = "paired" if paired else "welch"
    pairs = _differences(a, b) if paired else []
    if not xa or not xb or (paired and not pairs):
        return {"difference": None, "t": None, "p": None, "beyond_noise": None, "test": kind}
    diff = statistics.fmean(pairs) if paired else statistics.fmean(xa) - statistics.fmean(xb)
    result = _one_sample_t(pairs) if paired else welch(xa, xb)
    if result is None:
        return {"difference": diff, "t": None, "p": None, "beyond_noise": None, "test": kind}
    t, _, p = result
    return {"difference": diff, "t": t if math.isfinite(t) else None, "p": p,
            "beyond_noise": p < NOISE_LEVEL, "test": kind}


def grid_end(best: float, values: Iterable[float]) -> str | None:
    """``"largest"`` or ``"smallest"`` when ``best`` is that end of a grid of 3 or more distinct
    values, else None: a search or sweep whose best is an end may have stopped short of a better
    value, and nothing it measured says otherwise (of 2 values one is always an end)."""
    grid = sorted(set(values))
    if len(grid) < 3:
        return None
    return "largest" if best == grid[-1] else "smallest" if best == grid[0] else None


def difference_interval(a: Iterable[float | None], b: Iterable[float | None], *,
                        paired: bool = False, level: float = 0.95) -> tuple[float | None, float | None]:
    """The ``level`` confidence interval of the difference :func:`compare` tests (mean(a) -
    mean(b)), from the same test: Student's t on the per-seed differences when ``paired``, else
    Welch's standard error with Welch-Satterthwaite's degrees of freedom. (None, None) where
    :func:`compare` has no test (under 2 values a side or pairs); a zero-width interval where
    neither side has any spread."""
    if paired:
        return mean_interval(_differences(list(a), list(b)), level)
    xa, xb = _finite(a), _finite(b)
    if len(xa) < 2 or len(xb) < 2:
        return None, None
    diff = statistics.fmean(xa) - statistics.fmean(xb)
    va, vb = statistics.variance(xa) / len(xa), statistics.variance(xb) / len(xb)
    if va + vb == 0.0:
        return diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(va + vb)
    return diff - half, diff + half

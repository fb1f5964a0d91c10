"""Why Glorot and He initialization exist: the signal's variance through 30 layers.

Nine 30x100 MLPs (N(0, 1), Glorot normal and He normal weights, each with sigmoid, tanh and ReLU)
see the same batch of standardized MNIST images. Per layer, :func:`dnnlab.analysis.stats.layer_stats`
measures the activation std (forward signal) and the norm of the kernel's gradient (backward
signal), first at initialization and again after a few plain SGD steps (plain SGD so that the
gradient's scale is the step's scale, as in the chapter's discussion). A combination *preserves*
the signal when the first layer's gradient norm is within a factor 100 of the last hidden
layer's; below that the gradients vanish, above it they explode. SGD on exploding gradients
diverges; the trainer then keeps the last finite weights and the run is marked diverged.

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dnnlab.analysis.stats import hidden_stats, layer_stats
from dnnlab.analysis.verdict import REFUTED, SUPPORTED, differs
from dnnlab.nn import build_mlp
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit

QUESTION = ("What problem do Glorot and He initialization fix? (Keeping the variance of the "
            "signal, forward and backward, about the same through every layer.)")
INITS = {"N(0, 1)": {"model.init": "normal", "model.init_value": 1.0},
         "Glorot": {"model.init": "glorot_normal"},
         "He": {"model.init": "he_normal"}}
ACTIVATIONS = ("sigmoid", "tanh", "relu")
DEPTH, WIDTH = 30, 100
FACTOR = 100.0   # gradient ratio beyond this (either way) = vanishing / exploding
BATCH = 64
PROBE = 512      # validation images every statistic is measured on


def classify(ratio: float) -> str:
    """'vanishing', 'exploding' or 'preserved' for a deep-layer / shallow-layer ratio of scales."""
    if not math.isfinite(ratio) or ratio > FACTOR:
        return "exploding"
    if ratio < 1.0 / FACTOR:
        return "vanishing"
    return "preserved"


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.inf


def _summary(stats: list[dict]) -> dict:
    """Forward: last / first layer's activation std. Backward: first / last layer's gradient
    RMS, i.e. how much the signal reaching the bottom layers has grown or shrunk."""
    hidden = hidden_stats(stats)
    std = [s["std"] for s in hidden]
    back = [s["out_grad_rms"] for s in hidden]
    fwd_ratio, back_ratio = _ratio(std[-1], std[0]), _ratio(back[0], back[-1])
    return {"std": std, "out_grad_rms": back, "grad_norm": [s["grad_norm"] for s in hidden],
            "forward_ratio": fwd_ratio, "backward_ratio": back_ratio,
            "forward": classify(fwd_ratio), "backward": classify(back_ratio),
            "preserved": classify(fwd_ratio) == classify(back_ratio) == "preserved"}


CARDS = ("001 Glorot/He card (book's answer: keep the output std close to the input std)",
         "001 Glorot/He card (learner: they fix unstable, vanishing or exploding gradients)")
MATCHED = {"tanh": "Glorot", "relu": "He"}
LIMIT = math.log10(FACTOR)       # decades of growth or shrinkage beyond which a signal is lost
CAP = 300.0                      # decades standing for an overflow (inf) or a signal that died (0)


def decades(ratio: float) -> float:
    """How many decades a signal grew or shrank over the stack (|log10|; an overflow or a
    vanished signal counts as :data:`CAP`)."""
    if not math.isfinite(ratio) or ratio <= 0:
        return CAP
    return min(abs(math.log10(ratio)), CAP)


def worst(at_init: dict) -> float:
    """The worse of the forward and the backward signal's change, in decades."""
    return max(decades(at_init["forward_ratio"]), decades(at_init["backward_ratio"]))


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed ``results``, per
    "activation / init", ``at_init`` with ``forward_ratio`` and ``backward_ratio``;
    ``sgd_steps`` and ``diverged_after_steps``). A signal is kept when it changes by less than
    ``FACTOR`` over the stack (:data:`LIMIT` decades): the chapter's meaning of vanishing and
    exploding; each claim tests the seeds' decades against it (one-sample t)."""
    def per_seed(act: str, init_name: str) -> list[float]:
        return [worst(r["results"][f"{act} / {init_name}"]["at_init"]) for r in runs]

    matched = [max(per_seed(a, i)[k] for a, i in MATCHED.items()) for k in range(len(runs))]
    normal = [min(per_seed(a, "N(0, 1)")[k] for a in MATCHED) for k in range(len(runs))]
    keeps = differs(f"Glorot (tanh) and He (ReLU) keep the signal's scale, forward and backward, "
                    f"within {FACTOR:g}x over {DEPTH} layers at initialization (the worse of the "
                    f"two, in decades, below {LIMIT:g})", matched, LIMIT, larger=False,
                    names=("matched init, decades", "limit"), unit="decades", asserted_by=CARDS)
    loses = differs(f"without them (N(0, 1) weights) tanh and ReLU lose it (the better of the two "
                    f"changes by more than {FACTOR:g}x)", normal, LIMIT, larger=True,
                    names=("N(0, 1), decades", "limit"), unit="decades", asserted_by=CARDS)
    relu_glorot = differs("ReLU needs He's factor 2: with Glorot init its signal changes more "
                          "(in decades) than with He", per_seed("relu", "Glorot"),
                          per_seed("relu", "He"), paired=True, names=("Glorot", "He"),
                          unit="decades")
    holds = {keeps.outcome, loses.outcome}
    head = ("Yes, they keep the signal's scale from layer to layer" if holds == {SUPPORTED} else
            "No, not in this run" if holds == {REFUTED} else
            "Only partly, or not settled, in this run")
    steps = runs[0]["sgd_steps"]
    diverged = sorted({k for r in runs for k in r["diverged_after_steps"]})
    first = runs[0]["results"]
    shown = ", ".join(f"{k} x{v['at_init']['forward_ratio']:.1e} / x{v['at_init']['backward_ratio']:.1e}"
                      for k, v in first.items())
    detail = (f"Seed 1's forward (last/first layer activation std) and backward (first/last layer "
              f"gradient RMS) ratios: {shown}; {steps} SGD steps diverged for: "
              f"{', '.join(diverged) or 'none'} (any seed).")
    return Answer(head, (keeps, loses, relu_glorot), detail)


def measure(source: DataSource, sizes: dict, seed: int) -> Measurement:
    steps = sizes["steps"]
    data = source.load(steps * BATCH, PROBE, seed, standardize=True)
    x = torch.as_tensor(data.valid.x[:PROBE])
    y = torch.as_tensor(data.valid.y[:PROBE])
    base = {"model.depth": DEPTH, "model.width": WIDTH, "optim.name": "sgd", "optim.lr": 0.01,
            "train.batch_size": BATCH}
    results: dict[str, dict] = {}
    for act in ACTIVATIONS:
        for init_name, overrides in INITS.items():
            cfg = topic_config("init-variance", seed, 1, **base, **{"model.activation": act, **overrides})
            model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=seed)
            at_init = _summary(layer_stats(model, x, y))
            at_init["mean_slope"] = mean_slope(model, x, act)
            fitted = fit(cfg, data, model=model, evaluate_test=False)
            after = _summary(layer_stats(fitted.model.cpu(), x, y))
            results[f"{act} / {init_name}"] = {"at_init": at_init, "after_steps": after,
                                               "train_status": fitted.status}

    diverged = [k for k, v in results.items() if v["train_status"] == "diverged"]
    numbers = {"depth": DEPTH, "width": WIDTH, "sgd_steps": steps,
               **{f"backward_ratio {k}": v["at_init"]["backward_ratio"] for k, v in results.items()},
               "diverged_after_steps": diverged, "results": results}
    return Measurement(numbers)


@torch.no_grad()
def mean_slope(model, x: torch.Tensor, act: str) -> float:
    """The activation's slope averaged over units, inputs and layers, as a fraction of its
    largest slope: near 0 means saturated units that pass almost no gradient."""
    slopes: list[float] = []

    def hook(_m, _i, h):
        if act == "sigmoid":
            s = h * (1 - h) / 0.25
        elif act == "tanh":
            s = 1 - h * h
        else:
            s = (h > 0).float()
        slopes.append(float(s.double().mean()))

    handles = [block.act.register_forward_hook(hook) for block in model.hidden]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return sum(slopes) / len(slopes)


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show."""
    results, steps = n["results"], n["sgd_steps"]
    fig = Figure(figsize=(14, 11), layout="constrained")
    axes = fig.subplots(len(ACTIVATIONS), 3)
    colours = dict(zip(INITS, ["tab:red", "tab:blue", "tab:green"]))
    layers = np.arange(1, DEPTH + 1)
    metrics = (("std", "activation std", "std of the layer's output"),
               ("out_grad_rms", "back-propagated gradient", "RMS of dLoss/d(output)"),
               ("grad_norm", "kernel gradient norm", "||dLoss/dW||"))
    for row, act in zip(axes, ACTIVATIONS):
        for init_name in INITS:
            res = results[f"{act} / {init_name}"]
            for key, style in (("at_init", "-"), ("after_steps", "--")):
                for ax, (metric, _, _) in zip(row, metrics):
                    ys = np.array(res[key][metric], dtype=float)
                    ys = np.where(ys > 0, ys, np.nan)       # log axes cannot show 0
                    ax.plot(layers, ys, style, color=colours[init_name], linewidth=1.5)
        for ax, (_, title, ylabel) in zip(row, metrics):
            ax.set(title=f"{act}: {title}", ylabel=ylabel,
                   xlabel="hidden layer (1 = next to the input)")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=c, label=f"{n} init") for n, c in colours.items()]
    handles += [Line2D([], [], color="0.2", linestyle="-", label="at initialization"),
                Line2D([], [], color="0.2", linestyle="--", label=f"after {steps} SGD steps")]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, frameon=False)
    fig.suptitle(f"Signal and gradient through {DEPTH} layers of {WIDTH} units "
                 f"(standardized {n['data']}, log scale)")
    return fig


TOPIC = Topic(name="init-variance", question=QUESTION, measure=measure, verdict=verdict,
              figure=figure, quick=dict(seeds=3, steps=5), full=dict(seeds=5, steps=20))

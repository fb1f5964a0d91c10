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
from dnnlab.nn import build_mlp
from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
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


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone: ``numbers["results"]`` (per
    "activation / init": ``at_init`` with ``forward_ratio``, ``backward_ratio``, ``forward``,
    ``backward``, ``preserved`` and ``mean_slope``), ``sgd_steps`` and ``diverged_after_steps``."""
    results, steps, diverged = numbers["results"], numbers["sgd_steps"], numbers["diverged_after_steps"]

    def r(act: str, init_name: str) -> dict:
        return results[f"{act} / {init_name}"]["at_init"]

    def text(act: str, init_name: str) -> str:
        s = r(act, init_name)
        status = "preserved" if s["preserved"] else ", ".join(
            f"{d} {s[d]}" for d in ("forward", "backward") if s[d] != "preserved")
        return (f"{init_name}+{act} x{s['forward_ratio']:.1e} / x{s['backward_ratio']:.1e} "
                f"({status})")

    matched = {"tanh": "Glorot", "relu": "He"}
    matched_lost = [f"{i}+{a}" for a, i in matched.items() if not r(a, i)["preserved"]]
    normal_kept = [a for a in ("tanh", "relu") if r(a, "N(0, 1)")["preserved"]]
    holds = not matched_lost and not normal_kept
    if holds:
        head = "Yes, they keep the signal's scale from layer to layer"
    else:
        loses = "loses" if len(matched_lost) == 1 else "lose"
        why = ([f"{' and '.join(matched_lost)} {loses} the signal's scale"] if matched_lost else []) \
            + ([f"N(0, 1) keeps it too with {' and '.join(normal_kept)}"] if normal_kept else [])
        head = f"Only partly, in this run ({'; '.join(why)})"
    clauses = [f"N(0, 1): {', '.join(text(a, 'N(0, 1)').split('+', 1)[1] for a in ACTIVATIONS)}",
               f"matched: {', '.join(text(a, i) for a, i in matched.items())}"]
    if not r("relu", "Glorot")["preserved"] and r("relu", "He")["preserved"]:
        clauses.append(f"{text('relu', 'Glorot')}, so ReLU needs He's factor 2")
    if all(r("sigmoid", i)["backward"] == "vanishing" for i in ("Glorot", "He")):
        clauses.append(f"sigmoid's gradients vanish with Glorot and He alike "
                       f"({text('sigmoid', 'Glorot')}): its slope is at most 1/4")
    sat = [a for a in ("sigmoid", "tanh") if r(a, "N(0, 1)")["mean_slope"] < 0.25]
    if sat:
        clauses.append("with N(0, 1) the " + " and ".join(
            f"{a} units are saturated (mean slope {r(a, 'N(0, 1)')['mean_slope']:.0%} of its maximum)"
            for a in sat))
    clauses.append(f"{steps} SGD steps diverged for: {', '.join(diverged) or 'none'}")
    verdict_text = (f"{head}: over {DEPTH} layers at initialization (x forward = last/first layer "
                    f"activation std, x backward = first/last layer gradient RMS; beyond "
                    f"{FACTOR:g}x = unstable) " + "; ".join(clauses) + ".")
    cards = ["001 Glorot/He card (book's answer: keep the output std close to the input std)",
             "001 Glorot/He card (learner: they fix unstable, vanishing or exploding gradients)"]
    return verdict_text, (cards if holds else []), ([] if holds else cards)


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
              figure=figure, quick=dict(steps=5), full=dict(steps=20))

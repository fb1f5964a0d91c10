"""SELU vs ReLU: mean activation, dying units, and self-normalization with its conditions.

Two experiments on MNIST:

1. *Training.* An 8x100 ReLU net (He init) and an 8x100 SELU net (LeCun normal init) are trained
   with Nadam at the default learning rate (1e-3) and at a large one (1e-2). Measured on 2,000
   training images with :func:`dnnlab.analysis.stats.layer_stats`: the mean activation per layer
   (averaged in absolute value over layers), the fraction of dead ReLUs (output 0 for every
   image) and, for both, the fraction of units whose output never changes (dead or saturated).
2. *Self-normalization through 30 layers at initialization.* The right conditions (standardized
   inputs, LeCun normal init, a plain dense stack, no dropout) against one broken condition at a
   time: raw [0, 1] pixels, He init, plain dropout 0.2 (measured with dropout active); alpha
   dropout 0.2 is the control that should keep it. A layer is *normalized* when its activation
   mean is within 0.15 of 0 and its std within 0.15 of 1; a stack *settles* at the first layer
   from which every later layer is normalized; it self-normalizes when it settles
   within the first third of the stack. That judgement is the doctor's
   (:func:`dnnlab.doctor.diagnose.self_normalizes`), so ``dnnlab doctor`` and this answer agree.

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from dnnlab.analysis.stats import hidden_stats, layer_stats
from dnnlab.config import RunConfig, replace
from dnnlab.doctor.diagnose import SELF_NORM_TOL, self_normalizes
from dnnlab.doctor.diagnose import settle_layer as _settle
from dnnlab.nn import build_mlp
from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit

QUESTION = "Name three advantages of the SELU activation function over ReLU."
DEPTH = 30
TOL = SELF_NORM_TOL     # the doctor's band, one judgement for both
CONDITIONS = {
    "SELU, LeCun, standardized": ({}, True, False),
    "no standardization": ({}, False, False),
    "He init": ({"model.init": "he_normal"}, True, False),
    "plain dropout 0.2": ({"model.dropout": 0.2}, True, True),
    "alpha dropout 0.2": ({"model.dropout": 0.2, "model.dropout_kind": "alpha"}, True, True),
    "ReLU, He (reference)": ({"model.activation": "relu", "model.init": "he_normal"}, True, False),
}   # name -> (config overrides, standardized inputs, measured with dropout active)
NETS = {"relu": "he_normal", "selu": "lecun_normal"}


def settle_layer(stats: list[dict]) -> int | None:
    """First layer from which every later layer has |mean| <= TOL and |std - 1| <= TOL."""
    return _settle([s["mean"] for s in stats], [s["std"] for s in stats])


def measure(source: DataSource, sizes: dict, seed: int) -> Measurement:
    n_train, epochs, n_probe = sizes["n_train"], sizes["epochs"], sizes["probe"]
    std_data = source.load(n_train, n_probe, seed, standardize=True)
    raw_data = source.load(n_train, n_probe, seed)

    # 2. self-normalization at initialization, one condition broken at a time
    depth_cfg = replace(RunConfig(), **{"model.depth": DEPTH, "model.width": 100,
                                        "model.activation": "selu", "model.init": "lecun_normal"})
    torch.manual_seed(seed)                      # dropout masks
    depth: dict[str, dict] = {}
    for name, (overrides, standardized, active) in CONDITIONS.items():
        cfg = replace(depth_cfg, **overrides)
        model = build_mlp(cfg.model, std_data.n_features, std_data.n_classes, seed=seed)
        x = torch.as_tensor((std_data if standardized else raw_data).valid.x[:n_probe])
        st = hidden_stats(layer_stats(model, x, train=active))
        depth[name] = {"mean": [s["mean"] for s in st], "std": [s["std"] for s in st],
                       "settles_at_layer": settle_layer(st),
                       "self_normalizes": self_normalizes([s["mean"] for s in st],
                                                          [s["std"] for s in st]),
                       "last_mean": st[-1]["mean"], "last_std": st[-1]["std"]}

    # 1. training at a normal and a large learning rate
    probe = torch.as_tensor(std_data.train.x[:n_probe])
    trained: dict[str, dict] = {}
    for lr in (1e-3, 1e-2):
        for act, init in NETS.items():
            cfg = topic_config("selu", seed, epochs, **{"model.depth": 8, "model.activation": act,
                                                        "model.init": init, "optim.lr": lr})
            model = build_mlp(cfg.model, std_data.n_features, std_data.n_classes, seed=seed)
            init_stats = hidden_stats(layer_stats(model, probe))
            result = fit(cfg, std_data, model=model)
            st = hidden_stats(layer_stats(result.model.cpu(), probe))
            trained[f"{act} lr={lr:g}"] = {
                "status": result.status,
                "test_accuracy": result.test.get("test_accuracy"),
                "mean_abs_mean_at_init": _avg(abs(s["mean"]) for s in init_stats),
                "mean_abs_mean": _avg(abs(s["mean"]) for s in st),
                "dead_fraction": _avg(s["dead"] for s in st),
                "constant_fraction": _avg(s["constant"] for s in st),
                "dead_per_layer": [s["dead"] for s in st]}

    return Measurement(_numbers(depth, trained, n_train, epochs))


def _avg(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone: ``numbers["depth"]`` (per
    condition: per-layer ``mean``/``std``, ``settles_at_layer``, ``self_normalizes``) and
    ``numbers["trained"]`` (per net and rate: ``mean_abs_mean_at_init``, ``mean_abs_mean``,
    ``dead_fraction``, ``constant_fraction``)."""
    depth, trained = numbers["depth"], numbers["trained"]
    r1, s1 = trained["relu lr=0.001"], trained["selu lr=0.001"]
    r2, s2 = trained["relu lr=0.01"], trained["selu lr=0.01"]
    good = depth["SELU, LeCun, standardized"]
    closer_at_init = s1["mean_abs_mean_at_init"] < r1["mean_abs_mean_at_init"]
    closer_trained = s1["mean_abs_mean"] < r1["mean_abs_mean"]
    closer_large = s2["mean_abs_mean"] < r2["mean_abs_mean"]
    no_dying = s2["constant_fraction"] < r2["dead_fraction"]
    self_norm = good["self_normalizes"]

    def cond(name: str) -> str:
        d = depth[name]
        where = (f"settles at layer {d['settles_at_layer']}" if d["settles_at_layer"] else
                 "never settles")
        return (f"{name}: layer 1 mean {d['mean'][0]:+.2f} std {d['std'][0]:.2f}, layer {DEPTH} "
                f"mean {d['last_mean']:+.2f} std {d['last_std']:.2f}, {where}")

    mean_part = (f"(1) mean activation |mean| averaged over layers: SELU {s1['mean_abs_mean_at_init']:.2f} "
                 f"vs ReLU {r1['mean_abs_mean_at_init']:.2f} at init, {s1['mean_abs_mean']:.2f} vs "
                 f"{r1['mean_abs_mean']:.2f} after training at lr 1e-3"
                 + ("" if closer_large else f", but {s2['mean_abs_mean']:.2f} vs "
                    f"{r2['mean_abs_mean']:.2f} after lr 1e-2 (training pulled SELU off its fixed point)"))
    dying_part = (f"(2) after training at lr 1e-2, {r2['dead_fraction']:.1%} of ReLUs are dead "
                  f"({r1['dead_fraction']:.1%} at lr 1e-3) vs {s2['constant_fraction']:.1%} of SELU "
                  f"units stuck at a constant output")
    norm_part = f"(3) through {DEPTH} layers at init: " + "; ".join(cond(n) for n in CONDITIONS
                                                                    if not n.startswith("ReLU"))
    holds = closer_at_init and closer_trained and no_dying and self_norm
    verdict_head = "SELU's advantages hold" if holds else "SELU's advantages hold only in part"
    text = f"{verdict_head}: {mean_part}; {dying_part}; {norm_part}."

    he, drop, alpha = depth["He init"], depth["plain dropout 0.2"], depth["alpha dropout 0.2"]
    conditions_matter = (not he["self_normalizes"] and not drop["self_normalizes"]
                         and alpha["self_normalizes"])
    book = ["000 answer 3 (book)", "003 answer 3 (book)"]
    confirms, refutes = [], []
    (confirms if holds and conditions_matter else refutes).extend(book)
    (confirms if closer_at_init and no_dying else refutes).append(
        "004 answer 3 (first edition: negative outputs, nonzero derivative)")
    (confirms if self_norm and conditions_matter else refutes).append(
        "001 activations card (learner: SELU self-normalizes only with standardized inputs, "
        "LeCun normal and no regularization)")
    # 002 says SELU has a *non-zero* mean and that is what keeps units alive
    (refutes if closer_at_init else confirms).append(
        "002 answer 3 (SELU has a non-zero mean that keeps neurons active)")
    return text, confirms, refutes


def _numbers(depth: dict, trained: dict, n_train: int, epochs: int) -> dict:
    """The headline numbers first, then everything the verdict and the figure read."""
    r1, s1, r2, s2 = (trained[k] for k in ("relu lr=0.001", "selu lr=0.001", "relu lr=0.01",
                                           "selu lr=0.01"))
    good, he, drop, alpha, raw = (depth[k] for k in (
        "SELU, LeCun, standardized", "He init", "plain dropout 0.2", "alpha dropout 0.2",
        "no standardization"))
    numbers = {"train_images": n_train, "epochs": epochs,
               "selu_mean_abs_mean_init": s1["mean_abs_mean_at_init"],
               "relu_mean_abs_mean_init": r1["mean_abs_mean_at_init"],
               "relu_dead_fraction_lr1e-2": r2["dead_fraction"],
               "selu_constant_fraction_lr1e-2": s2["constant_fraction"],
               "selu_settles_at_layer": good["settles_at_layer"] or 0,
               "he_init_last_std": he["last_std"], "plain_dropout_last_std": drop["last_std"],
               "alpha_dropout_last_std": alpha["last_std"],
               "raw_inputs_settles_at_layer": raw["settles_at_layer"] or 0,
               "trained": trained, "depth": depth}
    return numbers


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show."""
    depth, trained = n["depth"], n["trained"]
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    (ax_m, ax_s), (ax_dead, ax_mean) = fig.subplots(2, 2)
    layers = np.arange(1, DEPTH + 1)
    for name, d in depth.items():
        style = ":" if name.startswith("ReLU") else "-"
        ax_m.plot(layers, d["mean"], style, label=name, linewidth=1.5)
        ax_s.plot(layers, d["std"], style, label=name, linewidth=1.5)
    for ax in (ax_m, ax_s):
        ax.axhspan(*((-TOL, TOL) if ax is ax_m else (1 - TOL, 1 + TOL)), color="0.85", zorder=0)
        ax.set_xlabel("hidden layer (1 = next to the input)")
        ax.grid(True, alpha=0.3)
    ax_m.set(ylabel="mean activation", title="Mean per layer at init (band: 0 ± 0.15)")
    ax_s.set(ylabel="activation std (log)", yscale="log",
             title="Std per layer at init (band: 1 ± 0.15)")
    ax_s.legend(frameon=False, fontsize=8)
    names = list(trained)
    xs = np.arange(len(names))
    dead = [trained[n]["dead_fraction"] for n in names]
    const = [trained[n]["constant_fraction"] for n in names]
    ax_dead.bar(xs - 0.2, dead, width=0.4, label="dead (always 0)", color="tab:red")
    ax_dead.bar(xs + 0.2, const, width=0.4, label="constant output (dead or saturated)",
                color="tab:gray")
    ax_dead.set_xticks(xs, names)
    ax_dead.set(ylabel="fraction of hidden units", title="Dying units after training (8x100, Nadam)")
    ax_dead.legend(frameon=False, fontsize=8)
    init = [trained[n]["mean_abs_mean_at_init"] for n in names]
    after = [trained[n]["mean_abs_mean"] for n in names]
    ax_mean.bar(xs - 0.2, init, width=0.4, label="at init", color="tab:blue")
    ax_mean.bar(xs + 0.2, after, width=0.4, label="after training", color="tab:orange")
    ax_mean.set_xticks(xs, names)
    ax_mean.set(ylabel="|mean activation|, averaged over layers",
                title="How far from 0 the layers' mean activations are")
    ax_mean.legend(frameon=False, fontsize=8)
    fig.suptitle(f"SELU vs ReLU on {n['data']}: self-normalization, mean activation, dying units")
    return fig


TOPIC = Topic(name="selu", question=QUESTION, measure=measure, verdict=verdict, figure=figure,
              quick=dict(n_train=2048, epochs=1, probe=1000), full=dict(n_train=10000, epochs=3, probe=2000))

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
from dnnlab.analysis.verdict import SUPPORTED, differs, every_seed
from dnnlab.config import RunConfig, replace
from dnnlab.doctor.diagnose import SELF_NORM_TOL, self_normalizes
from dnnlab.doctor.diagnose import settle_layer as _settle
from dnnlab.nn import build_mlp
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
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


BOOK = ("000 answer 3 (book)", "003 answer 3 (book)")
FIRST = ("004 answer 3 (first edition: negative outputs, nonzero derivative)",)
CARD = ("001 activations card (learner: SELU self-normalizes only with standardized inputs, "
        "LeCun normal and no regularization)",)
NONZERO = ("002 answer 3 (SELU has a non-zero mean that keeps neurons active)",)


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed ``depth``, per
    condition ``self_normalizes``; ``trained``, per net and rate, ``mean_abs_mean_at_init``,
    ``dead_fraction``, ``constant_fraction``), each claim over the seeds."""
    def tr(key: str, field_: str) -> list[float]:
        return [r["trained"][key][field_] for r in runs]

    closer = differs("SELU's layers start with a mean activation closer to 0 than ReLU's (|mean| "
                     "averaged over 8 layers, at init)", tr("selu lr=0.001", "mean_abs_mean_at_init"),
                     tr("relu lr=0.001", "mean_abs_mean_at_init"), larger=False, paired=True,
                     names=("SELU", "ReLU"), asserted_by=BOOK + FIRST, denied_by=NONZERO)
    alive = differs("fewer SELU units get stuck than ReLUs die after training at lr 1e-2 "
                    "(fraction of units)", tr("selu lr=0.01", "constant_fraction"),
                    tr("relu lr=0.01", "dead_fraction"), larger=False, paired=True,
                    names=("SELU stuck", "ReLU dead"), unit="pts", scale=100,
                    asserted_by=BOOK + FIRST)
    normalizes = every_seed(f"with standardized inputs and LeCun normal init a {DEPTH}-layer SELU "
                            "stack self-normalizes at init (the doctor's test)",
                            [r["depth"]["SELU, LeCun, standardized"]["self_normalizes"] for r in runs],
                            name="self-normalizes", asserted_by=BOOK + CARD)
    conditions = every_seed("its conditions matter: He init or plain dropout break the "
                            "self-normalization, alpha dropout keeps it",
                            [not r["depth"]["He init"]["self_normalizes"]
                             and not r["depth"]["plain dropout 0.2"]["self_normalizes"]
                             and r["depth"]["alpha dropout 0.2"]["self_normalizes"] for r in runs],
                            name="conditions matter", asserted_by=CARD)
    verdicts = (closer, alive, normalizes, conditions)
    outcomes = {v.outcome for v in verdicts}
    head = ("SELU's advantages hold" if outcomes == {SUPPORTED} else
            "SELU's advantages hold only in part" if SUPPORTED in outcomes else
            "SELU's advantages are not shown here")
    d = runs[0]["depth"]
    where = "; ".join(f"{n}: " + (f"settles at layer {c['settles_at_layer']}" if c["settles_at_layer"]
                                  else "never settles") for n, c in d.items())
    return Answer(head, verdicts, f"Through {DEPTH} layers at init (seed 1): {where}.")


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
              quick=dict(seeds=3, n_train=2048, epochs=1, probe=1000),
              full=dict(seeds=5, n_train=10000, epochs=3, probe=2000))

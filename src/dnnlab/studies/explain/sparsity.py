"""Sparse models: which ways of training actually leave most weights at exactly zero?

One 2x100 ELU net on MNIST (Adam unless said otherwise) is made sparse four ways, each giving
a curve of test accuracy against sparsity (the fraction of kernel weights exactly 0). The
verdict compares them at the sparsest model each reaches within 5 accuracy points of the dense
net:

1. zeroing the smallest weights after training (magnitude pruning with ``torch.nn.utils.prune``,
   LAMP scores so no layer is emptied), as is and after one epoch of fine-tuning, zeros held;
2. L1 regularization (``model.l1``) at several strengths, then zeroing the tiny weights
   (``|w| <= 1e-3``): a subgradient optimizer like Adam only brings weights *near* zero;
3. gradual magnitude pruning during training (TFMOT's polynomial schedule);
4. FTRL with L1 (``optim.name = "ftrl"``), whose closed-form update sets weights to exact zeros.

Beside them, a net trained with dropout (rate 0.5) is measured the same way: dropout zeroes
random *activations* during training steps only, so no weight has a reason to be exactly 0.
The exact zeros straight out of each training run, before any zeroing, are shown as bars.

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import copy
import statistics

from matplotlib.figure import Figure

from dnnlab.analysis.sparsity import (
    finetune_masked,
    gradual_prune_fit,
    kernel_parameters,
    magnitude_prune_,
    near_zero_fraction,
    sparsity,
)
from dnnlab.analysis.verdict import REFUTED, SUPPORTED, differs
from dnnlab.config import replace
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
from dnnlab.train import evaluate, fit, resolve_device

QUESTION = "Name three ways you can produce a sparse model."
TINY = 1e-3            # "tiny weights" zeroed after L1 training
DROPOUT_RATE = 0.5
FTRL_LR = 0.3          # FTRL's alpha: its per-coordinate step is alpha / sqrt(sum g^2)
WORKS_DROP = 0.05      # methods are compared at the sparsest model within 5 points of dense
WORKS_SPARSITY = 0.8   # a way to a sparse model "works": >= 80% exact zeros within those 5 points


def _point(model, test) -> dict[str, float]:
    return {"sparsity": sparsity(model), "accuracy": evaluate(model, *test)["accuracy"]}


def _sparsest_within(points: list[dict], floor: float) -> dict | None:
    """The sparsest point whose test accuracy is at least ``floor`` (None if there is none)."""
    ok = [p for p in points if p["accuracy"] >= floor]
    return max(ok, key=lambda p: p["sparsity"]) if ok else None


BOOK = ("000 answer 6 (book)", "001 answer 6 (book's answer)", "003 answer 6 (book)")
FIRST = ("004 answer 6 (zero tiny weights, L1, FTRL with L1: its FTRL)",)
DROPOUT = ("002 answer 6 (dropout makes a model sparse)", "001 answer 6 (learner: ReLU, L1, dropout)")
L1_EXACT = ("002 answer 6 (L1 drives weights to exactly zero)",)


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed ``sparsest_points``,
    per way, the sparsest point within ``WORKS_DROP`` of the dense net or None; ``dropout``
    with ``sparsity`` and ``dense_near_zero``; ``l1`` per strength with ``exact_zeros`` and
    ``near_zero``; ``dense_sparsity`` and ``kernel_weights``). A way "works" when it reaches
    ``WORKS_SPARSITY`` exact zeros within that accuracy (the one-sample t over the seeds); a
    share of exact zeros counts as none when under one weight (``1 / kernel_weights``: the
    resolution of the measurement)."""
    def reached(way: str) -> list[float]:
        return [(r["sparsest_points"][way] or {"sparsity": 0.0})["sparsity"] for r in runs]

    one = 1.0 / runs[0]["kernel_weights"]
    zeroing = [max(a, b) for a, b in zip(reached("zeroing small weights"),
                                         reached("zeroing + 1 epoch fine-tuning"))]
    strongest = [max(r["l1"], key=lambda x: x["l1"]) for r in runs]
    works = f"reaches {WORKS_SPARSITY:.0%} exact zeros within {WORKS_DROP * 100:g} points of the dense net"
    verdicts = (
        differs(f"zeroing the smallest weights after training (and fine-tuning) {works}",
                zeroing, WORKS_SPARSITY, larger=True, names=("sparsity", "goal"), unit="pts",
                scale=100, asserted_by=BOOK),
        differs("L1 regularization leaves more tiny weights (|w| <= 1e-3) to zero than none",
                [x["near_zero"] for x in strongest], [r["dropout"]["dense_near_zero"] for r in runs],
                larger=True, paired=True, names=("L1", "no L1"), unit="pts", scale=100,
                asserted_by=BOOK),
        differs(f"gradual magnitude pruning during training {works}", reached("gradual pruning"),
                WORKS_SPARSITY, larger=True, names=("sparsity", "goal"), unit="pts", scale=100,
                asserted_by=BOOK),
        differs(f"FTRL with L1 {works}", reached("FTRL with L1"), WORKS_SPARSITY, larger=True,
                names=("sparsity", "goal"), unit="pts", scale=100, asserted_by=FIRST),
        differs("dropout leaves more weights exactly 0 than plain training",
                [r["dropout"]["sparsity"] for r in runs], [r["dense_sparsity"] for r in runs],
                larger=True, paired=True, margin=one, names=("dropout", "plain"), unit="pts",
                scale=100, asserted_by=DROPOUT),
        differs("L1 alone (with Adam) drives weights to exactly 0 (more than plain training)",
                [x["exact_zeros"] for x in strongest], [r["dense_sparsity"] for r in runs],
                larger=True, paired=True, margin=one, names=("L1", "plain"), unit="pts",
                scale=100, asserted_by=L1_EXACT))
    dropout = verdicts[4]
    head = ("Dropout is not one of them" if dropout.outcome == REFUTED else
            "Dropout does sparsify here" if dropout.outcome == SUPPORTED else
            "Whether dropout sparsifies is not settled here")
    means = ", ".join(f"{k} {statistics.fmean(reached(k)):.0%}" for k in runs[0]["sparsest_points"])
    return Answer(head + "; the ways to a sparse model, judged over the seeds", verdicts,
                  f"Sparsest model within {WORKS_DROP * 100:g} points of the dense net (mean over "
                  f"{len(runs)} seeds): {means}.")


def measure(source: DataSource, st: dict, seed: int) -> Measurement:
    data = source.load(st["n_train"], st["valid"], seed)
    cfg = topic_config("sparsity", seed, st["epochs"], **{"model.depth": 2, "optim.name": "adam"})
    device = resolve_device(cfg.train.device)     # where fit puts the models
    test = data.test.tensors(device)

    # 1. train normally, then zero the tiny weights (one-shot magnitude pruning)
    dense_model = fit(cfg, data).model
    dense = _point(dense_model, test)
    oneshot, finetuned = [dense], [dense]
    for s in st["prune"]:
        m = copy.deepcopy(dense_model)
        magnitude_prune_(m, s)
        oneshot.append(_point(m, test))
    for s in st["finetune"]:
        m = copy.deepcopy(dense_model)
        masks = magnitude_prune_(m, s)
        finetune_masked(cfg, data, m, masks, epochs=1)
        finetuned.append(_point(m, test))

    # 2. L1 regularization, then zero what it brought within TINY of zero
    l1_rows = []
    for lam in st["l1"]:
        m = fit(replace(cfg, **{"model.l1": lam}), data).model
        row = {"l1": lam, "exact_zeros": sparsity(m), "near_zero": near_zero_fraction(m, TINY),
               "accuracy_before_zeroing": evaluate(m, *test)["accuracy"]}
        magnitude_prune_(m, row["near_zero"])
        l1_rows.append({**row, **_point(m, test)})

    # 3. gradual magnitude pruning during training
    gradual = []
    for s in st["gradual"]:
        result, _ = gradual_prune_fit(cfg, data, s)
        gradual.append({"target": s, **_point(result.model, test)})

    # 4. FTRL with L1: exact zeros straight out of the optimizer
    ftrl = []
    for lam in st["ftrl_l1"]:
        m = fit(replace(cfg, **{"optim.name": "ftrl", "optim.lr": FTRL_LR, "optim.l1": lam}),
                data).model
        ftrl.append({"l1": lam, **_point(m, test)})

    # dropout: does it leave any weight at zero?
    drop_model = fit(replace(cfg, **{"model.dropout": DROPOUT_RATE}), data).model
    dropout = {"rate": DROPOUT_RATE, **_point(drop_model, test),
               "near_zero": near_zero_fraction(drop_model, TINY),
               "dense_near_zero": near_zero_fraction(dense_model, TINY)}

    floor = dense["accuracy"] - WORKS_DROP
    curves = {"zeroing small weights": oneshot,
              "zeroing + 1 epoch fine-tuning": finetuned,
              "L1 then zeroing": l1_rows,
              "gradual pruning": gradual,
              "FTRL with L1": ftrl}
    sparsest = {k: _sparsest_within(pts, floor) for k, pts in curves.items()}
    reached = {k: (p["sparsity"] if p else 0.0) for k, p in sparsest.items()}
    strongest_l1 = max(l1_rows, key=lambda r: r["l1"])

    numbers = {
        "train_images": len(data.train), "epochs": st["epochs"],
        "dense_accuracy": dense["accuracy"], "dense_sparsity": dense["sparsity"],
        "kernel_weights": sum(m.weight.numel() for m, _ in kernel_parameters(dense_model)),
        "dropout_exact_zeros": dropout["sparsity"],
        "l1_exact_zeros_before_zeroing": strongest_l1["exact_zeros"],
        "l1_near_zero": strongest_l1["near_zero"], "dense_near_zero": dropout["dense_near_zero"],
        **{f"sparsest_within_{WORKS_DROP * 100:g}pt: {k}": v for k, v in reached.items()},
        "sparsest_points": sparsest,
        "magnitude_pruning": oneshot, "magnitude_pruning_finetuned": finetuned,
        "l1": l1_rows, "gradual_pruning": gradual, "ftrl": ftrl, "dropout": dropout,
        "tiny_threshold": TINY, "ftrl_lr": FTRL_LR, "accuracy_floor": floor,
    }
    if 0.0 in st["ftrl_l1"]:
        # FTRL's z starts at 0 and moves only with gradients: inputs that are never lit (MNIST's
        # border pixels) keep w = 0 even without L1
        numbers["ftrl_zeros_without_l1"] = next(r["sparsity"] for r in ftrl if r["l1"] == 0.0)

    return Measurement(numbers)


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show."""
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax, bars = fig.subplots(1, 2, width_ratios=[1.6, 1])
    curves = {"magnitude pruning after training": (n["magnitude_pruning"], "o-"),
              "... + 1 epoch fine-tuning, zeros held": (n["magnitude_pruning_finetuned"], "o--"),
              f"L1 then zeroing |w| <= {n['tiny_threshold']:g}": (n["l1"], "s-"),
              "gradual pruning (TFMOT schedule)": (n["gradual_pruning"], "^-"),
              "FTRL with L1": (n["ftrl"], "D-")}
    for label, (points, style) in curves.items():
        pts = sorted(points, key=lambda p: p["sparsity"])
        ax.plot([100 * p["sparsity"] for p in pts], [100 * p["accuracy"] for p in pts], style,
                label=label, linewidth=1.6, markersize=5)
    d = n["dropout"]
    ax.plot([100 * d["sparsity"]], [100 * d["accuracy"]], "*", color="k", markersize=12,
            label=f"dropout {d['rate']:g} (as trained)")
    ax.axhline(100 * n["dense_accuracy"], color="0.5", linestyle=":", linewidth=1, label="dense net")
    ax.set(xlabel="sparsity: kernel weights exactly 0 (%)", ylabel="test accuracy (%)",
           title="Accuracy vs sparsity, by way of getting there")
    ax.set_ylim(max(0, ax.get_ylim()[0]), 100)
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="lower left")

    l1 = max(n["l1"], key=lambda r: r["l1"])
    ftrl = max(n["ftrl"], key=lambda r: r["sparsity"])
    names = ["plain\n(Adam)", f"dropout\n{d['rate']:g}", f"L1 {l1['l1']:g}\n(Adam)",
             f"FTRL\nl1 {ftrl['l1']:g}"]
    exact = [n["magnitude_pruning"][0]["sparsity"], d["sparsity"], l1["exact_zeros"],
             ftrl["sparsity"]]
    near = [d["dense_near_zero"], d["near_zero"], l1["near_zero"], ftrl["sparsity"]]
    xs = range(len(names))
    bars.bar([x - 0.2 for x in xs], [100 * v for v in exact], width=0.4, label="exactly 0")
    bars.bar([x + 0.2 for x in xs], [100 * v for v in near], width=0.4,
             label=f"|w| <= {n['tiny_threshold']:g}")
    for x, v in zip(xs, exact):
        bars.annotate(f"{100 * v:.1f}%", (x - 0.2, 100 * v), ha="center", va="bottom", fontsize=8)
    bars.set_xticks(list(xs), names)
    bars.set(ylabel="kernel weights (%)", title="Zeros straight out of training (no pruning)")
    bars.set_ylim(0, 105)
    bars.grid(True, axis="y", alpha=0.3)
    bars.legend(frameon=False, fontsize=8)
    fig.suptitle(f"Three (four) ways to a sparse model, and dropout, on a 2x100 ELU MLP ({n['data']})")
    return fig


TOPIC = Topic(name="sparsity", question=QUESTION, measure=measure, verdict=verdict, figure=figure,
              quick=dict(seeds=3, n_train=1500, valid=500, epochs=3, prune=[0.5, 0.8, 0.9, 0.95],
                         finetune=[0.9], l1=[1e-3, 3e-3], gradual=[0.9], ftrl_l1=[0.01]),
              full=dict(seeds=5, n_train=8000, valid=5000, epochs=5, prune=[0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
                        finetune=[0.8, 0.9, 0.95], l1=[1e-4, 3e-4, 1e-3, 3e-3],
                        gradual=[0.8, 0.9, 0.95, 0.98], ftrl_l1=[0.0, 0.01, 0.02, 0.03]))

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

from matplotlib.figure import Figure

from dnnlab.analysis.sparsity import (
    finetune_masked,
    gradual_prune_fit,
    magnitude_prune_,
    near_zero_fraction,
    sparsity,
)
from dnnlab.config import replace
from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
from dnnlab.train import evaluate, fit, resolve_device

QUESTION = "Name three ways you can produce a sparse model."
TINY = 1e-3            # "tiny weights" zeroed after L1 training
DROPOUT_RATE = 0.5
FTRL_LR = 0.3          # FTRL's alpha: its per-coordinate step is alpha / sqrt(sum g^2)
WORKS_DROP = 0.05      # methods are compared at the sparsest model within 5 points of dense
WORKS_SPARSITY = 0.8   # a way to a sparse model "works": >= 80% exact zeros within those 5 points
L1_GAIN = 0.2          # L1 "gives more sparsity": >= 20 points more tiny weights than without it


def _point(model, test) -> dict[str, float]:
    return {"sparsity": sparsity(model), "accuracy": evaluate(model, *test)["accuracy"]}


def _sparsest_within(points: list[dict], floor: float) -> dict | None:
    """The sparsest point whose test accuracy is at least ``floor`` (None if there is none)."""
    ok = [p for p in points if p["accuracy"] >= floor]
    return max(ok, key=lambda p: p["sparsity"]) if ok else None


def judge(sparsest: dict[str, dict | None], dense_near_zero: float) -> dict[str, bool]:
    """Which ways to a sparse model work, from the sparsest point each reached within
    ``WORKS_DROP`` of the dense net (None: none did) and the dense net's share of tiny weights."""
    reached = {k: (p["sparsity"] if p else 0.0) for k, p in sparsest.items()}
    # the book: "for more sparsity, apply L1": more weights end up tiny (and can be zeroed) than
    # without it, at an accuracy within WORKS_DROP of the dense net
    l1_gain = reached["L1 then zeroing"] - dense_near_zero
    return {"zeroing": max(reached["zeroing small weights"],
                           reached["zeroing + 1 epoch fine-tuning"]) >= WORKS_SPARSITY,
            "L1 gives more zeros": l1_gain >= L1_GAIN,
            "gradual pruning": reached["gradual pruning"] >= WORKS_SPARSITY,
            "FTRL with L1": reached["FTRL with L1"] >= WORKS_SPARSITY}


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone: ``numbers["dropout"]``
    (``sparsity``, ``dense_near_zero``), ``numbers["l1"]`` (per strength: ``l1``,
    ``exact_zeros``, ``near_zero``), ``dense_accuracy`` and ``sparsest_points`` (per way: the
    sparsest point within ``WORKS_DROP`` of the dense net, or None)."""
    dropout, sparsest = numbers["dropout"], numbers["sparsest_points"]
    strongest_l1 = max(numbers["l1"], key=lambda r: r["l1"])
    works = judge(sparsest, dropout["dense_near_zero"])
    dropout_sparse = dropout["sparsity"] > 0.01
    l1_alone_exact = strongest_l1["exact_zeros"] > 0.01
    head = "Dropout is not one of them" if not dropout_sparse else "Dropout does sparsify here"
    text = (
        f"{head}: after dropout (rate {DROPOUT_RATE:g}) {dropout['sparsity']:.2%} of the weights are "
        f"exactly zero, and after L1 alone with Adam (l1={strongest_l1['l1']:g}) "
        f"{strongest_l1['exact_zeros']:.2%} are, though {strongest_l1['near_zero']:.0%} lie within "
        f"{TINY:g} of zero (without L1: {dropout['dense_near_zero']:.1%}); the sparsest model each "
        f"way within {WORKS_DROP * 100:g} points of the dense {numbers['dense_accuracy']:.1%} "
        f"test accuracy: "
        + ", ".join(f"{k} {v['sparsity']:.0%}" if v else f"{k}: none"
                    for k, v in sparsest.items()) + ".")

    book_holds = works["zeroing"] and works["L1 gives more zeros"] and works["gradual pruning"]
    confirms, refutes = [], []
    book = ["000 answer 6 (book)", "001 answer 6 (book's answer)", "003 answer 6 (book)"]
    (confirms if book_holds else refutes).extend(book)
    (confirms if works["zeroing"] and works["L1 gives more zeros"] and works["FTRL with L1"]
     else refutes).append("004 answer 6 (zero tiny weights, L1, FTRL with L1)")
    (confirms if dropout_sparse else refutes).extend(
        ["002 answer 6 (dropout makes a model sparse)",
         "001 answer 6 (learner: ReLU, L1, dropout)"])
    if l1_alone_exact:
        confirms.append("002 answer 6 (L1 drives weights to exactly zero)")
    return text, confirms, refutes


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
    works = judge(sparsest, dropout["dense_near_zero"])

    numbers = {
        "train_images": len(data.train), "epochs": st["epochs"],
        "dense_accuracy": dense["accuracy"],
        "dropout_exact_zeros": dropout["sparsity"],
        "l1_exact_zeros_before_zeroing": strongest_l1["exact_zeros"],
        "l1_near_zero": strongest_l1["near_zero"], "dense_near_zero": dropout["dense_near_zero"],
        **{f"sparsest_within_{WORKS_DROP * 100:g}pt: {k}": v for k, v in reached.items()},
        "works": works, "sparsest_points": sparsest,
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
              quick=dict(n_train=1500, valid=500, epochs=3, prune=[0.5, 0.8, 0.9, 0.95],
                         finetune=[0.9], l1=[1e-3, 3e-3], gradual=[0.9], ftrl_l1=[0.01]),
              full=dict(n_train=8000, valid=5000, epochs=5, prune=[0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
                        finetune=[0.8, 0.9, 0.95], l1=[1e-4, 3e-4, 1e-3, 3e-3],
                        gradual=[0.8, 0.9, 0.95, 0.98], ftrl_l1=[0.0, 0.01, 0.02, 0.03]))

"""Zero biases: does the starting value of the biases matter?

The same 3x100 He/ELU net is trained on MNIST with Nadam from several seeds, with three bias
initializations: zeros (the default), the constant 1 (004's "my practice"), and random biases
drawn like the weights (each layer's He normal). A seed fixes the kernels and the batch order,
so the three variants of one seed differ only in their biases. The question is answered by
comparing the gap between variants with the spread between seeds by the lab's one rule
(:func:`dnnlab.analysis.stats.compare`, beyond seed noise when p < 0.05), paired by seed: a
seed's three variants share their kernels and batch order, so the test is on each seed's
difference, and whether the seeds' accuracy ranges overlap.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dnnlab.analysis.stats import NOISE_LEVEL, compare
from dnnlab.nn import build_mlp, init_
from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit

QUESTION = "Is it OK to initialize the bias terms to 0?"
VARIANTS = ("zeros", "constant 1", "random (like weights)")


@torch.no_grad()
def set_biases(model, variant: str, seed: int) -> None:
    """Give every dense layer's bias the ``variant``'s start (kernels are left as built)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    for layer in [b.linear for b in model.hidden] + [model.head]:
        if variant == "zeros":
            layer.bias.zero_()
        elif variant == "constant 1":
            layer.bias.fill_(1.0)
        else:  # one draw per unit from the distribution its incoming weights come from
            draw = torch.empty_like(layer.weight)
            init_(draw, "he_normal", generator=g)
            layer.bias.copy_(draw[:, 0])


def _t_text(c: dict) -> str:
    return "t = n/a (no spread)" if c["t"] is None else f"t = {c['t']:+.2f}"


def _p_text(c: dict) -> str:
    return "n/a" if c["p"] is None else f"{c['p']:.2g}"


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone: per-variant accuracy summaries
    (``numbers["accuracy"]``) and each variant against zeros (``numbers["vs_zeros"]``,
    :func:`~dnnlab.analysis.stats.compare` paired by seed: difference, t, p, beyond_noise)."""
    summary, vs = numbers["accuracy"], numbers["vs_zeros"]
    n_seeds = numbers["seeds"]
    within = {v: not c["beyond_noise"] for v, c in vs.items()}
    better = [v for v in VARIANTS[1:] if not within[v] and vs[v]["difference"] > 0]
    worse = [v for v in VARIANTS[1:] if not within[v] and vs[v]["difference"] < 0]
    zero_fine = not better                                   # nothing clearly beats zeros
    parts = [f"{v} {summary[v]['mean']:.2%} ± {summary[v]['std']:.2%}" for v in VARIANTS]
    gaps = ", ".join(f"{v} vs zeros {_t_text(vs[v])}, p = {_p_text(vs[v])}" for v in VARIANTS[1:])
    same = [v for v in VARIANTS[1:] if within[v]]
    if not better and not worse:
        head = "Yes: the bias start makes no difference beyond seed noise"
    elif not better:
        gap = "; ".join(f"{v} biases did worse than zeros by "
                        f"{100 * (summary['zeros']['mean'] - summary[v]['mean']):.2f} points"
                        for v in worse)
        head = (f"Yes, zeros are fine ({', '.join(same) or 'no variant'} within seed noise of "
                f"zeros), but the start is not always irrelevant: {gap}, beyond seed noise")
    else:
        head = f"Not quite: {' and '.join(better)} biases beat zeros beyond seed noise"
    text = (f"{head}: test accuracy over {n_seeds} seeds (mean ± std) {'; '.join(parts)}; "
            f"paired t over the seeds: {gaps} (p < {NOISE_LEVEL:g}: beyond seed noise).")

    confirms, refutes = [], []
    book = ["000 answer 2 (book)", "001 answer 2 (book's answer)", "003 answer 2 (book)"]
    (confirms if zero_fine and within["random (like weights)"] else refutes).extend(book)
    (confirms if zero_fine and within["constant 1"] else refutes).append(
        "004 answer 2 (zeros are fine; bias 1 makes little difference)")
    (confirms if zero_fine else refutes).extend(
        ["002 answer 2 (zero biases are fine)", "001 answer 2 (learner: yes, it is the default)"])
    return text, confirms, refutes


def measure(source: DataSource, sizes: dict, seed: int) -> Measurement:
    seeds = [seed + i for i in range(sizes["seeds"])]
    epochs = sizes["epochs"]
    data = source.load(sizes["n_train"], sizes["valid"], seed)
    acc: dict[str, list[float]] = {v: [] for v in VARIANTS}
    curves: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    for s in seeds:
        c = topic_config("bias-init", s, epochs, **{"model.depth": 3, "data.seed": seed})
        for variant in VARIANTS:
            model = build_mlp(c.model, data.n_features, data.n_classes, seed=s)
            set_biases(model, variant, s)
            result = fit(c, data, model=model)
            acc[variant].append(result.test["test_accuracy"])
            curves[variant].append(result.history["val_loss"])

    summary = {v: {"mean": statistics.fmean(a), "std": statistics.stdev(a), "min": min(a),
                   "max": max(a), "per_seed": a} for v, a in acc.items()}
    vs_zeros = {v: compare(acc[v], acc["zeros"], paired=True) for v in VARIANTS[1:]}
    overlap = {v: min(max(acc[v]), max(acc["zeros"])) >= max(min(acc[v]), min(acc["zeros"]))
               for v in VARIANTS[1:]}
    numbers = {"seeds": len(seeds), "train_images": len(data.train), "epochs": epochs,
               "zeros_mean_accuracy": summary["zeros"]["mean"],
               "zeros_seed_std": summary["zeros"]["std"],
               "accuracy": summary, "vs_zeros": vs_zeros, "seed_ranges_overlap": overlap}
    return Measurement(numbers, {"curves": curves})


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show."""
    acc = {v: s["per_seed"] for v, s in n["accuracy"].items()}
    curves: dict[str, list[list[float]]] = drawing["curves"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    colours = ["tab:blue", "tab:orange", "tab:green"]
    for i, a in enumerate(acc.values()):
        xs = np.full(len(a), i) + np.linspace(-0.12, 0.12, len(a))
        ax_acc.scatter(xs, a, color=colours[i], alpha=0.7, label="one seed" if i == 0 else None)
        ax_acc.errorbar(i + 0.3, np.mean(a), yerr=np.std(a, ddof=1), fmt="s", color="k",
                        capsize=5, label="mean ± std" if i == 0 else None)
    ax_acc.set_xticks(range(len(acc)), list(acc))
    ax_acc.set(ylabel="test accuracy", xlabel="bias initialization",
               title="Test accuracy per seed: bias start vs seed noise")
    ax_acc.legend(frameon=False, fontsize=8)
    ax_acc.grid(True, axis="y", alpha=0.3)
    for i, (v, runs) in enumerate(curves.items()):
        arr = np.array(runs)
        epochs = np.arange(1, arr.shape[1] + 1)
        ax_loss.plot(epochs, arr.mean(0), color=colours[i], label=v, marker="o")
        ax_loss.fill_between(epochs, arr.min(0), arr.max(0), color=colours[i], alpha=0.2)
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set(xlabel="epoch", ylabel="validation loss",
                title="Validation loss: mean, band = min..max over seeds")
    ax_loss.legend(frameon=False, fontsize=8)
    ax_loss.grid(True, alpha=0.3)
    fig.suptitle(f"Bias initialization: zeros vs 1 vs random (3x100 He/ELU, Nadam, {n['data']})")
    return fig


TOPIC = Topic(name="bias-init", question=QUESTION, measure=measure, verdict=verdict, figure=figure,
              quick=dict(seeds=3, n_train=1024, valid=1000, epochs=2),
              full=dict(seeds=5, n_train=10000, valid=5000, epochs=5))

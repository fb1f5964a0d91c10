"""Zero biases: does the starting value of the biases matter?

The same 3x100 He/ELU net is trained on MNIST with Nadam at each seed, with three bias
initializations: zeros (the default), the constant 1 (004's "my practice"), and random biases
drawn like the weights (each layer's He normal). A seed fixes the kernels and the batch order,
so the three variants of one seed differ only in their biases. "Zeros are fine" is judged by
:func:`dnnlab.analysis.verdict.same`, paired by seed (a seed's variants share their kernels and
batch order): supported when the whole 95% interval of the difference lies within the zeros' own
seed spread, the noise floor measured in the same run.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dnnlab.analysis.stats import mean_std, pm
from dnnlab.analysis.verdict import REFUTED, SUPPORTED, differs, same, spread
from dnnlab.nn import build_mlp, init_
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
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


BOOK = ("000 answer 2 (book)", "001 answer 2 (book's answer)", "003 answer 2 (book)",
        "002 answer 2 (zero biases are fine)", "001 answer 2 (learner: yes, it is the default)")
FIRST = ("004 answer 2 (zeros are fine; bias 1 makes little difference)",)


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed, the test accuracy
    of each variant, ``accuracy``): each other start against zeros, paired by seed (a seed's
    variants share their kernels and batches), within the zeros' own seed spread (the noise
    floor measured in the same run)."""
    acc = {v: [r["accuracy"][v] for r in runs] for v in VARIANTS}
    floor = spread(acc["zeros"])
    random_ = same("zero biases train as well as random biases drawn like the weights (test "
                   "accuracy within the zeros' seed spread)", acc["random (like weights)"],
                   acc["zeros"], paired=True, margin=floor, names=("random", "zeros"),
                   unit="pts", scale=100, asserted_by=BOOK)
    one = same("zero biases train as well as biases set to 1 (test accuracy within the zeros' "
               "seed spread)", acc["constant 1"], acc["zeros"], paired=True, margin=floor,
               names=("constant 1", "zeros"), unit="pts", scale=100, asserted_by=FIRST)
    beats = [differs(f"{v} biases beat zeros", acc[v], acc["zeros"], paired=True)
             for v in VARIANTS[1:]]
    if any(b.outcome == SUPPORTED for b in beats):
        head = "Not quite: " + " and ".join(v for v, b in zip(VARIANTS[1:], beats)
                                            if b.outcome == SUPPORTED) + " biases beat zeros"
    elif random_.outcome == SUPPORTED and one.outcome == SUPPORTED:
        head = "Yes: the bias start makes no difference beyond seed noise"
    elif REFUTED in (random_.outcome, one.outcome):
        head = ("Yes, zeros are fine (no start beats them), but the start is not always "
                "irrelevant: " + " and ".join(
                    f"{v} biases did worse" for v, b in zip(VARIANTS[1:], beats)
                    if b.outcome == REFUTED))
    else:
        head = "Not settled here: no start beats zeros, but the seeds cannot tell how close they are"
    summary = "; ".join(f"{v} {pm(*mean_std(acc[v]))} %" for v in VARIANTS)
    return Answer(head, (random_, one), f"Test accuracy over {len(runs)} seeds: {summary}.")


def measure(source: DataSource, sizes: dict, seed: int) -> Measurement:
    epochs = sizes["epochs"]
    data = source.load(sizes["n_train"], sizes["valid"], seed)
    acc: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    c = topic_config("bias-init", seed, epochs, **{"model.depth": 3})
    for variant in VARIANTS:
        model = build_mlp(c.model, data.n_features, data.n_classes, seed=seed)
        set_biases(model, variant, seed)
        result = fit(c, data, model=model)
        acc[variant] = result.test["test_accuracy"]
        curves[variant] = result.history["val_loss"]
    numbers = {"train_images": len(data.train), "epochs": epochs,
               "zeros_accuracy": acc["zeros"], "accuracy": acc}
    return Measurement(numbers, {"curves": curves})


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show."""
    acc = {v: [r["accuracy"][v] for r in n["per_seed"]] for v in VARIANTS}
    curves: dict[str, list[list[float]]] = {v: [d["curves"][v] for d in drawing["per_seed"]]
                                            for v in VARIANTS}
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
              quick=dict(seeds=5, n_train=1024, valid=1000, epochs=2),
              full=dict(seeds=8, n_train=10000, valid=5000, epochs=5))

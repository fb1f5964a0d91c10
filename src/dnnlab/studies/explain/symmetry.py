"""Equal initial weights: does training ever tell a layer's neurons apart?

Three 3x64 ELU nets are trained on MNIST with Nadam: one with independent He draws, one with every
weight set to one constant, and one where each layer takes a single value drawn with He init and
copies it to all its weights (the question's "selected randomly using He initialization").
Measured after training, per hidden layer: the largest difference between any two neurons'
incoming weights and biases. The equal-weight nets are then collapsed into a 1-neuron-per-layer
net (row 0 of the first kernel, row sums of the later ones) that must score exactly the same, and
a 1-neuron-per-layer net is trained from scratch for comparison.

Sizes are multiples of 64 (width, batch, training set) on purpose: torch's elementwise kernels
round the SIMD body and the scalar tail of a tensor differently (fused multiply-add), which
would leave ~1e-8 differences between neurons that are rounding, not learning. On a user's data
the training set is cut to a multiple of 64 for the same reason.

Whether the neurons "stayed identical" is judged against a noise floor measured in the same run,
never a fixed cutoff: the copied-draw net is trained once more with a one-ulp asymmetry planted in
one weight of each hidden layer, and its largest neuron difference after training is what float
rounding alone can grow into; the neurons stayed identical when their difference is nearer that
floor than the independent draws' (below the geometric mean of the two). The verdicts
(:func:`verdict`) are judged over the seeds by :mod:`dnnlab.analysis.verdict`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import torch
from matplotlib.figure import Figure
from torch import nn

from dnnlab.analysis.verdict import NOT_SETTLED, REFUTED, SUPPORTED, differs, every_seed
from dnnlab.config import RunConfig, replace
from dnnlab.data import Split
from dnnlab.nn import build_mlp
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
from dnnlab.train import evaluate, fit

QUESTION = ("Is it OK to initialize all the weights to the same value as long as that value is "
            "selected randomly using He initialization?")
WIDTH, DEPTH = 64, 3


def max_neuron_difference(layer: nn.Linear) -> float:
    """max over inputs of (max - min over neurons): 0 iff all neurons have identical weights and bias."""
    w = layer.weight.detach()
    if layer.bias is not None:
        w = torch.cat([w, layer.bias.detach()[:, None]], 1)
    return float((w.max(0).values - w.min(0).values).max())


def hidden_linears(model) -> list[nn.Linear]:
    return [block.linear for block in model.hidden]


@torch.no_grad()
def fill_equal(model, values: list[float]) -> None:
    """Every kernel (hidden layers and head) takes one value: ``values[i]`` for layer i."""
    for layer, v in zip(hidden_linears(model) + [model.head], values):
        layer.weight.fill_(v)


@torch.no_grad()
def collapse(model, cfg: RunConfig):
    """The 1-neuron-per-layer net computing what a net of identical neurons computes.

    With identical neurons every unit of a layer carries the same value h, so a next-layer unit
    sees ``h * sum_k W[j, k]``: one neuron per layer with the row sums as its weights.
    """
    one = build_mlp(replace(cfg, **{"model.hidden": [1] * DEPTH}).model, model.in_features,
                    model.n_classes)
    src, dst = hidden_linears(model), hidden_linears(one)
    dst[0].weight.copy_(src[0].weight[:1])
    for s, d in zip(src[1:], dst[1:]):
        d.weight.copy_(s.weight[:1].sum(1, keepdim=True))
    for s, d in zip(src, dst):
        d.bias.copy_(s.bias[:1])
    one.head.weight.copy_(model.head.weight.sum(1, keepdim=True))
    one.head.bias.copy_(model.head.bias)
    return one


BOOK = ("000 answer 1 (book)", "001 answer 1 (book's answer)", "003 answer 1 (book)",
        "004 answer 1 (first edition)")
WRONG = ("002 answer 1 (equal weights drawn with He init are fine)",)
def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``, as :func:`measure` builds
    them): does the copied-He-draw net do worse than independent draws (paired over seeds), and
    do its neurons drift apart beyond what a rounding-sized asymmetry grows into in the same
    training (the noise floor, measured per seed, see :func:`measure`)?"""
    indep = [r["runs"]["independent He"]["test_accuracy"] for r in runs]
    copied = [r["runs"]["equal: one He draw copied"]["test_accuracy"] for r in runs]
    worse = differs("a net whose every layer starts from one He draw copied to all its weights "
                    "scores lower than the same net with independent He draws (test accuracy)",
                    indep, copied, paired=True, names=("independent He", "one He draw copied"),
                    unit="pts", scale=100, asserted_by=BOOK, denied_by=WRONG)
    kept = [r["equal_max_neuron_diff_after"] <= math.sqrt(r["rounding_floor_diff"] *
                                                           r["independent_min_neuron_diff_after"])
            for r in runs]
    same = every_seed("training never tells the equal-weight nets' neurons apart: their largest "
                      "pairwise difference stays nearer the float-rounding floor (the same net "
                      "with a one-ulp asymmetry planted) than the independent draws' difference "
                      "(below the two's geometric mean)", kept, name="neurons identical",
                      asserted_by=BOOK)
    identical = same.outcome == SUPPORTED
    answer = {SUPPORTED: "No: equal initial weights train worse than independent draws",
              REFUTED: "Yes here: equal initial weights trained at least as well as independent "
                       "draws",
              NOT_SETTLED: "Not settled here: the seeds do not tell the two starts apart"}
    head = answer[worse.outcome] + (
        ", and their neurons stayed identical up to float rounding" if identical else
        ", though their neurons drifted apart beyond float rounding"
        if same.outcome == REFUTED else "")
    one = [r["one_neuron_per_layer_test_accuracy"] for r in runs]
    gap = max(r["collapsed_vs_wide_accuracy_gap"] for r in runs)
    detail = (f"Collapsed to one neuron per layer the equal-weight nets score within {gap:.2%} of "
              f"themselves; a 1-neuron-per-layer net trained from scratch scores "
              f"{statistics.fmean(one):.1%}, the copied-draw net {statistics.fmean(copied):.1%} and "
              f"independent draws {statistics.fmean(indep):.1%} (means over {len(runs)} seeds).")
    floors = ", ".join(f"{r['equal_max_neuron_diff_after']:.1e} vs floor "
                       f"{r['rounding_floor_diff']:.1e} vs independent "
                       f"{r['independent_min_neuron_diff_after']:.2f}" for r in runs)
    detail += f" Largest neuron difference per seed: {floors}."
    return Answer(head, (worse, same), detail)


def measure(source: DataSource, sizes: dict, seed: int) -> Measurement:
    data = source.load(sizes["n_train"], sizes["valid"], seed)
    n = len(data.train) // WIDTH * WIDTH        # full batches only (see the module docstring)
    data = dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]))
    epochs = sizes["epochs"]
    cfg = topic_config("symmetry", seed, epochs, **{"model.depth": DEPTH, "model.width": WIDTH})
    x_test, y_test = data.test.tensors()

    def train(model, c=cfg):
        result = fit(c, data, model=model)
        return result.model.cpu(), result.test["test_accuracy"]

    runs: dict[str, dict] = {}
    indep = build_mlp(cfg.model, data.n_features, data.n_classes, seed=seed)
    const = build_mlp(cfg.model, data.n_features, data.n_classes, seed=seed)
    fill_equal(const, [0.01] * (DEPTH + 1))
    he_copy = build_mlp(cfg.model, data.n_features, data.n_classes, seed=seed)
    drawn = [float(layer.weight.detach().flatten()[0])
             for layer in hidden_linears(he_copy) + [he_copy.head]]
    fill_equal(he_copy, drawn)
    for name, model in (("independent He", indep), ("equal: constant 0.01", const),
                        ("equal: one He draw copied", he_copy)):
        before = [max_neuron_difference(l) for l in hidden_linears(model)]
        trained, acc = train(model)
        runs[name] = {"test_accuracy": acc, "max_neuron_diff_before": before,
                      "max_neuron_diff_after": [max_neuron_difference(l)
                                                for l in hidden_linears(trained)]}
        if name.startswith("equal"):
            runs[name]["collapsed_test_accuracy"] = evaluate(collapse(trained, cfg), x_test,
                                                             y_test)["accuracy"]
    # the noise floor: the copied-draw net again with a one-ulp asymmetry planted in neuron 0 of
    # each hidden layer, trained the same way: how far apart float rounding alone can grow
    floor_net = build_mlp(cfg.model, data.n_features, data.n_classes, seed=seed)
    fill_equal(floor_net, drawn)
    with torch.no_grad():
        for layer in hidden_linears(floor_net):
            w = layer.weight[0, 0]
            w.copy_(torch.nextafter(w, w + 1))
    floor_trained, _ = train(floor_net)
    floor_diff = max(max_neuron_difference(l) for l in hidden_linears(floor_trained))
    one_cfg = topic_config("symmetry", seed, epochs,
                           **{"model.depth": DEPTH, "model.hidden": [1] * DEPTH})
    one_net = build_mlp(one_cfg.model, data.n_features, data.n_classes, seed=seed)
    _, one_acc = train(one_net, one_cfg)

    equal = [runs["equal: constant 0.01"], runs["equal: one He draw copied"]]
    max_diff = max(max(r["max_neuron_diff_after"]) for r in equal)
    indep_diff = min(runs["independent He"]["max_neuron_diff_after"])
    collapse_gap = max(abs(r["test_accuracy"] - r["collapsed_test_accuracy"]) for r in equal)
    numbers = {"runs": runs, "one_neuron_per_layer_test_accuracy": one_acc,
               "equal_max_neuron_diff_after": max_diff, "independent_min_neuron_diff_after": indep_diff,
               "collapsed_vs_wide_accuracy_gap": collapse_gap, "he_values_drawn": drawn,
               "rounding_floor_diff": floor_diff,
               "train_images": len(data.train), "epochs": epochs, "width": WIDTH, "depth": DEPTH}
    return Measurement(numbers)


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show."""
    runs, one_acc = n["runs"], n["one_neuron_per_layer_test_accuracy"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_diff = fig.subplots(1, 2)
    labels = list(runs) + ["1 neuron per layer"]
    accs = [r["test_accuracy"] for r in runs.values()] + [one_acc]
    colours = ["tab:blue", "tab:red", "tab:orange", "tab:gray"]
    bars = ax_acc.bar(range(len(labels)), accs, color=colours)
    ax_acc.bar_label(bars, labels=[f"{a:.1%}" for a in accs], fontsize=9)
    ax_acc.set_xticks(range(len(labels)), [l.replace(": ", ":\n") for l in labels], fontsize=8)
    ax_acc.set(ylabel="test accuracy", ylim=(0, 1.05), title=f"{n['data']} test accuracy after training")
    layers = list(range(1, DEPTH + 1))
    w = 0.8 / len(runs)
    for i, (name, r) in enumerate(runs.items()):
        xs = [l + (i - (len(runs) - 1) / 2) * w for l in layers]
        b = ax_diff.bar(xs, r["max_neuron_diff_after"], width=w, color=colours[i], label=name)
        ax_diff.bar_label(b, labels=[f"{d:.2g}" for d in r["max_neuron_diff_after"]], fontsize=8)
    ax_diff.set_xticks(layers, [f"hidden {l}" for l in layers])
    ax_diff.set(ylabel="max |w_i - w_j| between two neurons", xlabel="layer",
                title="How different a layer's neurons are after training")
    ax_diff.legend(frameon=False, fontsize=8)
    fig.suptitle(f"Equal vs independent initial weights ({DEPTH}x{WIDTH} ELU net, Nadam, {n['data']})")
    return fig


TOPIC = Topic(name="symmetry", question=QUESTION, measure=measure, verdict=verdict, figure=figure,
              quick=dict(seeds=3, n_train=1024, valid=1024, epochs=2),
              full=dict(seeds=5, n_train=9984, valid=5000, epochs=5))

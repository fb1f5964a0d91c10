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
would leave ~1e-8 differences between neurons that are rounding, not learning. The verdict
reports whatever difference was measured. On a user's data the training set is cut to a multiple
of 64 for the same reason.
"""

from __future__ import annotations

import dataclasses

import torch
from matplotlib.figure import Figure
from torch import nn

from dnnlab.config import RunConfig, replace
from dnnlab.data import Split
from dnnlab.nn import build_mlp
from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
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


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone (``numbers`` as ``run`` builds it)."""
    runs, one_acc = numbers["runs"], numbers["one_neuron_per_layer_test_accuracy"]
    max_diff = numbers["equal_max_neuron_diff_after"]
    indep_diff = numbers["independent_min_neuron_diff_after"]
    collapse_gap = numbers["collapsed_vs_wide_accuracy_gap"]
    acc_indep = runs["independent He"]["test_accuracy"]
    acc_equal = [runs["equal: constant 0.01"]["test_accuracy"],
                 runs["equal: one He draw copied"]["test_accuracy"]]
    identical = max_diff == 0.0
    rounding = not identical and max_diff < 1e-5   # float32 noise; weights are O(0.01..1)
    worse = max(acc_equal) < acc_indep - 0.1
    if identical:
        kept = "every hidden layer's 64 neurons were still exactly identical after training " \
               "(max pairwise difference 0 for both)"
    elif rounding:
        kept = (f"every hidden layer's neurons stayed identical up to float rounding (max pairwise "
                f"difference {max_diff:.1e} vs {indep_diff:.2f} with independent draws)")
    else:
        kept = (f"the neurons did drift apart (max pairwise difference {max_diff:.3g}, vs "
                f"{indep_diff:.3g} with independent draws)")
    like_one = (f"collapsed to one neuron per layer they score the same "
                f"(largest gap {collapse_gap:.2%})") if collapse_gap <= 0.001 else \
        f"collapsed to one neuron per layer they differ by up to {collapse_gap:.2%}"
    accs = (f"test accuracy {acc_equal[0]:.1%} (constant) and {acc_equal[1]:.1%} (He draw copied) "
            f"vs {one_acc:.1%} for a 1-neuron-per-layer net and {acc_indep:.1%} with independent "
            "He draws")
    holds = (identical or rounding) and worse
    answer = "No" if holds else "Not settled here"
    text = f"{answer}: with equal initial weights {kept}; {like_one}; {accs}."
    book = ["000 answer 1 (book)", "001 answer 1 (book's answer)", "003 answer 1 (book)",
            "004 answer 1 (first edition)"]
    wrong = ["002 answer 1 (equal weights drawn with He init are fine)"]
    return text, (book if holds else wrong), (wrong if holds else book)


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
              quick=dict(n_train=1024, valid=1024, epochs=2), full=dict(n_train=9984, valid=5000, epochs=5))

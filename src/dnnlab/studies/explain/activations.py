"""Which activation where: hidden layers by accuracy and time, output layers by their ranges.

*Hidden layers.* The same 5x100 net (the book's MNIST net) is trained on standardized MNIST with
Nadam, the same seed, data and budget, once per hidden activation, each with the init the book
pairs it with (Glorot for sigmoid and tanh, LeCun normal for SELU, He for the ReLU family).
Measured: test accuracy and the median seconds per epoch (training plus validation, on whatever
device runs it), at each seed; an activation is judged against the best of the others, paired by
seed (:func:`dnnlab.analysis.verdict.differs`), a gap within the best's seed spread counting as none.

*Output layers.* The most accurate net's real outputs (its logits on the test set) are passed
through tanh, sigmoid, softmax and softplus, and each range is measured in float32: minimum,
maximum, how far softmax rows are from summing to 1, how many sigmoid outputs round to exactly
0 or 1, whether every softplus output is positive.

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from dnnlab.analysis.stats import mean_std, pm
from dnnlab.analysis.verdict import Verdict, differs, every_seed, spread
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit

QUESTION = ("In which cases would you want to use each of the following activation functions: "
            "SELU, leaky ReLU (and its variants), ReLU, tanh, logistic, and softmax?")
HIDDEN = {"sigmoid": "glorot_normal", "tanh": "glorot_normal", "relu": "he_normal",
          "leaky_relu": "he_normal", "prelu": "he_normal", "elu": "he_normal",
          "selu": "lecun_normal", "gelu": "he_normal", "swish": "he_normal"}
SUM_EPS = float(torch.finfo(torch.float32).eps)   # one float32 rounding of a softmax row's sum


@torch.no_grad()
def output_ranges(logits: torch.Tensor) -> dict[str, dict]:
    """The four output activations applied to real logits, and what their outputs look like."""
    logits = logits.float()
    tanh, sig = torch.tanh(logits), torch.sigmoid(logits)
    soft, plus = F.softmax(logits, 1), F.softplus(logits)
    return {
        "tanh": {"min": float(tanh.min()), "max": float(tanh.max()),
                 "in_range": bool((tanh >= -1).all() and (tanh <= 1).all())},
        "sigmoid": {"min": float(sig.min()), "max": float(sig.max()),
                    "in_range": bool((sig >= 0).all() and (sig <= 1).all()),
                    "exactly_0_or_1": float(((sig == 0) | (sig == 1)).float().mean())},
        "softmax": {"min": float(soft.min()), "max": float(soft.max()),
                    "max_abs_row_sum_minus_1": float((soft.sum(1) - 1).abs().max()),
                    "in_range": bool((soft >= 0).all() and (soft <= 1).all())},
        "softplus": {"min": float(plus.min()), "max": float(plus.max()),
                     "in_range": bool((plus >= 0).all()),
                     "exactly_0": float((plus == 0).float().mean()),
                     "min_logit": float(logits.min())},
    }


def ranked(results: dict[str, dict]) -> list[str]:
    """Hidden activations, most accurate first."""
    return sorted(results, key=lambda a: -results[a]["test_accuracy"])


# "activation X scores lower than the best other", and the sources that assert or deny it
WORSE_CLAIMS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("selu", (), ("000 answer 4 (book: SELU is a good default)",)),
    ("elu", (), ("004 answer 4 (first edition: ELU is a good default)",)),
    ("sigmoid", ("000 answer 4 (book: logistic is rarely used in hidden layers)",), ()),
    ("tanh", (), ("002 answer 4 (tanh is suitable for hidden layers)",)),
)


def _worse_than_the_rest(act: str, acc: dict[str, list[float]], **kw) -> Verdict:
    """The claim "``act`` scores lower than the best of the other activations" (best by mean
    over the seeds), paired by seed, refuted too when the gap is within the best's seed spread."""
    others = [a for a in acc if a != act]
    best = max(others, key=lambda a: statistics.fmean(acc[a]))
    return differs(f"{act} hidden layers score lower than the best of the others ({best})",
                   acc[act], acc[best], larger=False, paired=True, margin=spread(acc[best]),
                   names=(act, best), unit="pts", scale=100, **kw)


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed ``hidden``, per
    activation ``test_accuracy`` and ``seconds_per_epoch``, and ``output_ranges``, what
    :func:`output_ranges` measured on that seed's best net)."""
    acc = {a: [r["hidden"][a]["test_accuracy"] for r in runs] for a in runs[0]["hidden"]}
    verdicts = [_worse_than_the_rest(name, acc, asserted_by=asserted, denied_by=denied)
                for name, asserted, denied in WORSE_CLAIMS if name in acc]
    ranges = [r["output_ranges"] for r in runs]
    verdicts.append(every_seed(
        "on a trained net's real logits tanh stays in [-1, 1], sigmoid in [0, 1] and softmax rows "
        "sum to 1 (within float32's rounding of a sum of 10)",
        [g["tanh"]["in_range"] and g["sigmoid"]["in_range"]
         and g["softmax"]["max_abs_row_sum_minus_1"] <= 10 * SUM_EPS for g in ranges],
        name="in range", asserted_by=("000 answer 4 (book: tanh for outputs in [-1, 1], logistic "
                                      "for a probability, softmax for exclusive classes)",)))
    verdicts.append(every_seed(
        "softplus outputs are positive (none underflows to 0 in float32)",
        [g["softplus"]["in_range"] and g["softplus"]["exactly_0"] == 0 for g in ranges],
        name="positive", asserted_by=("001 activations card (softplus for outputs that must be "
                                      "positive)",)))
    mean = {a: statistics.fmean(v) for a, v in acc.items()}
    order = sorted(mean, key=lambda a: -mean[a])
    secs = {a: statistics.fmean(r["hidden"][a]["seconds_per_epoch"] for r in runs) for a in acc}
    table = ", ".join(f"{a} {pm(*mean_std(acc[a]), digits=1)} % ({secs[a]:.2f} s/epoch)"
                      for a in order)
    head = (f"Hidden layers: {order[0]} scored best of {len(acc)} activations over {len(runs)} "
            f"seeds, and each claim about one activation is judged against the best of the others")
    return Answer(head, tuple(verdicts),
                  f"Test accuracy (mean ± std over the seeds) and seconds per epoch: {table}.")


def measure(source: DataSource, sizes: dict, seed: int) -> Measurement:
    epochs = sizes["epochs"]
    hidden = dict(list(HIDDEN.items())[:sizes["activations"]])
    data = source.load(sizes["n_train"], sizes["valid"], seed, standardize=True)
    results: dict[str, dict] = {}
    models = {}
    for act, init in hidden.items():
        cfg = topic_config("activations", seed, epochs,
                           **{"model.depth": 5, "model.activation": act, "model.init": init})
        res = fit(cfg, data)
        results[act] = {"test_accuracy": res.test.get("test_accuracy", math.nan),
                        "seconds_per_epoch": res.seconds_per_epoch, "init": init,
                        "status": res.status}
        models[act] = res.model
    best = ranked(results)[0]
    fastest = min(results, key=lambda a: results[a]["seconds_per_epoch"])

    model = models[best].cpu().eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(data.test.x))
    ranges = output_ranges(logits)
    s, m, p = ranges["sigmoid"], ranges["softmax"], ranges["softplus"]
    numbers = {"best_hidden": best, "best_test_accuracy": results[best]["test_accuracy"],
               "fastest_hidden": fastest, "train_images": len(data.train), "epochs": epochs,
               "sigmoid_exactly_0_or_1": s["exactly_0_or_1"],
               "softmax_max_abs_row_sum_minus_1": m["max_abs_row_sum_minus_1"],
               "softplus_min": p["min"], "hidden": results, "output_ranges": ranges}
    return Measurement(numbers, {"logits": logits})


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show.
    ``drawing["logits"]``: the best net's test-set logits, which the output panels transform."""
    results, ranges, best = n["hidden"], n["output_ranges"], n["best_hidden"]
    logits: torch.Tensor = drawing["logits"]
    fig = Figure(figsize=(13, 6), layout="constrained")
    axd = fig.subplot_mosaic([["hidden", "hidden", "tanh", "sigmoid"],
                              ["hidden", "hidden", "softmax", "softplus"]])
    ax = axd["hidden"]
    for act, r in results.items():
        ax.scatter(r["seconds_per_epoch"], r["test_accuracy"], s=40)
        ax.annotate(act, (r["seconds_per_epoch"], r["test_accuracy"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=9)
    ax.set(xlabel="seconds per epoch (median)", ylabel="test accuracy",
           title="Hidden activations: accuracy vs time (5x100, same budget)")
    ax.grid(True, alpha=0.3)
    with torch.no_grad():
        values = {"tanh": torch.tanh(logits), "sigmoid": torch.sigmoid(logits),
                  "softmax": F.softmax(logits, 1), "softplus": F.softplus(logits)}
    bounds = {"tanh": (-1, 1), "sigmoid": (0, 1), "softmax": (0, 1), "softplus": (0, None)}
    for name, v in values.items():
        a = axd[name]
        a.hist(v.flatten().numpy(), bins=50, color="tab:blue", log=True)
        for b in bounds[name]:
            if b is not None:
                a.axvline(b, color="tab:red", linestyle="--", linewidth=1)
        r = ranges[name]
        a.set(title=f"{name} output: [{r['min']:.3g}, {r['max']:.3g}]", xlabel="output value",
              ylabel="count (log)")
    fig.suptitle(f"Which activation where ({n['data']}); outputs: the {best} net's test-set logits "
                 "through each output activation (red: the range's bounds)")
    return fig


TOPIC = Topic(name="activations", question=QUESTION, measure=measure, verdict=verdict, figure=figure,
              quick=dict(seeds=3, n_train=1024, valid=1000, epochs=1, activations=4),
              full=dict(seeds=5, n_train=10000, valid=5000, epochs=3, activations=len(HIDDEN)))

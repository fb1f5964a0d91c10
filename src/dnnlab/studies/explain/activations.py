"""Which activation where: hidden layers by accuracy and time, output layers by their ranges.

*Hidden layers.* The same 5x100 net (the book's MNIST net) is trained on standardized MNIST with
Nadam, the same seed, data and budget, once per hidden activation, each with the init the book
pairs it with (Glorot for sigmoid and tanh, LeCun normal for SELU, He for the ReLU family).
Measured: test accuracy and the median seconds per epoch (training plus validation, on whatever
device runs it). One seed, so accuracies within ``TOL`` of the best count as equally good.

*Output layers.* The most accurate net's real outputs (its logits on the test set) are passed
through tanh, sigmoid, softmax and softplus, and each range is measured in float32: minimum,
maximum, how far softmax rows are from summing to 1, how many sigmoid outputs round to exactly
0 or 1, whether every softplus output is positive.

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit

QUESTION = ("In which cases would you want to use each of the following activation functions: "
            "SELU, leaky ReLU (and its variants), ReLU, tanh, logistic, and softmax?")
HIDDEN = {"sigmoid": "glorot_normal", "tanh": "glorot_normal", "relu": "he_normal",
          "leaky_relu": "he_normal", "prelu": "he_normal", "elu": "he_normal",
          "selu": "lecun_normal", "gelu": "he_normal", "swish": "he_normal"}
TOL = 0.01   # accuracy within 1 point of the best = as good, for a single seed


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


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone: ``numbers["hidden"]`` (per
    hidden activation: ``test_accuracy``, ``seconds_per_epoch``) and ``numbers["output_ranges"]``
    (what :func:`output_ranges` measured on the best net's logits)."""
    results, ranges = numbers["hidden"], numbers["output_ranges"]
    order = ranked(results)
    best = order[0]
    best_acc = results[best]["test_accuracy"]
    fastest = min(results, key=lambda a: results[a]["seconds_per_epoch"])
    good = [a for a in order if results[a]["test_accuracy"] >= best_acc - TOL]
    times = [r["seconds_per_epoch"] for r in results.values()]
    violated = [name for name, r in ranges.items() if not r["in_range"]]

    table = ", ".join(f"{a} {results[a]['test_accuracy']:.1%} ({results[a]['seconds_per_epoch']:.2f} "
                      f"s/epoch)" for a in order)
    t, s, m, p = ranges["tanh"], ranges["sigmoid"], ranges["softmax"], ranges["softplus"]
    outputs = (f"on the {best} net's real outputs tanh spans [{t['min']:.4f}, {t['max']:.4f}], "
               f"sigmoid [{s['min']:.3g}, {s['max']:.7f}] ({s['exactly_0_or_1']:.1%} round to "
               f"exactly 0 or 1 in float32), softmax rows sum to 1 within "
               f"{m['max_abs_row_sum_minus_1']:.1e}, softplus spans [{p['min']:.3g}, {p['max']:.3g}]"
               + (f" ({p['exactly_0']:.2%} underflow to exactly 0 in float32: logits down to "
                  f"{p['min_logit']:.0f})" if p["exactly_0"] > 0 else " (all positive)"))
    text = (f"Hidden layers ({len(results)} activations, same 5x100 net and budget): {table}; "
            f"within {TOL:.0%} of the best: {', '.join(good)}; epoch times span "
            f"{min(times):.2f}-{max(times):.2f} s (fastest: {fastest}). "
            f"Output layers: {outputs}"
            + (f" (outside its range: {', '.join(violated)}; see the numbers)" if violated else "")
            + ".")

    confirms, refutes = [], []

    def claim(ok: bool | None, text: str) -> None:
        if ok is not None:
            (confirms if ok else refutes).append(text)

    claim(("selu" in good) if "selu" in results else None, "000 answer 4 (book: SELU is a good default)")
    claim(("elu" in good) if "elu" in results else None,
          "004 answer 4 (first edition: ELU is a good default)")
    claim(("sigmoid" not in good) if "sigmoid" in results else None,
          "000 answer 4 (book: logistic is rarely used in hidden layers)")
    claim(("tanh" in good) if "tanh" in results else None,
          "002 answer 4 (tanh is suitable for hidden layers)")
    claim(t["in_range"] and s["in_range"] and m["max_abs_row_sum_minus_1"] < 1e-5,
          "000 answer 4 (book: tanh for outputs in [-1, 1], logistic for a probability, softmax "
          "for exclusive classes)")
    claim(p["in_range"] and p["exactly_0"] == 0,
          "001 activations card (softplus for outputs that must be positive)" if p["exactly_0"] == 0
          else f"001 activations card (softplus outputs are positive: {p['exactly_0']:.2%} were "
          "exactly 0 in float32)")
    return text, confirms, refutes


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
              quick=dict(n_train=1024, valid=1000, epochs=1, activations=4),
              full=dict(n_train=10000, valid=5000, epochs=3, activations=len(HIDDEN)))

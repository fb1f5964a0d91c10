"""The cost of dropout: in training, at inference, and with MC Dropout.

A 3x100 ELU net is trained on MNIST with Nadam without dropout and with dropout 0.2 and 0.5,
same seed, same batches. Two different costs are told apart:

* **per-step cost**: seconds per epoch (median over the run) and, more robustly on a busy
  machine, the median of interleaved single training steps of the two nets on the same batches;
* **convergence**: epochs and wall-clock seconds until the validation loss first reaches a
  target; for each rate the target is the worse of the two best validation losses (dropout's
  and no dropout's), so both runs reach it.

At inference, each dropout net and the plain one run the same eval-mode forward pass over the
test set (timed interleaved, median of repeats); the dropout net's eval outputs are checked to be
deterministic. MC Dropout runs that forward pass N times with dropout on (drawing a mask per
pass): its time against plain inference (medians of interleaved repeats) and its accuracy gain
are measured for several N.

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dnnlab.analysis.mc_dropout import mc_dropout_eval, mc_predict, plain_eval, plain_predict
from dnnlab.config import RunConfig, replace
from dnnlab.data import Split
from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit, resolve_device

QUESTION = ("Does dropout slow down training? Does it slow down inference (i.e., making "
            "predictions on new instances)? What about MC Dropout?")
RATES = (0.2, 0.5)
BOOK_FACTOR = 2.0


def epochs_to(history: dict[str, list[float]], target: float) -> tuple[int, float]:
    """First epoch whose validation loss is <= ``target``, and the seconds spent until then."""
    for i, v in enumerate(history["val_loss"]):
        if v <= target:
            return int(history["epoch"][i]), float(sum(history["seconds"][:i + 1]))
    return -1, float("nan")


def _timed(fn, device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


CPU = torch.device("cpu")


def interleaved_medians(fns: dict[str, callable], repeats: int, warmup: bool = True,
                        device: torch.device = CPU) -> dict[str, float]:
    """Median seconds of each function, run in turn so that load changes hit all of them."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values() if warmup else ():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


STEP_BATCHES = 16     # batches per timed slice: one short epoch of dnnlab's own trainer


def step_costs(cfg: RunConfig, data, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of one training step (batch of ``train.batch_size``) per dropout rate.

    Each timing is a one-epoch :func:`dnnlab.train.fit` over ``STEP_BATCHES`` batches, so what
    is timed is the trainer's own step (forward, backward, update), divided by the batches.
    """
    bs = cfg.train.batch_size
    n = min(len(data.train), STEP_BATCHES * bs)
    sub = dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]),
                              valid=Split(data.valid.x[:0], data.valid.y[:0]),
                              test=Split(data.test.x[:0], data.test.y[:0]))
    fns = {}
    for rate in (0.0, *RATES):
        c = replace(cfg, **{"model.dropout": rate, "train.epochs": 1, "train.progress": False,
                            "train.device": str(device), "train.monitor": "loss"})   # no valid split
        fns[rate] = lambda c=c: fit(c, sub, evaluate_test=False)
    times = interleaved_medians(fns, repeats, device=device)
    return {rate: t / math.ceil(n / bs) for rate, t in times.items()}


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone: ``numbers["per_rate"]`` (per
    dropout rate: ``target_val_loss``, ``epochs_ratio``, ``seconds_ratio``,
    ``epoch_seconds_ratio``, ``step_seconds_ratio``, ``inference_ratio``),
    ``eval_deterministic``, ``plain`` (``accuracy``) and ``mc`` (per N: ``slowdown``,
    ``per_pass``, ``accuracy``)."""
    rows, mc, plain = numbers["per_rate"], numbers["mc"], numbers["plain"]
    deterministic = numbers["eval_deterministic"]
    n10 = 10 if 10 in mc else max(mc)
    slower = {r: rows[r]["seconds_ratio"] > 1.1 for r in RATES}
    epoch_cost = max(rows[r]["epoch_seconds_ratio"] for r in RATES)
    step_cost = max(rows[r]["step_seconds_ratio"] for r in RATES)
    inf_same = all(0.8 <= rows[r]["inference_ratio"] <= 1.25 for r in RATES) and deterministic
    mc_scales = mc[n10]["slowdown"] >= 0.5 * n10
    factor_two = {r: BOOK_FACTOR / 1.5 <= rows[r]["seconds_ratio"] <= BOOK_FACTOR * 1.5 for r in RATES}
    conv = "; ".join(
        f"rate {r:g} needs {rows[r]['epochs_ratio']:.1f}x the epochs and "
        f"{rows[r]['seconds_ratio']:.1f}x the wall time of no dropout to reach validation loss "
        f"{rows[r]['target_val_loss']:.3f}"
        for r in RATES)
    if any(factor_two.values()):
        book = ("the book's factor of two fits rate " +
                " and ".join(f"{r:g}" for r in RATES if factor_two[r]))
    else:
        book = "the book's factor of two fits neither rate"
    lo, hi = (f(rows[r]["inference_ratio"] for r in RATES) for f in (min, max))
    inf_range = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}"
    joint = {(True, True): "while an epoch costs only", (True, False): "and an epoch itself costs",
             (False, True): "and an epoch costs only", (False, False): "though an epoch itself costs"}
    text = (
        f"{'Yes, through slower convergence' if any(slower.values()) else 'Not here'}: {conv}, "
        f"{joint[any(slower.values()), epoch_cost < 1.5]} up to "
        f"{epoch_cost:.2f}x (a training step {step_cost:.2f}x), so {book}; "
        f"inference in eval mode costs {inf_range}x (the same forward pass"
        f"{', deterministic' if deterministic else ', NOT deterministic'}); MC Dropout with "
        f"N={n10} costs {mc[n10]['slowdown']:.1f}x plain inference (each pass "
        f"{mc[n10]['per_pass']:.2f}x a plain one, dropout masks being drawn) for "
        f"{100 * (mc[n10]['accuracy'] - plain['accuracy']):+.2f} points of test accuracy "
        f"({mc[n10]['accuracy']:.2%} vs {plain['accuracy']:.2%}).")

    confirms, refutes = [], []
    book_ok = any(slower.values()) and inf_same and mc_scales
    (confirms if book_ok else refutes).extend(
        ["000 answer 7 (book: slower training, no inference cost, MC Dropout ~N times slower)",
         "003 answer 7 (book)"])
    (confirms if any(factor_two.values()) else refutes).append(
        "000 answer 7 (book: training slowed roughly by a factor of two)")
    (refutes if any(slower.values()) else confirms).append(
        "001 answer 7 (learner: dropout speeds up training)")
    (confirms if inf_same and mc_scales else refutes).append(
        "001 answer 7 (learner: no inference cost; MC Dropout pays for its K samples)")
    (confirms if any(slower.values()) and inf_same else refutes).extend(
        ["002 answer 7 (slower training, no effect on prediction speed)",
         "004 answer 7 (slower convergence, no impact on inference)"])
    return text, confirms, refutes


def measure(source: DataSource, st: dict, seed: int) -> Measurement:
    data = source.load(st["n_train"], st["valid"], seed)
    cfg = topic_config("dropout-cost", seed, st["epochs"], **{"model.depth": 3})
    device = resolve_device(cfg.train.device)     # where fit puts the models
    x_test, y_test = data.test.tensors(device)

    runs = {rate: fit(replace(cfg, **{"model.dropout": rate}), data) for rate in (0.0, *RATES)}
    best = {r: min(res.history["val_loss"]) for r, res in runs.items()}
    targets = {r: max(best[0.0], best[r]) for r in RATES}
    per_epoch = {r: res.seconds_per_epoch for r, res in runs.items()}
    steps = step_costs(cfg, data, st["step_reps"], device)

    # inference: the same eval-mode forward pass, with and without dropout layers
    models = {r: res.model.eval() for r, res in runs.items()}
    inference = interleaved_medians({r: (lambda m=m: plain_predict(m, x_test)) for r, m in models.items()},
                                    st["inf_reps"], device=device)
    mc_rate = min(RATES, key=lambda r: best[r])        # the better-trained dropout net
    mc_model = models[mc_rate]
    deterministic = bool(torch.equal(plain_predict(mc_model, x_test), plain_predict(mc_model, x_test)))
    plain = plain_eval(mc_model, x_test, y_test)
    mc_seconds = interleaved_medians(
        {n: (lambda n=n: mc_predict(mc_model, x_test, n)) for n in st["mc"]}, 3, warmup=False,
        device=device)
    mc = {}
    for n in st["mc"]:
        r = mc_dropout_eval(mc_model, x_test, y_test, n_samples=n, seed=seed)
        slowdown = mc_seconds[n] / inference[mc_rate]
        mc[n] = {**r, "seconds": mc_seconds[n], "slowdown": slowdown, "per_pass": slowdown / n}

    rows = {}
    for r in RATES:
        e0, s0 = epochs_to(runs[0.0].history, targets[r])
        e, s = epochs_to(runs[r].history, targets[r])
        rows[r] = {"best_val_loss": best[r], "target_val_loss": targets[r],
                   "epochs_to_target": e, "seconds_to_target": s,
                   "no_dropout_epochs_to_target": e0, "no_dropout_seconds_to_target": s0,
                   "epochs_ratio": e / e0, "seconds_ratio": s / s0,
                   "epoch_seconds_ratio": per_epoch[r] / per_epoch[0.0],
                   "step_seconds_ratio": steps[r] / steps[0.0],
                   "inference_ratio": inference[r] / inference[0.0]}
    n10 = 10 if 10 in mc else max(mc)
    numbers = {
        "train_images": len(data.train), "epochs": st["epochs"],
        "no_dropout_best_val_loss": best[0.0],
        **{f"rate {r:g}: {k}": v for r in RATES for k, v in rows[r].items()
           if k in ("epochs_ratio", "seconds_ratio", "epoch_seconds_ratio", "inference_ratio")},
        "mc_rate": mc_rate, f"mc_{n10}_slowdown": mc[n10]["slowdown"],
        f"mc_{n10}_accuracy_gain": mc[n10]["accuracy"] - plain["accuracy"],
        "eval_deterministic": deterministic,
        "per_rate": rows, "seconds_per_epoch": per_epoch, "step_seconds": steps,
        "inference_seconds": inference, "plain": plain, "mc": mc,
        "histories": {r: {k: res.history[k] for k in ("epoch", "val_loss", "seconds")}
                      for r, res in runs.items()},
    }

    return Measurement(numbers)


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show."""
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax_ep, ax_t, ax_inf = fig.subplots(1, 3)
    colours = {0.0: "tab:blue", RATES[0]: "tab:orange", RATES[1]: "tab:red"}
    for r, h in n["histories"].items():
        label = (f"{'no dropout' if r == 0 else f'dropout {r:g}'} "
                 f"({n['seconds_per_epoch'][r]:.2f} s/epoch)")
        ax_ep.plot(h["epoch"], h["val_loss"], "o-", color=colours[r], label=label, markersize=3)
        ax_t.plot(np.cumsum(h["seconds"]), h["val_loss"], "o-", color=colours[r], label=label,
                  markersize=3)
    for ax in (ax_ep, ax_t):
        for r in RATES:
            ax.axhline(n["per_rate"][r]["target_val_loss"], color=colours[r], linestyle=":",
                       linewidth=1, label=f"target for dropout {r:g} vs none")
        ax.set_ylabel("validation loss")
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    ax_ep.set(xlabel="epoch", title="Convergence in epochs")
    ax_ep.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_t.set(xlabel="wall-clock seconds", title="Convergence in wall time")

    mc = n["mc"]
    names = ["plain,\nno drop.", f"plain,\ndrop. {n['mc_rate']:g}"] + [f"MC\nN={k}" for k in mc]
    secs = [n["inference_seconds"][0.0], n["inference_seconds"][n["mc_rate"]]] + \
        [m["seconds"] for m in mc.values()]
    base = n["inference_seconds"][n["mc_rate"]]   # ratios against the dropout net's plain pass
    xs = range(len(names))
    ax_inf.bar(xs, [1000 * s for s in secs], color=["tab:blue", "tab:orange"] + ["tab:purple"] * len(mc))
    accs = [None, n["plain"]["accuracy"]] + [m["accuracy"] for m in mc.values()]
    for x, s, a in zip(xs, secs, accs):
        text = f"{s / base:.1f}x" + (f"\n{100 * a:.2f}%" if a is not None else "")
        ax_inf.annotate(text, (x, 1000 * s), ha="center", va="bottom", fontsize=7)
    ax_inf.set_xticks(list(xs), names, fontsize=8)
    ax_inf.set_yscale("log")
    ax_inf.set_ylim(top=1000 * max(secs) * 4)
    ax_inf.set(ylabel=f"ms to predict the test set (log); x = vs plain dropout {n['mc_rate']:g}",
               title="Inference: time (x plain pass) and test accuracy")
    ax_inf.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"The cost of dropout: 3x100 ELU MLP, Nadam, {n['data']}")
    return fig


TOPIC = Topic(name="dropout-cost", question=QUESTION, measure=measure, verdict=verdict,
              figure=figure,
              quick=dict(n_train=1200, valid=500, epochs=4, mc=[1, 10], step_reps=10, inf_reps=3),
              full=dict(n_train=8000, valid=5000, epochs=12, mc=[1, 2, 5, 10, 20, 50], step_reps=40,
                        inf_reps=10))

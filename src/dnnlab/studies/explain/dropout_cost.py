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
from dnnlab.analysis.stats import mean_std, pm
from dnnlab.analysis.verdict import NOT_SETTLED, REFUTED, SUPPORTED, differs, every_seed, same
from dnnlab.config import RunConfig, replace
from dnnlab.data import Split
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit, resolve_device

QUESTION = ("Does dropout slow down training? Does it slow down inference (i.e., making "
            "predictions on new instances)? What about MC Dropout?")
RATES = (0.2, 0.5)


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


def interleaved_times(fns: dict[str, callable], repeats: int, warmup: bool = True,
                      device: torch.device = CPU) -> dict[str, list[float]]:
    """Seconds of each function at each repeat, run in turn so that load changes hit all of
    them (repeat ``i`` of each is a pair: the timing claims are paired by repeat)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values() if warmup else ():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_timed(fn, device))
    return times


def interleaved_medians(fns: dict[str, callable], repeats: int, warmup: bool = True,
                        device: torch.device = CPU) -> dict[str, float]:
    """Median seconds of each function over :func:`interleaved_times`."""
    return {k: statistics.median(v)
            for k, v in interleaved_times(fns, repeats, warmup, device).items()}


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


SAME_SPEED = 1.10   # "as fast": the claim's resolution, a ratio of eval-pass times within 10%
SLOWER = ("000 answer 7 (book: dropout slows training down)", "003 answer 7 (book)",
          "002 answer 7 (slower training, no effect on prediction speed)",
          "004 answer 7 (slower convergence, no impact on inference)")
FASTER = ("001 answer 7 (learner: dropout speeds up training)",)
NO_COST = ("000 answer 7 (book: no inference cost)",
           "001 answer 7 (learner: no inference cost; MC Dropout pays for its K samples)",
           "002 answer 7 (slower training, no effect on prediction speed)",
           "004 answer 7 (slower convergence, no impact on inference)")
MC_COST = ("000 answer 7 (book: MC Dropout ~N times slower)",
           "001 answer 7 (learner: no inference cost; MC Dropout pays for its K samples)")


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed ``per_rate``, per
    dropout rate, ``epochs_to_target`` and ``no_dropout_epochs_to_target``;
    ``inference_times``, per rate, the interleaved repeated timings of the same eval pass;
    ``eval_deterministic``; ``mc``, per N, ``slowdown``; ``plain`` and ``mc`` accuracies).

    The timing claim compares the dropout net's eval pass with the plain net's, paired by
    interleaved repeat over every seed's repeats: supported when the whole 95% interval of the
    log ratio lies within +-log(:data:`SAME_SPEED`). The width of that interval is the machine's
    noise, measured in the same run; on a machine too noisy to tell it is wider than the claim's
    resolution and the answer is "not settled" (a floor that grew with the noise would make a
    busy machine the easiest place to "confirm" no cost)."""
    rate = max(RATES)
    ep = [r["per_rate"][rate]["epochs_to_target"] for r in runs]
    ep0 = [r["per_rate"][rate]["no_dropout_epochs_to_target"] for r in runs]
    slower = differs(f"dropout {rate:g} slows training: it needs more epochs than none to reach the "
                     "same validation loss", [e if e > 0 else None for e in ep],
                     [e if e > 0 else None for e in ep0], larger=True, paired=True,
                     names=(f"dropout {rate:g}", "none"), unit="epochs", asserted_by=SLOWER,
                     denied_by=FASTER)
    plain_t = [math.log(t) for r in runs for t in r["inference_times"][0.0]]
    drop_t = [math.log(t) for r in runs for t in r["inference_times"][rate]]
    no_cost = same(f"a net with dropout {rate:g} predicts (eval mode) as fast as one without "
                   f"(within {SAME_SPEED - 1:.0%}; log seconds, paired by interleaved repeat)",
                   drop_t, plain_t, paired=True, margin=math.log(SAME_SPEED),
                   names=(f"dropout {rate:g}", "none"), unit="log s", asserted_by=NO_COST,
                   samples="interleaved repeats")
    deterministic = every_seed("in eval mode the dropout net's predictions are deterministic",
                               [r["eval_deterministic"] for r in runs], name="deterministic",
                               asserted_by=NO_COST)
    n10 = 10 if 10 in runs[0]["mc"] else max(runs[0]["mc"])
    mc = differs(f"MC Dropout with N={n10} passes costs roughly N plain passes (at least N/2)",
                 [r["mc"][n10]["slowdown"] for r in runs], n10 / 2, larger=True,
                 names=("slowdown", "N/2"), unit="x", asserted_by=MC_COST)
    head = {SUPPORTED: "Yes, through slower convergence", REFUTED: "Not here",
            NOT_SETTLED: "Not settled here"}[slower.outcome]
    head += {SUPPORTED: "; not at inference in eval mode", REFUTED: "; inference costs more",
             NOT_SETTLED: "; whether inference costs more is not settled on this machine"
             }[no_cost.outcome]
    gain = [r["mc"][n10]["accuracy"] - r["plain"]["accuracy"] for r in runs]
    ratio = [r["per_rate"][rate]["seconds_ratio"] for r in runs]
    detail = (f"Wall time to the target {statistics.fmean(ratio):.2f}x that of no dropout (mean over "
              f"{len(runs)} seeds); MC Dropout N={n10} changes test accuracy by "
              f"{pm(*mean_std(gain))} points.")
    return Answer(head, (slower, no_cost, deterministic, mc), detail)


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
    inference_times = interleaved_times(
        {r: (lambda m=m: plain_predict(m, x_test)) for r, m in models.items()}, st["inf_reps"],
        device=device)
    inference = {r: statistics.median(t) for r, t in inference_times.items()}
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
        "inference_seconds": inference, "inference_times": inference_times, "plain": plain,
        "mc": mc,
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
              quick=dict(seeds=3, n_train=1200, valid=500, epochs=4, mc=[1, 10], step_reps=10,
                         inf_reps=10),
              full=dict(seeds=5, n_train=8000, valid=5000, epochs=12, mc=[1, 2, 5, 10, 20, 50], step_reps=40,
                        inf_reps=20))

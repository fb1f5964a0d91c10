"""Momentum too close to 1: what SGD with momentum 0.99999 does, against 0.9.

*An ill-conditioned quadratic* f(x, y) = (x^2 + 100 y^2) / 2, minimized from (-10, 1) by
``torch.optim.SGD`` (lr 0.01) with each momentum; a hand loop because the experiment is the
trajectory itself. Measured along the long axis x: the overshoot (how far past the minimum the
point travels, as a fraction of the starting distance), the number of times it crosses the
minimum by more than 0.1% of that distance (oscillations), the largest single step, and the
steps until f stays below 1e-6 f(start).

*A real net.* A 3x100 ELU net trained on MNIST with SGD (lr 0.01) and each momentum through
:func:`dnnlab.train.fit` (restore-best off, so the curves and the final accuracy show where the
momentum carried the weights): the loss curves, how many epochs the training loss went up, and
the final test accuracy.

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dnnlab.analysis.stats import mean_std, pm
from dnnlab.analysis.verdict import SUPPORTED, differs, every_seed
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit

QUESTION = ("What may happen if you set the momentum hyperparameter too close to 1 (e.g., 0.99999) "
            "when using an SGD optimizer?")
MOMENTA = (0.9, 0.99999)
CURVATURE = (1.0, 100.0)      # condition number 100
START = (-10.0, 1.0)
LR = 0.01
CONVERGED = 1e-6              # f below this fraction of f(start), for good


def quadratic_run(momentum: float, steps: int, lr: float = LR) -> dict:
    """SGD with ``momentum`` on the quadratic; the trajectory and what it did."""
    p = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(CURVATURE, dtype=torch.float64)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
    path, losses = [p.detach().clone()], []
    for _ in range(steps):
        loss = 0.5 * (h * p * p).sum()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        path.append(p.detach().clone())
    losses.append(float(0.5 * (h * p.detach() ** 2).sum()))
    traj = torch.stack(path)
    x = traj[:, 0]
    sign0 = math.copysign(1.0, START[0])
    swing = x[x.abs() >= 1e-3 * abs(START[0])]   # ignore jitter once it has settled
    crossings = int((torch.sign(swing[1:]) != torch.sign(swing[:-1])).sum())
    overshoot = float((-sign0 * x).clamp(min=0).max()) / abs(START[0])
    below = [l < CONVERGED * losses[0] for l in losses]
    converged_at = next((i for i in range(len(below)) if all(below[i:])), None)
    step_sizes = (traj[1:] - traj[:-1]).norm(dim=1)
    return {"trajectory": traj.tolist(), "loss": losses, "overshoot": overshoot,
            "crossings": crossings, "converged_at_step": converged_at,
            "final_loss_ratio": losses[-1] / losses[0], "max_step": float(step_sizes.max()),
            "max_distance_ratio": float(traj.norm(dim=1).max() / traj[0].norm())}


BOOK = ("000 answer 5 (book)", "003 answer 5 (book)", "004 answer 5 (first edition)",
        "002 answer 5 (oscillations, overshooting, slow convergence)")
EXPLODE = ("001 answer 5 (learner: the sum of past gradients makes the rate of change explode)",)


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed ``quadratic``, per
    momentum as a string, ``overshoot``, ``crossings``, ``converged_at_step`` (None: not
    converged), ``max_distance_ratio``; ``net``, per momentum, ``status``, ``final_train_loss``,
    ``test_accuracy``; ``quadratic_steps``, ``net_epochs``). The quadratic is deterministic
    (every seed measures the same trajectory); the net's seeds carry the noise."""
    lo_key, hi_key = (str(m) for m in MOMENTA)

    def quad_worse(r: dict) -> bool:
        lo, hi = r["quadratic"][lo_key], r["quadratic"][hi_key]
        slower = hi["converged_at_step"] is None or (
            lo["converged_at_step"] is not None and hi["converged_at_step"] > lo["converged_at_step"])
        return hi["overshoot"] > lo["overshoot"] and hi["crossings"] > lo["crossings"] and slower

    quad = every_seed(f"on f = (x^2 + 100 y^2)/2 from {START} with lr {LR:g}, momentum 0.99999 "
                      "overshoots the minimum farther, crosses it more often and converges more "
                      "slowly than 0.9", [quad_worse(r) for r in runs], name="worse on the quadratic",
                      asserted_by=BOOK)
    final = {m: [r["net"][m]["final_train_loss"] for r in runs] for m in (lo_key, hi_key)}
    net = differs(f"on a 3x100 net on {runs[0]['data']} (SGD lr {LR:g}) 0.99999 ends with a higher "
                  "training loss than 0.9", final[hi_key], final[lo_key], larger=True, paired=True,
                  names=("0.99999", "0.9"), asserted_by=BOOK)
    exploded = every_seed("the momentum makes the steps explode (the point travels over 1.5x "
                          "farther from the minimum than it started, or the net diverges)",
                          [r["quadratic"][hi_key]["max_distance_ratio"] > 1.5
                           or r["net"][hi_key]["status"] == "diverged"
                           or not math.isfinite(r["net"][hi_key]["final_train_loss"]) for r in runs],
                          name="exploded", asserted_by=EXPLODE)
    head = {(SUPPORTED, SUPPORTED): "It overshoots and oscillates instead of converging",
            }.get((quad.outcome, net.outcome),
                  "Mixed or not settled: 0.99999 is worse than 0.9 on the quadratic"
                  if quad.outcome == SUPPORTED else "Not shown here")
    lo, hi = runs[0]["quadratic"][lo_key], runs[0]["quadratic"][hi_key]
    acc = {m: [r["net"][m]["test_accuracy"] for r in runs] for m in (lo_key, hi_key)}
    detail = (f"Quadratic: 0.9 overshoots by {lo['overshoot']:.0%} of the start distance and "
              f"crosses the minimum {lo['crossings']} times, 0.99999 by {hi['overshoot']:.0%} and "
              f"{hi['crossings']} times in {runs[0]['quadratic_steps']} steps; net test accuracy "
              f"{pm(*mean_std(acc[lo_key]), digits=1)} % with 0.9 vs "
              f"{pm(*mean_std(acc[hi_key]), digits=1)} % with 0.99999 after "
              f"{runs[0]['net_epochs']} epochs.")
    return Answer(head, (quad, net, exploded), detail)


def measure(source: DataSource, sizes: dict, seed: int) -> Measurement:
    steps = sizes["steps"]
    quad = {m: quadratic_run(m, steps) for m in MOMENTA}

    epochs = sizes["epochs"]
    data = source.load(sizes["n_train"], sizes["valid"], seed)
    net: dict[float, dict] = {}
    for m in MOMENTA:
        res = fit(topic_config("momentum", seed, epochs, **{
            "model.depth": 3, "optim.name": "sgd", "optim.lr": LR, "optim.momentum": m,
            "train.restore_best": False}), data)
        loss = res.history["loss"]
        net[m] = {"status": res.status, "train_loss": loss, "val_loss": res.history["val_loss"],
                  "epochs_loss_went_up": sum(b > a for a, b in zip(loss, loss[1:])),
                  "final_train_loss": loss[-1] if loss else math.nan,
                  "min_train_loss": min(loss) if loss else math.nan,
                  "test_accuracy": res.test.get("test_accuracy", math.nan)}

    lo, hi = quad[MOMENTA[0]], quad[MOMENTA[1]]
    nlo, nhi = net[MOMENTA[0]], net[MOMENTA[1]]
    numbers = {"quadratic_steps": steps, "overshoot_0.9": lo["overshoot"],
               "overshoot_0.99999": hi["overshoot"], "crossings_0.9": lo["crossings"],
               "crossings_0.99999": hi["crossings"],
               # -1: not converged within the steps run
               "converged_at_step_0.9": _or_minus_1(lo["converged_at_step"]),
               "converged_at_step_0.99999": _or_minus_1(hi["converged_at_step"]),
               "net_final_train_loss_0.9": nlo["final_train_loss"],
               "net_final_train_loss_0.99999": nhi["final_train_loss"],
               "quadratic": {str(m): {k: v for k, v in q.items() if k not in ("trajectory", "loss")}
                             for m, q in quad.items()},
               "net": {str(m): v for m, v in net.items()}, "net_epochs": epochs}
    return Measurement(numbers, {"quad": quad})


def _or_minus_1(step: int | None) -> int:
    return -1 if step is None else step


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show.
    ``drawing["quad"]``: per momentum, :func:`quadratic_run` with its trajectory and losses."""
    quad = drawing["quad"]
    net = {float(m): r for m, r in n["net"].items()}
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    ax_t, ax_f, ax_n = fig.subplots(1, 3)
    colours = dict(zip(MOMENTA, ["tab:blue", "tab:red"]))
    xs, ys = np.meshgrid(np.linspace(-11, 11, 200), np.linspace(-1.3, 1.3, 200))
    ax_t.contour(xs, ys, 0.5 * (CURVATURE[0] * xs ** 2 + CURVATURE[1] * ys ** 2),
                 levels=np.geomspace(0.05, 80, 12), colors="0.75", linewidths=0.7)
    shown = 300
    for m, q in quad.items():
        t = np.array(q["trajectory"])[: shown + 1]
        ax_t.plot(t[:, 0], t[:, 1], "-", color=colours[m], linewidth=0.9, alpha=0.85,
                  label=f"momentum {m:g}")
    ax_t.plot(*START, "ko", label="start")
    ax_t.plot(0, 0, "k*", markersize=10, label="minimum")
    ax_t.set(xlabel="x (curvature 1)", ylabel="y (curvature 100)",
             title=f"Trajectories, first {shown} steps (lr {LR:g})")
    ax_t.legend(frameon=False, fontsize=8, loc="lower right")
    for m, q in quad.items():
        ax_f.plot(np.array(q["loss"]), color=colours[m], linewidth=1,
                  label=f"momentum {m:g}")
    ax_f.axhline(CONVERGED * quad[MOMENTA[0]]["loss"][0], color="0.4", linestyle=":",
                 label="converged (1e-6 x start)")
    f0 = quad[MOMENTA[0]]["loss"][0]
    ax_f.set(yscale="log", xlabel="step", ylabel="f(x, y)", title="Quadratic: loss per step",
             ylim=(CONVERGED * f0 * 1e-4, f0 * 10))
    ax_f.legend(frameon=False, fontsize=8)
    ax_f.grid(True, alpha=0.3)
    for m, r in net.items():
        epochs = np.arange(1, len(r["train_loss"]) + 1)
        ax_n.plot(epochs, r["train_loss"], "--", color=colours[m], label=f"{m:g} train")
        ax_n.plot(epochs, r["val_loss"], "-", color=colours[m], label=f"{m:g} valid")
    ax_n.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_n.set(xlabel="epoch", ylabel="cross-entropy", yscale="log",
             title=f"3x100 ELU net on {n['data']}, SGD lr {LR:g}")
    ax_n.legend(frameon=False, fontsize=8)
    ax_n.grid(True, alpha=0.3)
    fig.suptitle("SGD momentum 0.9 vs 0.99999")
    return fig


TOPIC = Topic(name="momentum", question=QUESTION, measure=measure, verdict=verdict, figure=figure,
              quick=dict(seeds=5, steps=1000, n_train=1024, valid=1000, epochs=4),
              full=dict(seeds=8, steps=3000, n_train=3200, valid=2000, epochs=12))

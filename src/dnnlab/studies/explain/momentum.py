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

from dnnlab.studies.explain.base import DataSource, Measurement, Topic, topic_config
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


def verdict(numbers: dict) -> tuple[str, list[str], list[str]]:
    """(verdict, confirms, refutes) from the measurements alone: ``numbers["quadratic"]`` (per
    momentum, as a string: ``overshoot``, ``crossings``, ``converged_at_step`` (None: not
    converged), ``final_loss_ratio``, ``max_distance_ratio``), ``quadratic_steps``,
    ``numbers["net"]`` (per momentum: ``status``, ``epochs_loss_went_up``, ``final_train_loss``,
    ``min_train_loss``, ``test_accuracy``) and ``net_epochs``."""
    lo, hi = (numbers["quadratic"][str(m)] for m in MOMENTA)
    nlo, nhi = (numbers["net"][str(m)] for m in MOMENTA)
    steps, epochs = numbers["quadratic_steps"], numbers["net_epochs"]

    def conv(q: dict) -> str:
        if q["converged_at_step"] is None:
            return (f"has not converged after {steps} steps "
                    f"(f still {q['final_loss_ratio']:.1e} x start)")
        return f"converges in {q['converged_at_step']} steps"

    slower = hi["converged_at_step"] is None or (
        lo["converged_at_step"] is not None and hi["converged_at_step"] > lo["converged_at_step"])
    worse = hi["overshoot"] > lo["overshoot"] and hi["crossings"] > lo["crossings"] and slower
    net_worse = nhi["final_train_loss"] > nlo["final_train_loss"]
    if worse and net_worse:
        head = "It overshoots and oscillates instead of converging"
    elif worse:
        head = "Mixed result (0.99999 is worse than 0.9 on the quadratic, not on the net)"
    elif net_worse:
        head = "Mixed result (0.99999 is worse than 0.9 on the net, not on the quadratic)"
    else:
        head = ("Not here: 0.99999 is no worse than 0.9, neither on the quadratic (more overshoot, "
                "more crossings and slower convergence together) nor on the net (final training "
                "loss)")
    text = (
        f"{head}: on f = (x^2 + 100 y^2)/2 from {START} with lr {LR:g}, momentum 0.9 overshoots the "
        f"minimum by {lo['overshoot']:.0%} of the start distance, crosses it {lo['crossings']} times "
        f"and {conv(lo)}, while 0.99999 overshoots by {hi['overshoot']:.0%}, crosses it "
        f"{hi['crossings']} times and {conv(hi)}; on a 3x100 net on {numbers['data']} "
        f"(SGD lr {LR:g}, {epochs} "
        f"epochs) the training loss went up in {nlo['epochs_loss_went_up']} of {epochs - 1} epochs "
        f"with 0.9 (final {nlo['final_train_loss']:.3f}, test accuracy {nlo['test_accuracy']:.1%}) "
        f"and in {nhi['epochs_loss_went_up']} with 0.99999 (final {nhi['final_train_loss']:.3f}, "
        f"lowest {nhi['min_train_loss']:.3f}, test accuracy {nhi['test_accuracy']:.1%}).")
    exploded = (hi["max_distance_ratio"] > 1.5 or nhi["status"] == "diverged"
                or not math.isfinite(nhi["final_train_loss"]))
    confirms, refutes = [], []
    book = ["000 answer 5 (book)", "003 answer 5 (book)", "004 answer 5 (first edition)",
            "002 answer 5 (oscillations, overshooting, slow convergence)"]
    (confirms if worse and net_worse else refutes).extend(book)
    (confirms if exploded else refutes).append(
        "001 answer 5 (learner: the sum of past gradients makes the rate of change explode)")
    return text, confirms, refutes


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
              quick=dict(steps=1000, n_train=1024, valid=1000, epochs=4),
              full=dict(steps=3000, n_train=3200, valid=2000, epochs=12))

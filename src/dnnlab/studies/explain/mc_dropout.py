"""MC Dropout on a trained net: better predictions, better calibration, a sense of the unknown?

A 3x100 ELU net with dropout 0.3 is trained on MNIST (Nadam), then, without retraining, its
test set is predicted by plain inference and by MC Dropout with N = 1 ... 100 passes. One set of
100 seeded passes is drawn and the estimate for N is the mean of its first N, so the curve over N
is one experiment growing, not seven unrelated draws. Measured for each: accuracy, expected
calibration error (15 bins), NLL, and the mean predictive entropy.

Out-of-distribution inputs are Fashion-MNIST test images fed to the MNIST model when the
Fashion-MNIST files are found (``$DNNLAB_DATA_DIR``, the cache; nothing is downloaded); if they
are not, MNIST test images with their pixels shuffled by one fixed permutation stand in (same
intensities, no digit shape), and ``numbers["ood_source"]`` says which was used. On a user's data
(``--config``) the stand-in is always the test rows with their features shuffled the same way. The entropy of
OOD vs in-distribution predictions is compared for plain and MC inference, with the AUROC of
telling them apart by entropy (and, for MC, by the mutual information between the passes).

The verdict is :func:`verdict`, a pure function of the measurements.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from dnnlab.analysis.mc_dropout import (
    expected_calibration_error,
    mc_predict,
    mutual_information,
    plain_predict,
    predictive_entropy,
)
from dnnlab.analysis.stats import mean_std, pm
from dnnlab.analysis.verdict import NOT_SETTLED, REFUTED, SUPPORTED, differs
from dnnlab.data import load_dataset
from dnnlab.errors import DataError
from dnnlab.studies.explain.base import Answer, DataSource, Measurement, Topic, topic_config
from dnnlab.train import fit, resolve_device
from dnnlab.train.callbacks import Callback, Logs, Stops
from dnnlab.train.driver import Trainer

QUESTION = ("Without retraining, can MC Dropout give better accuracy (and better calibrated, more "
            "honest uncertainty) than plain inference?")
RATE = 0.3
STAGE_N = 20          # MC passes when checking calibration along training
FASHION = "Fashion-MNIST test images"
SHUFFLED = "pixel-shuffled MNIST test images (Fashion-MNIST not found)"
SHUFFLED_OWN = "feature-shuffled test rows of {}"


MNIST = DataSource()


def ood_inputs(x_in: torch.Tensor, n: int, seed: int,
               source: DataSource = MNIST) -> tuple[torch.Tensor, str]:
    """``n`` out-of-distribution inputs for a model trained on ``source``, and what they are:
    Fashion-MNIST for MNIST when its files are here, else ``x_in``'s features shuffled."""
    if source.data is None:
        try:
            fashion = load_dataset("fashion-mnist", download=False, progress=False)
            return torch.as_tensor(fashion.test.x[:n]), FASHION
        except DataError:
            pass
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x_in.shape[1], generator=g)
    what = SHUFFLED if source.data is None else SHUFFLED_OWN.format(source.label)
    return x_in[:n][:, perm].contiguous(), what


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U)."""
    s = np.concatenate([negatives, positives]).astype(np.float64)
    ranks = np.empty(len(s))
    ranks[s.argsort(kind="mergesort")] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inv, weights=ranks) / counts)[inv]        # average ranks of ties
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _scores(p: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"accuracy": float((p.argmax(1) == y).float().mean()),
            "ece": expected_calibration_error(p, y),
            "nll": float(-torch.log(p[torch.arange(len(y)), y].clamp_min(1e-12)).mean()),
            "entropy": float(predictive_entropy(p).mean())}


class StageProbe(Callback):
    """A fit callback: plain vs MC Dropout (N=``n``) on the test set at the given epochs."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, epochs: list[int], n: int, seed: int):
        self.x, self.y, self.epochs, self.n, self.seed = x, y, set(epochs), n, seed
        self.rows: dict[int, dict[str, dict[str, float]]] = {}

    def on_epoch_end(self, run: Trainer, epoch: int, logs: Logs) -> Stops:
        if epoch not in self.epochs:
            return None
        model = run.model(0)
        self.rows[epoch] = {
            "plain": _scores(plain_predict(model, self.x), self.y),
            "mc": _scores(mc_predict(model, self.x, self.n, seed=self.seed).mean(0), self.y)}
        return None


def n_to_level(curve: dict[int, dict]) -> int:
    """The smallest N whose MC accuracy is within 0.1 point of the largest N's."""
    top = curve[max(curve)]
    return min(n for n in curve if curve[n]["accuracy"] >= top["accuracy"] - 0.001)


def verdict(runs: list[dict]) -> Answer:
    """The answer from the numbers measured at each seed (``runs``: per seed ``plain`` and
    ``mc`` (per N) with ``accuracy``, ``ece``, ``nll``; ``auroc``; ``n_max``; ``ood_source``),
    each claim paired by seed (plain and MC read the same trained model)."""
    n_max = runs[0]["n_max"]
    n10 = 10 if 10 in runs[0]["mc"] else n_max

    def mc(n: int, key: str) -> list[float]:
        return [r["mc"][n][key] for r in runs]

    def plain(key: str) -> list[float]:
        return [r["plain"][key] for r in runs]

    names = ("MC Dropout", "plain")
    nll = differs(f"MC Dropout (N={n_max}) predicts better than plain inference (lower test NLL)",
                  mc(n_max, "nll"), plain("nll"), larger=False, paired=True, names=names,
                  asserted_by=("000 answer 7 (book: 10 or more MC passes give better predictions, "
                               "judged by test NLL)",))
    acc = differs(f"MC Dropout (N={n10}) is more accurate than plain inference, without retraining",
                  mc(n10, "accuracy"), plain("accuracy"), larger=True, paired=True, names=names,
                  unit="pts", scale=100,
                  asserted_by=("002 exercise 8e (better accuracy with MC Dropout, without "
                               "retraining)",))
    ece = differs(f"MC Dropout (N={n_max}) is better calibrated than plain inference (lower ECE)",
                  mc(n_max, "ece"), plain("ece"), larger=False, paired=True, names=names,
                  unit="pts", scale=100,
                  asserted_by=("002 answer 7 (MC Dropout improves model calibration)",))
    ood = differs(f"MC Dropout tells {runs[0]['ood_source']} from the test set better than plain "
                  "inference (AUROC of its entropy or mutual information vs plain entropy)",
                  [max(r["auroc"]["mc_entropy"], r["auroc"]["mc_mutual_information"]) for r in runs],
                  [r["auroc"]["plain_entropy"] for r in runs], larger=True, paired=True,
                  names=names, asserted_by=("002 answer 7 (MC Dropout estimates uncertainty)",))
    word = {SUPPORTED: "yes", REFUTED: "no", NOT_SETTLED: "not settled"}
    head = (f"{word[acc.outcome].capitalize()} for accuracy, {word[ece.outcome]} for calibration, "
            f"{word[nll.outcome]} for NLL here")
    gain = [a - b for a, b in zip(mc(n_max, "accuracy"), plain("accuracy"))]
    return Answer(head, (nll, acc, ece, ood),
                  f"With N={n_max} passes MC Dropout changes test accuracy by "
                  f"{pm(*mean_std(gain))} points (mean ± std over {len(runs)} seeds).")


def measure(source: DataSource, st: dict, seed: int) -> Measurement:
    data = source.load(st["n_train"], st["valid"], seed)
    cfg = topic_config("mc-dropout", seed, st["epochs"], **{
        "model.depth": 3, "model.dropout": RATE, "train.restore_best": False})
    device = resolve_device(cfg.train.device)     # where fit puts the model
    x = torch.as_tensor(data.test.x[:st["n_test"]]).to(device)
    y = torch.as_tensor(data.test.y[:st["n_test"]]).to(device)
    x_ood, ood_source = ood_inputs(torch.as_tensor(data.test.x), st["n_ood"], seed, source)
    x_ood = x_ood.to(device)
    probe = StageProbe(x, y, st["stages"], STAGE_N, seed)
    model = fit(cfg, data, callbacks=[probe]).model

    n_max = max(st["ns"])
    plain, plain_ood = plain_predict(model, x), plain_predict(model, x_ood)
    samples = mc_predict(model, x, n_max, seed=seed)
    samples_ood = mc_predict(model, x_ood, n_max, seed=seed + 1)
    base = _scores(plain, y)
    base["entropy_ood"] = float(predictive_entropy(plain_ood).mean())
    curve = {}
    for n in st["ns"]:
        row = _scores(samples[:n].mean(0), y)
        row["entropy_ood"] = float(predictive_entropy(samples_ood[:n]).mean())
        curve[n] = row

    h_in, h_ood = predictive_entropy(samples), predictive_entropy(samples_ood)
    hp_in, hp_ood = _np(predictive_entropy(plain)), _np(predictive_entropy(plain_ood))
    auc = {"plain_entropy": auroc(hp_in, hp_ood),
           "mc_entropy": auroc(_np(h_in), _np(h_ood)),
           "mc_mutual_information": auroc(_np(mutual_information(samples)),
                                          _np(mutual_information(samples_ood)))}
    top = curve[n_max]
    numbers = {
        "train_images": len(data.train), "test_images": len(y), "ood_images": len(x_ood),
        "ood_source": ood_source, "dropout": RATE, "n_max": n_max,
        "plain_accuracy": base["accuracy"], "mc_accuracy": top["accuracy"],
        "accuracy_gain": top["accuracy"] - base["accuracy"],
        "mc_1_accuracy": curve[1]["accuracy"], "n_to_level": n_to_level(curve),
        "plain_ece": base["ece"], "mc_ece": top["ece"], "plain_nll": base["nll"], "mc_nll": top["nll"],
        "entropy_in": top["entropy"], "entropy_ood": top["entropy_ood"],
        "plain_entropy_in": base["entropy"], "plain_entropy_ood": base["entropy_ood"],
        "auroc": auc, "plain": base, "mc": curve, "stages": probe.rows,
        "mc_better_calibrated_at_epochs": [e for e, r in sorted(probe.rows.items())
                                           if r["mc"]["ece"] < r["plain"]["ece"]],
    }
    return Measurement(numbers, {"h_in": _np(h_in), "h_ood": _np(h_ood), "hp_in": hp_in,
                                 "hp_ood": hp_ood})


def figure(n: dict, drawing: dict) -> Figure:
    """This topic's figure, as a matplotlib ``Figure`` (no pyplot): for a notebook to show.
    ``drawing``: the per-image predictive entropies, MC (``h_in``, ``h_ood``) and plain
    (``hp_in``, ``hp_ood``), in and out of distribution."""
    h_in, h_ood, hp_in, hp_ood = (drawing[k] for k in ("h_in", "h_ood", "hp_in", "hp_ood"))
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax_acc, ax_ece, ax_h = fig.subplots(1, 3)
    ns = list(n["mc"])
    for ax, key, label in ((ax_acc, "accuracy", "test accuracy (%)"), (ax_ece, "ece", "ECE (15 bins)")):
        scale = 100 if key == "accuracy" else 1
        ax.plot(ns, [scale * n["mc"][k][key] for k in ns], "o-", color="tab:purple",
                label="MC Dropout, mean of N passes")
        ax.axhline(scale * n["plain"][key], color="tab:blue", linestyle="--", label="plain inference")
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(k) for k in ns])
        ax.minorticks_off()
        ax.set(xlabel="N (dropout passes)", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    ax_acc.set_title("Accuracy as N grows")
    ax_ece.set_title("Calibration error as N grows (lower is better)")
    hi = max(float(np.max(h_ood)), float(np.max(h_in)), float(np.max(hp_ood)), 1e-3)
    bins = np.linspace(0, hi, 40)
    auc = n["auroc"]
    ax_h.hist(h_in, bins, histtype="step", color="tab:green", linewidth=1.6,
              label=f"{n['data']} test, MC N={n['n_max']}", density=True)
    ax_h.hist(h_ood, bins, histtype="step", color="tab:red", linewidth=1.6,
              label=f"OOD, MC N={n['n_max']} (AUROC {auc['mc_entropy']:.3f})", density=True)
    ax_h.hist(hp_in, bins, histtype="step", color="tab:green", linestyle=":", linewidth=1.4,
              label=f"{n['data']} test, plain", density=True)
    ax_h.hist(hp_ood, bins, histtype="step", color="tab:red", linestyle=":", linewidth=1.4,
              label=f"OOD, plain (AUROC {auc['plain_entropy']:.3f})", density=True)
    ax_h.set_yscale("log")
    ax_h.set(xlabel="predictive entropy (nats)", ylabel="density (log)",
             title="Uncertainty: in-distribution vs out-of-distribution")
    ax_h.legend(frameon=False, fontsize=7)
    ax_h.grid(True, alpha=0.3)
    src = "Fashion-MNIST" if n["ood_source"] == FASHION else n["ood_source"].split(" (")[0]
    fig.suptitle(f"MC Dropout on a trained 3x100 ELU net (dropout {n['dropout']:g}), {n['data']}; "
                 f"OOD = {src}")
    return fig


TOPIC = Topic(name="mc-dropout", question=QUESTION, measure=measure, verdict=verdict,
              figure=figure,
              quick=dict(seeds=5, n_train=1500, valid=500, epochs=4, stages=[2, 4], ns=[1, 2, 5, 10, 20],
                         n_test=2000, n_ood=1000),
              full=dict(seeds=8, n_train=8000, valid=5000, epochs=24, stages=[6, 12, 18, 24],
                        ns=[1, 2, 5, 10, 20, 50, 100], n_test=10000, n_ood=5000))

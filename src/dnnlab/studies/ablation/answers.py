"""The exercise's questions answered from the study's records, as numbers and as sentences, and
each variant compared with the baseline (Welch's t over the seeds).

Pure functions of the stage records (no training here), so each answer is tested on small
hand-made histories. Every answer is a dict of the numbers behind it, its claims as
:class:`~dnnlab.analysis.verdict.Verdict` s (``verdicts``, each decided over the seeds by
:func:`~dnnlab.analysis.stats.compare`) and ``text``: the sentences printed at the end of the run
and shown in the report.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from dnnlab.analysis.stats import compare, grid_end, mean_std, pm
from dnnlab.analysis.verdict import MIN_SEEDS, NOT_SETTLED, REFUTED, SUPPORTED, differs, spread
from dnnlab.doctor.diagnose import SELF_NORM_TOL, self_normalizes, settle_layer

# Whether the SELU net self-normalizes is the doctor's judgement (one judgement for dnnlab doctor,
# dnnlab explain selu and this study): every hidden layer from the first third of the stack on
# within SELF_NORM_TOL of mean 0 and std 1 (Klambauer et al.'s fixed point).
MEAN_BAND = SELF_NORM_TOL
STD_BAND = (1 - SELF_NORM_TOL, 1 + SELF_NORM_TOL)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _best_val_loss(history: dict[str, list]) -> float | None:
    vals = [v for v in history["val_loss"] if v is not None]
    return min(vals) if vals else None


def epochs_to_reach(history: dict[str, list], target: float) -> tuple[int | None, float | None]:
    """The first epoch whose val_loss is <= ``target``, and the training seconds up to its end."""
    seconds = 0.0
    for epoch, loss, secs in zip(history["epoch"], history["val_loss"], history["seconds"]):
        seconds += secs or 0.0
        if loss is not None and loss <= target:
            return int(epoch), seconds
    return None, None


def batchnorm_answer(baseline: dict[str, Any], batchnorm: dict[str, Any],
                     timing: dict[str, float | None] | None = None,
                     per_step: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """(c) Does BN converge faster, give a better model, and what does it do to time per epoch?

    ``baseline`` and ``batchnorm`` are the final-run records of :func:`train_seeds` (per-seed
    histories and accuracies). "Faster" is measured against the baseline's own best: the mean over
    its seeds of the best validation loss; for each BN seed, the first epoch that gets at least as
    low, compared with the epochs the baseline needed to reach its best. Wall time is epochs x
    seconds per epoch, taken from ``timing`` (one model of each, measured alternately under the
    same load: see :func:`~dnnlab.studies.ablation.stages.time_epochs`) when given, else from the
    final runs' own epoch times.

    The claims are :class:`~dnnlab.analysis.verdict.Verdict` s (``verdicts``): faster (epochs to
    the target per BN seed against the baseline's best epoch per seed), better (validation
    accuracy, Welch's t as in the table) and, from ``per_step`` (the timing stage's interleaved
    repeats), dearer per epoch (paired by repeat, within the repeats' own spread). The booleans
    ``converges_faster`` and ``better_model`` are True only where the verdict is supported.
    """
    base_runs, bn_runs = baseline["runs"], batchnorm["runs"]
    target = statistics.fmean(v for v in (_best_val_loss(r["history"]) for r in base_runs)
                              if v is not None)
    reached = [epochs_to_reach(r["history"], target)[0] for r in bn_runs]
    hit = [e for e in reached if e is not None]
    bn_epochs = statistics.fmean(hit) if hit else None
    b_ep = statistics.fmean(r["best_epoch"] for r in base_runs)
    if timing:
        spe_base, spe_bn = timing["baseline"], timing["batchnorm"]
        how = "one model, measured alternately"
    else:
        spe_base, spe_bn = baseline.get("seconds_per_epoch"), batchnorm.get("seconds_per_epoch")
        how = f"{len(bn_runs)} models trained at once"
    spe_change = (spe_bn / spe_base - 1.0) if spe_base and spe_bn else None
    b_s = b_ep * spe_base if spe_base else None
    bn_secs = bn_epochs * spe_bn if bn_epochs is not None and spe_bn else None
    base_val = mean_std([r["val_accuracy"] for r in base_runs])
    bn_val = mean_std([r["val_accuracy"] for r in bn_runs])
    base_test = mean_std([r["test_accuracy"] for r in base_runs])
    bn_test = mean_std([r["test_accuracy"] for r in bn_runs])
    # a BN seed that never reached the target counts as reaching it just after its last epoch
    # (it did not get there within them): fewer epochs cannot be claimed for it
    censored = [e if e is not None else len(r["history"]["epoch"]) + 1
                for e, r in zip(reached, bn_runs)]
    faster_v = differs("BN reaches the baseline's best validation loss in fewer epochs than the "
                       "baseline needed to reach it (a BN seed that never did counts as one epoch "
                       "past its last)", censored, [r["best_epoch"] for r in base_runs],
                       larger=False, names=("BN epochs to target", "baseline best epoch"),
                       unit="epochs")
    better_v = differs("BN gives a better model (validation accuracy)",
                       [r["val_accuracy"] for r in bn_runs], [r["val_accuracy"] for r in base_runs],
                       names=("BN", "baseline"), unit="pts", scale=100)
    verdicts = [faster_v, better_v]
    steps = per_step or {}
    if len(steps.get("baseline", [])) == len(steps.get("batchnorm", [])) and steps.get("baseline"):
        lb = [math.log(t) for t in steps["baseline"]]
        verdicts.append(differs("an epoch takes longer with BN (log seconds per step, paired by "
                                "interleaved repeat)", [math.log(t) for t in steps["batchnorm"]],
                                lb, paired=True, margin=spread(lb), names=("BN", "baseline"),
                                unit="log s", samples="interleaved repeats"))
    faster = faster_v.outcome == SUPPORTED
    faster_wall = faster and bn_secs is not None and b_s is not None and bn_secs < b_s
    better = better_v.outcome == SUPPORTED

    def secs(x: float | None) -> str:
        return "" if x is None else f" (~{x:.0f} s of training)"

    if hit:
        conv = (f"BN reached the baseline's best validation loss ({target:.4f}) after "
                f"{bn_epochs:.1f} epochs{secs(bn_secs)} on average ({len(hit)} of {len(bn_runs)} "
                f"seeds reached it); the baseline needed {b_ep:.1f} epochs{secs(b_s)} to reach "
                f"its best: {'faster' if faster else 'not faster'} in epochs")
        if bn_secs is not None and b_s is not None:
            conv += f", {'faster' if faster_wall else 'not faster'} in wall time"
        conv += "."
    else:
        conv = (f"No BN seed reached the baseline's best validation loss ({target:.4f}) within "
                f"its epochs, so BN did not converge faster here.")
    model = (f"Validation accuracy {pm(*bn_val, digits=1)} % with BN vs {pm(*base_val, digits=1)} % "
             f"for the baseline, test accuracy {pm(*bn_test, digits=1)} % vs "
             f"{pm(*base_test, digits=1)} %. " + " ".join(v.sentence() + "." for v in verdicts))
    speed = ("Time per epoch: n/a." if spe_change is None else
             f"An epoch takes {spe_bn:.2f} s with BN vs {spe_base:.2f} s without "
             f"({100 * spe_change:+.0f}% per epoch; {how}).")
    return {"target_val_loss": target, "bn_epochs_to_target": bn_epochs,
            "bn_seconds_to_target": bn_secs, "seeds_reaching_target": len(hit),
            "baseline_epochs_to_best": b_ep, "baseline_seconds_to_best": b_s,
            "converges_faster": faster, "converges_faster_wall": faster_wall,
            "better_model": better, "verdicts": [v.to_json() for v in verdicts],
            "val_accuracy": {"baseline": base_val, "batchnorm": bn_val},
            "test_accuracy": {"baseline": base_test, "batchnorm": bn_test},
            "seconds_per_epoch": {"baseline": spe_base, "batchnorm": spe_bn},
            "seconds_per_epoch_measured_as": how,
            "time_per_epoch_change": spe_change, "text": " ".join([conv, speed, model])}


def _band(layers: list[dict[str, float | None]]) -> dict[str, Any]:
    means = [s["mean"] for s in layers]
    stds = [s["std"] for s in layers]
    finite = all(v is not None for v in means + stds)
    if not finite:
        return {"finite": False, "normalized": False, "max_abs_mean": None, "std_min": None,
                "std_max": None, "last_mean": None, "last_std": None, "settles_at_layer": None,
                "layers": len(layers)}
    max_abs = max(abs(m) for m in means)
    return {"finite": True, "normalized": self_normalizes(means, stds),
            "settles_at_layer": settle_layer(means, stds), "max_abs_mean": max_abs,
            "std_min": min(stds), "std_max": max(stds), "last_mean": means[-1],
            "last_std": stds[-1], "layers": len(layers)}


def _describe(label: str, b: dict[str, Any]) -> str:
    if not b["finite"]:
        return f"{label}: the activations overflowed (inf/NaN)"
    return (f"{label}: |mean| <= {b['max_abs_mean']:.2f}, std {b['std_min']:.2f}-"
            f"{b['std_max']:.2f}, the last (layer {b['layers']}) at {b['last_mean']:+.2f} / "
            f"{b['last_std']:.2f}")


def selu_answer(stats: dict[str, Any]) -> dict[str, Any]:
    """(d) Does the SELU net self-normalize? Per input/init combination, at init and trained."""
    rows = {}
    parts = []
    after = f"after {stats['epochs']} epoch(s)"
    for combo in stats["combos"]:
        init, trained = _band(combo["at_init"]), _band(combo["trained"])
        rows[combo["label"]] = {"at_init": init, "trained": trained}
        parts.append(f"{_describe(combo['label'] + ' at init', init)}; "
                     f"{_describe(after, trained)}")
    final = _band(stats["final"]) if stats.get("final") else None
    key = "standardized inputs, LeCun init"
    ok = rows.get(key, {}).get("at_init", {}).get("normalized", False)
    others = [k for k, v in rows.items() if k != key and v["at_init"]["normalized"]]
    band = (f"|mean| <= {MEAN_BAND:g} and std in [{STD_BAND[0]:g}, {STD_BAND[1]:g}] from the "
            "first third of the stack on (the doctor's test)")
    head = (f"The SELU net self-normalizes with standardized inputs and LeCun normal init: at "
            f"initialization its layers stay within {band}." if ok else
            f"The SELU net does not stay within {band}, even with standardized "
            f"inputs and LeCun normal init.")
    other = (f" Among the other combinations, {', '.join(others)} also stay within the band."
             if others else " None of the other combinations (raw inputs, He init) stays within "
             "the band.")
    tail = ""
    if final is not None:
        tail = " " + _describe("After the full training (seed 0)", final) + "."
    held = [rows[key]["trained"]["normalized"]] if key in rows else []
    if final is not None:
        held.append(final["normalized"])
    kept = bool(held) and all(held)
    training = ""
    if ok and held:
        training = (" Training keeps it within the band." if kept else
                    " Training does not keep it there: the trained net leaves the band (numbers "
                    "below). Self-normalization is a property of the initial weights; the "
                    "gradient steps move the weights away from the distribution it assumes.")
    text = (head + training + other + " " + ". ".join(p[0].upper() + p[1:] for p in parts) + "."
            + tail)
    return {"self_normalizes": ok, "stays_normalized_when_trained": kept, "bands": rows,
            "final": final,
            "mean_band": MEAN_BAND, "std_band": list(STD_BAND), "text": text}


def mc_dropout_answer(mc: dict[str, Any]) -> dict[str, Any]:
    """(e) Does MC Dropout beat plain inference (accuracy, entropy, ECE), and at what cost?"""
    seeds = mc["per_seed"]

    def agg(split: str, kind: str, key: str):
        return mean_std([s[split][kind][key] for s in seeds])

    out: dict[str, Any] = {"n_samples": mc["n_samples"]}
    for split in ("val", "test"):
        for kind in ("plain", "mc"):
            for key in ("accuracy", "entropy", "ece", "nll", "seconds"):
                out[f"{split}_{kind}_{key}"] = agg(split, kind, key)[0]
    out["val_mc_accuracy_std"] = agg("val", "mc", "accuracy")[1]
    gain_val = out["val_mc_accuracy"] - out["val_plain_accuracy"]
    gain_test = out["test_mc_accuracy"] - out["test_plain_accuracy"]
    cost = out["test_mc_seconds"] / out["test_plain_seconds"] if out["test_plain_seconds"] else None
    # the same models, read two ways: paired by seed (the lab's one noise rule)
    tests = {split: compare([s[split]["mc"]["accuracy"] for s in seeds],
                            [s[split]["plain"]["accuracy"] for s in seeds], paired=True)
             for split in ("val", "test")}
    out["val_vs_plain"], out["test_vs_plain"] = tests["val"], tests["test"]
    claim = differs("MC Dropout beats plain inference on the same models (validation accuracy)",
                    [s["val"]["mc"]["accuracy"] for s in seeds],
                    [s["val"]["plain"]["accuracy"] for s in seeds], paired=True,
                    names=("MC Dropout", "plain"), unit="pts", scale=100)
    out["verdicts"] = [claim.to_json()]
    beats = claim.outcome == SUPPORTED
    verdict = {SUPPORTED: "beats", REFUTED: "does worse than",
               NOT_SETTLED: "does not beat (within seed noise)" if len(seeds) >= MIN_SEEDS
               else f"is not settled against (under {MIN_SEEDS} seeds)"}[claim.outcome]
    better_calibrated = out["val_mc_ece"] < out["val_plain_ece"]
    out.update(accuracy_gain_val=gain_val, accuracy_gain_test=gain_test, cost_ratio=cost,
               beats_plain=beats, better_calibrated=better_calibrated)
    cost_text = (f"{cost:.0f}x the inference time of plain inference "
                 f"({out['test_mc_seconds']:.2f} s vs {out['test_plain_seconds']:.3f} s "
                 f"for the {mc.get('test_images', 10000):,} test images)") if cost else "n/a"
    out["text"] = (
        f"MC Dropout ({mc['n_samples']} samples, same trained models) "
        f"{verdict} plain inference: validation accuracy "
        f"{pct(out['val_mc_accuracy'])} vs {pct(out['val_plain_accuracy'])} "
        f"({100 * gain_val:+.2f} points, {_p_text(tests['val'])}), test "
        f"{pct(out['test_mc_accuracy'])} vs {pct(out['test_plain_accuracy'])} "
        f"({100 * gain_test:+.2f} points, {_p_text(tests['test'])}). "
        f"Mean predictive entropy {out['val_mc_entropy']:.3f} vs {out['val_plain_entropy']:.3f} "
        f"nats, expected calibration error {100 * out['val_mc_ece']:.2f}% vs "
        f"{100 * out['val_plain_ece']:.2f}% ({'better' if better_calibrated else 'not better'} "
        f"calibrated), at {cost_text}.")
    return out


def grid_edge(search: dict[str, Any] | None) -> str | None:
    """:func:`~dnnlab.analysis.stats.grid_end` of the value a search kept, among every candidate
    it tried (one that diverged was tried: it says a value past it is no better)."""
    if not search:
        return None
    return grid_end(search["best"], [r["value"] for r in search["rows"]])


def edge_note(edge: str | None) -> str:
    """The report's and the terminal's words for :func:`grid_edge`."""
    if edge is None:
        return ""
    beyond = "larger" if edge == "largest" else "smaller"
    return f"the {edge} rate tried: a {beyond} one may be better"


def _p_text(c: dict[str, Any]) -> str:
    """``paired p = 0.41`` (or why there is no test) for a sentence."""
    return f"{c['test']} p = {c['p']:.2g}" if c["p"] is not None else "no test: under 2 seeds"


def comparison_text(c: dict[str, Any]) -> str:
    """``+1.2 pts, t = +2.5, p = 0.03 (beyond noise)`` for a report cell."""
    if c["difference"] is None:
        return "n/a"
    head = f"{100 * c['difference']:+.1f} pts"
    if c["p"] is None:
        return head + " (under 2 seeds: no test)"
    t = "no spread" if c["t"] is None else f"t = {c['t']:+.1f}"
    return f"{head}, {t}, p = {c['p']:.2g} ({'beyond' if c['beyond_noise'] else 'within'} noise)"

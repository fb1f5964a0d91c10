"""results.json and report.html of the ablation study (and so of the CIFAR-10 study), built from
its stage records.

``build_results`` reduces the records to one entry per variant (the ladder's
:data:`~dnnlab.studies.ablation.plan.VARIANTS`, then the user's) with mean ± std of validation and
test accuracy, Welch's t against the baseline, seconds per epoch and the doctor's top finding;
``write_report`` draws the figures (learning curves of every variant overlaid, the learning-rate
searches, the LR-finder curves, the SELU layer statistics) and writes one self-contained HTML
page. With ``book`` (the CIFAR-10 study) the book's figures stand beside ours.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dnnlab.analysis.stats import NOISE_LEVEL, compare
from dnnlab.report import Page, learning_curves, line_plot
from dnnlab.studies import common
from dnnlab.studies.ablation.answers import comparison_text, edge_note, grid_edge, mean_std
from dnnlab.studies.ablation.plan import ONECYCLE_PEAKS, TITLES, TRAINED, VARIANTS, Protocol
from dnnlab.studies.engine import failed

Book = dict[str, tuple[float, float]]     # variant -> the book's validation accuracy (low, high)


def trained_names(stages: dict[str, Any]) -> list[str]:
    """The trained variants of a run that finished, the ladder's then the user's, from its stage
    records (a failed stage is listed in results.json's ``failed_stages`` instead)."""
    return [*(n for n in TRAINED if failed(stages.get(n)) is None),
            *(n for n in stages["doctor"]["top_finding"] if n not in TRAINED)]


def variant_names(stages: dict[str, Any]) -> list[str]:
    user = [n for n in trained_names(stages) if n not in TRAINED]
    return [*(n for n in VARIANTS if failed(stages.get(n)) is None), *user]


def failed_section(page: Page, failed_stages: dict[str, str]) -> None:
    """What did not finish, and why: at the top of the report, so no one reads an incomplete
    study as a complete one."""
    if not failed_stages:
        return
    page.verdict(f"Incomplete: {len(failed_stages)} stage(s) failed ("
                 f"{', '.join(failed_stages)}); their answers are missing below, and "
                 "`--resume` retries them.", ok=False)
    page.table([{"stage": k, "why it failed": v} for k, v in failed_stages.items()],
               ["stage", "why it failed"])


def minimal_report(out: Path, title: str, results: dict[str, Any]) -> Path:
    """The report of a study whose failed stages leave too little for the full one."""
    page = Page(title, "incomplete run")
    failed_section(page, results.get("failed_stages", {}))
    done = [k for k, v in results.get("stage_seconds", {}).items()
            if k not in results.get("failed_stages", {})]
    page.paragraph(f"Stages that finished: {', '.join(done) or 'none'}.")
    return page.save(out / "report.html")


def _variant_result(rec: dict[str, Any], lr: float, seconds_per_epoch: float) -> dict[str, Any]:
    runs = rec["final"]["runs"]
    val, test = mean_std([r["val_accuracy"] for r in runs]), mean_std([r["test_accuracy"] for r in runs])
    return {"lr": lr, "val_accuracy_mean": val[0], "val_accuracy_std": val[1],
            "test_accuracy_mean": test[0], "test_accuracy_std": test[1],
            "best_epoch_mean": mean_std([r["best_epoch"] for r in runs])[0],
            "seconds_per_epoch": seconds_per_epoch,
            "engine_seconds_per_epoch": rec["final"]["seconds_per_epoch"],
            "models_at_once": rec["final"]["models"],
            "seeds": [r["seed"] for r in runs],
            "per_seed": [{k: r[k] for k in ("seed", "status", "best_epoch", "epochs_run",
                                            "val_accuracy", "test_accuracy", "val_loss")}
                         for r in runs]}


def build_results(stages: dict[str, Any], answers: dict[str, Any], proto: Protocol,
                  meta: dict[str, Any], book: Book | None = None) -> dict[str, Any]:
    """The content of results.json: one entry per variant, the answers and how it was run."""
    results: dict[str, Any] = {}
    for name in trained_names(stages):
        rec = stages[name]
        lr = rec["lr"] if name != "one_cycle" else rec["max_lr"]
        results[name] = _variant_result(rec, lr, stages["timing"]["seconds_per_epoch"][name])
        if name == "alpha_dropout":
            results[name]["dropout"] = rec["dropout"]
        if name == "one_cycle":
            results[name]["optimizer"] = "sgd"
        results[name]["search_edge"] = grid_edge(rec.get("search"))
    mc, alpha = answers["mc_dropout"], results["alpha_dropout"]
    per = stages["mc_dropout"]["per_seed"]
    mc_val = mean_std([s["val"]["mc"]["accuracy"] for s in per])
    mc_test = mean_std([s["test"]["mc"]["accuracy"] for s in per])
    results["mc_dropout"] = {
        "lr": alpha["lr"], "dropout": alpha["dropout"],
        "val_accuracy_mean": mc_val[0], "val_accuracy_std": mc_val[1],
        "test_accuracy_mean": mc_test[0], "test_accuracy_std": mc_test[1],
        "best_epoch_mean": alpha["best_epoch_mean"], "seconds_per_epoch": alpha["seconds_per_epoch"],
        "engine_seconds_per_epoch": alpha["engine_seconds_per_epoch"],
        "models_at_once": alpha["models_at_once"], "seeds": alpha["seeds"],
        "search_edge": alpha["search_edge"], "n_samples": mc["n_samples"],
        "plain_val_accuracy_mean": mc["val_plain_accuracy"],
        "plain_test_accuracy_mean": mc["test_plain_accuracy"],
        "entropy": {"mc": mc["val_mc_entropy"], "plain": mc["val_plain_entropy"]},
        "ece": {"mc": mc["val_mc_ece"], "plain": mc["val_plain_ece"]},
        "inference_seconds_test": {"mc": mc["test_mc_seconds"], "plain": mc["test_plain_seconds"]},
    }
    results["mc_dropout"]["per_seed"] = [
        {"seed": s["seed"], "val_accuracy": s["val"]["mc"]["accuracy"],
         "test_accuracy": s["test"]["mc"]["accuracy"]} for s in per]
    base = results["baseline"]["per_seed"]
    for name in variant_names(stages):
        r = results[name]
        if book is not None and name in book:
            r["book_val_accuracy"] = list(book[name])
        r["max_epochs"] = stages[name if name != "mc_dropout" else "alpha_dropout"][
            "final"]["config"]["train"]["epochs"]
        for split in ("val", "test"):
            r[f"{split}_vs_baseline"] = compare(
                [p[f"{split}_accuracy"] for p in r["per_seed"]],
                [p[f"{split}_accuracy"] for p in base])
        top = stages["doctor"]["top_finding"].get(name if name != "mc_dropout" else "alpha_dropout")
        r["doctor"] = top
    results["answers"] = {k: v for k, v in answers.items()}
    results["protocol"] = proto.to_dict()
    results["max_epochs"] = proto.max_epochs
    results["patience"] = proto.patience
    results["shortened"] = proto.shortened
    results["quick"] = proto.quick
    results.update(meta)
    return results


def book_text(book: Book, name: str) -> str:
    lo, hi = book[name]
    return f"{100 * lo:.1f}%" if lo == hi else f"{100 * lo:.1f}-{100 * hi:.1f}%"


def shortfall_note(name: str, r: dict[str, Any], proto: Protocol, book: Book) -> str:
    """Why our mean falls short of the book's figure (or that it does not)."""
    mean = r["val_accuracy_mean"]
    lo, hi = book[name]
    if mean is None:
        return "no result"
    if mean > hi:
        return f"beats the book by {100 * (mean - hi):.1f} points"
    if mean >= lo:
        return "within the book's range"
    why = [f"{100 * (lo - mean):.1f} points below"]
    if proto.quick:
        why.append("--quick: a small subset and a few epochs, not meant to reach the book")
    cap = r.get("max_epochs", proto.max_epochs)
    if proto.shortened and name != "one_cycle":
        why.append(f"runs capped at {proto.max_epochs} epochs, patience {proto.patience} "
                   "(the book: 100 and 20)")
    if name != "one_cycle" and r.get("best_epoch_mean") is not None and r["best_epoch_mean"] >= cap - 1:
        why.append("the best epoch was at the cap: still improving when stopped")
    if r.get("val_accuracy_std"):
        why.append(f"the seeds spread by ±{100 * r['val_accuracy_std']:.1f} points; the book "
                   "reports a single run")
    return "; ".join(why)


def _pm(r: dict[str, Any], split: str) -> str:
    return common.pm(r[f"{split}_accuracy_mean"], r[f"{split}_accuracy_std"], digits=1)


def doctor_text(top: dict[str, Any] | None) -> str:
    """The doctor's top finding as a table cell."""
    if top is None:
        return "nothing wrong found"
    if "error" in top:
        return f"not examined: {top['error']}"
    return f"{top['title']} ({top['set'] or 'no remedy'})"


def table_rows(results: dict[str, Any], proto: Protocol, names: list[str],
               book: Book | None = None) -> list[dict[str, Any]]:
    """One row per variant: accuracies, the comparison with the baseline, time, the doctor."""
    rows = []
    for name in names:
        r = results[name]
        row = {"variant": name, "what": TITLES.get(name, "user variant"), "lr": r["lr"],
               "val acc (mean ± std)": _pm(r, "val")}
        if book is not None and name in book:
            row["book val acc"] = book_text(book, name)
        row.update({"test acc (mean ± std)": _pm(r, "test"),
                    "val vs baseline": comparison_text(r["val_vs_baseline"]),
                    "test vs baseline": comparison_text(r["test_vs_baseline"]),
                    "best epoch": r["best_epoch_mean"], "s / epoch": r["seconds_per_epoch"],
                    "engine s / epoch": r["engine_seconds_per_epoch"],
                    "seeds": len(r["seeds"]), "doctor's top finding": doctor_text(r["doctor"])})
        if book is not None and name in book:
            row["note"] = shortfall_note(name, r, proto, book)
        rows.append(row)
    return rows


def _finder_figure(stages: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.subplots()
    for i, name in enumerate(trained_names(stages)):
        f = stages[name]["finder"]
        pts = [(lr, v) for lr, v in zip(f["lrs"], f["losses"]) if v is not None]
        if not pts:
            continue
        ax.plot(*zip(*pts), color=f"C{i}", lw=1.5,
                label=f"{name} ({f['optimizer']}, batch {f['batch_size']})")
        ax.axvline(f["suggestion"], color=f"C{i}", ls=":", lw=1)
    losses = {n: [v for v in stages[n]["finder"]["losses"] if v is not None]
              for n in trained_names(stages)}
    first = [v for name in trained_names(stages) for v in stages[name]["finder"]["losses"][:5]
             if v is not None]
    if first:
        ax.set_ylim(top=1.6 * max(first), bottom=0.5 * min(v for ls in losses.values() for v in ls))
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss",
           title="LR finder (dotted: suggestion = rate at the lowest loss / 10)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return fig


SEARCH_CAP = 10.0   # the search plot shows losses up to 10x the median; higher ones sit on its top


def _cap_outliers(ax) -> None:
    """A candidate rate that blew up (a loss of 1e11) would flatten every other line: the y axis
    stops at SEARCH_CAP x the median loss (a rate too low to learn stays far below it), and each
    point above it is drawn as a triangle on the top edge, labelled with its value."""
    points = [(x, y, line.get_color()) for line in ax.get_lines()
              for x, y in zip(line.get_xdata(), line.get_ydata()) if math.isfinite(y)]
    if not points:
        return
    ys = sorted(y for _, y, _ in points)
    cap = SEARCH_CAP * ys[len(ys) // 2]
    high = [(x, y, c) for x, y, c in points if y > cap]
    if not high:
        return
    ax.set_ylim(ys[0] - 0.05 * (cap - ys[0]), cap)
    for x, y, color in high:
        ax.plot([x], [cap], "^", ms=9, color=color, clip_on=False, zorder=5)
        ax.annotate(f"{y:.2g}", (x, cap), xytext=(0, -14), textcoords="offset points",
                    ha="center", fontsize=7, color=color)
    ax.set_ylabel(f"best validation loss of the search (▲: above {cap:.2g})")


def _search_figure(stages: dict[str, Any]) -> Figure:
    grid = None
    ys = {}
    for name in trained_names(stages):
        s = stages[name].get("search")
        if not s or s["key"] != "optim.lr":     # 1cycle's peak search has its own table
            continue
        grid = [r["value"] for r in s["rows"]]
        ys[name] = [math.nan if r["val_loss"] is None else r["val_loss"] for r in s["rows"]]
    epochs = next(stages[n]["search"]["epochs"] for n in trained_names(stages) if n != "one_cycle")
    fig = line_plot(grid, ys, xlabel="learning rate", ylabel="best validation loss of the search",
                    title="Learning-rate search (all candidates trained at once per variant)", logx=True)
    ax = fig.axes[0]
    colors = {line.get_label(): line.get_color() for line in ax.get_lines()}
    for name, loss in ys.items():                # the rate each variant kept
        best = stages[name]["search"]["best"]
        ax.plot([best], [loss[grid.index(best)]], "*", ms=12, color=colors.get(name, "k"))
    oc = stages["one_cycle"].get("search")
    if oc and oc["key"] != "optim.lr":           # 1cycle: peak rates over whole cycles
        ax.plot([r["value"] for r in oc["rows"]],
                [math.nan if r["val_loss"] is None else r["val_loss"] for r in oc["rows"]],
                "s--", color="C4", label=f"one_cycle peak rate ({oc['epochs']}-epoch cycles)")
        ax.plot([oc["best"]], [next(r["val_loss"] for r in oc["rows"] if r["value"] == oc["best"])],
                "*", ms=12, color="C4")
    _cap_outliers(ax)
    ax.legend(title=f"lines: {epochs} epochs per rate; star: kept", fontsize=8, title_fontsize=8)
    return fig


def _selu_figure(stats: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, combo in enumerate(stats["combos"]):
        for key, style in (("at_init", "--"), ("trained", "-")):
            layers = combo[key]
            xs = [s["layer"] for s in layers]
            for ax, stat in zip(axes, ("mean", "std")):
                ys = [math.nan if s[stat] is None else s[stat] for s in layers]
                ax.plot(xs, ys, style, color=f"C{i}", lw=1.5, marker="o", ms=3,
                        label=f"{combo['label']} ({'init' if key == 'at_init' else 'trained'})")
    if stats.get("final"):
        xs = [s["layer"] for s in stats["final"]]
        for ax, stat in zip(axes, ("mean", "std")):
            ax.plot(xs, [s[stat] for s in stats["final"]], "-", color="k", lw=2,
                    label="standardized, LeCun: final model")
    axes[0].axhline(0, color="0.5", lw=0.8)
    axes[1].axhline(1, color="0.5", lw=0.8)
    axes[0].set(xlabel="hidden layer", ylabel="activation mean", title="Mean per layer")
    axes[1].set(xlabel="hidden layer", ylabel="activation std (log scale)", title="Std per layer",
                yscale="log")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))     # layers are whole numbers
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False, fontsize=8)
    fig.suptitle(f"SELU net: dashed = at initialization, solid = after {stats['epochs']} epoch(s)")
    return fig


def _selu_table(stats: dict[str, Any], key: str) -> list[dict[str, Any]]:
    rows = []
    n = len(stats["combos"][0][key])
    for i in range(n):
        row: dict[str, Any] = {"layer": i + 1}
        for combo in stats["combos"]:
            short = f"{combo['inputs'][:3]}/{combo['init']}"
            row[f"{short} mean"] = combo[key][i]["mean"]
            row[f"{short} std"] = combo[key][i]["std"]
        if key == "trained" and stats.get("final"):
            row["final mean"] = stats["final"][i]["mean"]
            row["final std"] = stats["final"][i]["std"]
        rows.append(row)
    return rows


def write_report(out: Path, results: dict[str, Any], stages: dict[str, Any],
                 answers: dict[str, Any], proto: Protocol, *, title: str,
                 book: Book | None = None) -> Path:
    """report.html in ``out``: the table (beside the book's figures when ``book`` is given), the
    answers, curves, searches, SELU statistics."""
    mode = "quick run (pipeline check)" if proto.quick else (
        f"final runs of at most {proto.max_epochs} epochs, patience {proto.patience}"
        if proto.shortened or not book else "the book's protocol")
    wall = f"wall time {results.get('wall_seconds', 0):.0f} s"
    if results.get("reused_stages"):
        wall += (f" (resumed; all stages took {results.get('stages_total_seconds', 0):.0f} s when "
                 "they ran)")
    page = Page(title, f"{mode}; {results.get('device', '?')}; {wall}")
    failed_section(page, results.get("failed_stages", {}))
    page.heading("Results beside the book" if book else "Results")
    page.paragraph(
        f"Data: {results.get('data_summary', '?')}. Accuracy is the mean ± sample std over the "
        "seeds of each variant" + ("; the book's figures are its single runs on the validation "
                                   "set. " if book else ". ") +
        "'vs baseline' is the variant's mean minus the baseline's with Welch's t over the seeds: "
        f"a two-sided p under {NOISE_LEVEL:g} is beyond seed noise. 's / epoch' is the training "
        "time of one epoch of one model "
        f"(the fastest of {proto.timing_repeats} measurements on {proto.timing_steps} batches, "
        "taken in alternation with the other variants, so that a change of the machine's load "
        "hits every variant alike); "
        "'engine s / epoch' is the wall time of one epoch of the final runs, in which all seeds of "
        "a variant train at once with the K-model engine.")
    names = variant_names(stages)
    page.table(table_rows(results, proto, names, book), formats={"lr": ".3g", "best epoch": ".1f",
                                                    "s / epoch": ".2f",
                                                    "engine s / epoch": ".2f"})
    if book and proto.shortened and not proto.quick:
        page.verdict(f"This run was deliberately shortened: final runs stopped at "
                     f"{proto.max_epochs} epochs (patience {proto.patience}); the book's protocol "
                     f"is 100 epochs with patience 20. max_epochs is recorded in results.json.")
    page.heading("Answers")
    page.heading("(c) Batch Normalization", 3)
    bn = answers["batchnorm"]
    page.verdict(bn["text"], ok=bool(bn["converges_faster"] and bn["better_model"]))
    page.heading("(d) Does the SELU net self-normalize?", 3)
    page.verdict(answers["selu"]["text"], ok=answers["selu"]["self_normalizes"])
    page.heading("(e) MC Dropout vs plain inference", 3)
    page.verdict(answers["mc_dropout"]["text"], ok=answers["mc_dropout"]["beats_plain"])
    mc = answers["mc_dropout"]
    page.table([{"inference": kind, "val accuracy": mc[f"val_{kind}_accuracy"],
                 "test accuracy": mc[f"test_{kind}_accuracy"],
                 "predictive entropy (nats)": mc[f"val_{kind}_entropy"],
                 "ECE": mc[f"val_{kind}_ece"], "NLL": mc[f"val_{kind}_nll"],
                 "test inference s": mc[f"test_{kind}_seconds"]} for kind in ("plain", "mc")],
               formats={"val accuracy": ".2%", "test accuracy": ".2%", "ECE": ".2%",
                        "predictive entropy (nats)": ".3f", "NLL": ".3f",
                        "test inference s": ".3f"})

    page.heading("Learning curves")
    hist = {name: stages[name]["final"]["runs"][0]["history"] for name in trained_names(stages)}
    clean = {n: {k: [math.nan if v is None else v for v in h[k]] for k in h} for n, h in hist.items()}
    page.figure(learning_curves(clean, title="All variants, seed 0 (dashed: train, solid: valid)"),
                "Learning curves of every variant overlaid (seed 0 of each).")

    page.heading("Learning-rate searches")
    page.paragraph(
        f"Each variant's candidate rates ({', '.join(f'{v:.3g}' for v in proto.lr_grid)}) were "
        f"trained at once with the K-model engine for {proto.search_epochs} epoch(s) from the same "
        "initial weights; the rate with the lowest validation loss was kept. For 1cycle the LR "
        "finder's minimum (past the first 10% of the sweep) times "
        f"{', '.join(f'{f:g}' for f in ONECYCLE_PEAKS)} gives the peak rates, each trained for "
        "the whole cycle at once. The LR-finder curve of every variant is shown too.")
    page.figure(_search_figure(stages), "Best validation loss of each candidate rate.")
    rows = []
    for name in trained_names(stages):
        s, f = stages[name].get("search"), stages[name]["finder"]
        searched = ("none" if not s else "lr grid" if s["key"] == "optim.lr" else
                    "peaks " + ", ".join(f"{r['value']:.3g}" for r in s["rows"]))
        rows.append({"variant": name, "chosen lr": results[name]["lr"], "searched": searched,
                     "finder suggestion (min / 10)": f["suggestion"],
                     "finder min-loss lr": f["min_lr"],
                     "note": edge_note(results[name]["search_edge"])})
    page.table(rows, formats={"chosen lr": ".3g", "finder suggestion (min / 10)": ".3g",
                              "finder min-loss lr": ".3g"})
    oc = stages["one_cycle"].get("search")
    if oc and oc["key"] != "optim.lr":
        page.paragraph(f"1cycle peak-rate search ({oc['epochs']} epochs each, seed 0):")
        page.table([{"peak rate": r["value"], "val loss": r["val_loss"],
                     "val accuracy": r["val_accuracy"], "best epoch": r["best_epoch"]}
                    for r in oc["rows"]],
                   formats={"peak rate": ".3g", "val loss": ".4f", "val accuracy": ".2%"})
    page.figure(_finder_figure(stages), "LR finder: smoothed loss against an exponentially growing rate.")
    rs = stages["alpha_dropout"]["rate_search"]
    page.paragraph(f"Alpha-dropout rate searched among {', '.join(f'{r:.0%}' for r in proto.dropout_rates)} "
                   f"at the SELU net's rate, {rs['epochs']} epoch(s) each, all at once; the rate "
                   f"kept: {stages['alpha_dropout']['dropout']:.0%}. Then the learning rate was "
                   "searched again for that rate.")
    page.table([{"dropout": r["value"], "val loss": r["val_loss"], "val accuracy": r["val_accuracy"],
                 "status": r["status"]} for r in rs["rows"]],
               formats={"dropout": ".0%", "val loss": ".4f", "val accuracy": ".2%"})

    st = stages["selu_stats"]
    page.heading(f"SELU: activation statistics of the {len(st['combos'][0]['at_init'])} hidden "
                 "layers")
    page.paragraph(
        f"Mean and std of each hidden layer's output on {st['examples']} validation images, for "
        f"standardized vs raw inputs and LeCun vs He normal init, at initialization and after "
        f"{st['epochs']} epoch(s) at the SELU net's learning rate (all seed 0); 'final' is the SELU "
        "variant's seed-0 model after its full training.")
    page.figure(_selu_figure(st), "Activation mean and std per layer.")
    page.heading("At initialization", 3)
    page.table(_selu_table(st, "at_init"), formats={c: ".3f" for c in _selu_table(st, "at_init")[0]
                                                    if c != "layer"})
    page.heading("After training", 3)
    trained = _selu_table(st, "trained")
    page.table(trained, formats={c: ".3f" for c in trained[0] if c != "layer"})

    page.heading("Protocol")
    page.bullets([
        f"Final runs: batch {proto.batch_size}, at most {proto.max_epochs} epochs, early stopping "
        f"on val_loss with patience {proto.patience}, best weights restored; "
        f"{len(results['baseline']['seeds'])} seeds per variant trained at once.",
        "Inputs: as the base config's [data] table prepares them for the baseline and BN; "
        "standardized with training-split statistics for the SELU, alpha-dropout and 1cycle nets.",
        f"1cycle: SGD, batch {proto.onecycle_batch}, {proto.onecycle_epochs} epochs, the "
        "alpha-dropout net, peak rate searched among the LR finder's minimum times "
        f"{', '.join(f'{f:g}' for f in ONECYCLE_PEAKS)}.",
        f"MC Dropout: {proto.mc_samples} stochastic passes of the alpha-dropout models, only the "
        "dropout layers sampling (batch norm, where present, stays in inference mode).",
        "Alpha dropout: one layer after the last hidden layer, as in the book's solution.",
        "The doctor's top finding: dnnlab doctor on each variant's first run (seed 0), whose "
        "layers were recorded while it trained (runs/ in this folder).",
    ] + ([] if not book else [
        "Differences from the book: every accuracy is a mean over seeds where the book reports "
        "single runs; every learning rate comes from the search above, not from the book; "
        "PyTorch's BN keeps an unbiased running variance where Keras keeps a biased one."]))
    return page.save(out / "report.html")

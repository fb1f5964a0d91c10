"""A sweep's report: one row and one curve per variant over its seeds, not one per model.

Three learning rates with three seeds each drew nine tangled lines; here each variant is one
colour: its mean curve over the seeds, and a band from the lowest to the highest seed at each
epoch. The band is the seeds' range, not mean ± std: with 3 seeds a std is a rough guess, while
the range shows exactly where every seed went. Seeds that stopped early leave the mean and band
of the later epochs to the seeds still training (the band narrows there for that reason, not
because the seeds agree).

The numbers come from the caller (``dnnlab.runs.sweep.aggregate``), which says how they were
computed; this module only shows them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from dnnlab.analysis.stats import NOISE_LEVEL, pm
from dnnlab.report.html import Page
from dnnlab.report.plots import _TITLES, _colours, outside_legend, save_figure

Histories = dict[str, list[dict[str, list[float]]]]   # variant -> its seeds' metrics.csv columns
# More curves than tab10's colours are a tangle again (and their legend squeezes the axes away):
# the report draws the best MAX_CURVES variants and says so.
MAX_CURVES = 10


def _by_epoch(runs: list[dict[str, list[float]]], key: str) -> dict[float, list[float]]:
    """epoch -> the finite values of column ``key`` of the seeds that have that epoch."""
    out: dict[float, list[float]] = {}
    for hist in runs:
        for e, v in zip(hist.get("epoch", ()), hist.get(key, ())):
            if math.isfinite(v):
                out.setdefault(e, []).append(v)
    return dict(sorted(out.items()))


def variant_curves(histories: Histories, metrics: Sequence[str] = ("loss", "accuracy"),
                   title: str | None = None) -> Figure:
    """One panel per metric; per variant one colour: the validation mean over its seeds (solid)
    with a band over the seeds' range, and the training mean (dashed, no band)."""
    fig = Figure(figsize=(5.2 * len(metrics), 4.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colours = _colours(len(histories))
    for ax, metric in zip(axes, metrics):
        for colour, runs in zip(colours, histories.values()):
            for key, style in ((metric, "--"), (f"val_{metric}", "-")):
                points = _by_epoch(runs, key)
                if not points:
                    continue
                xs = list(points)
                ax.plot(xs, [sum(v) / len(v) for v in points.values()], style, color=colour,
                        linewidth=1.6, marker="o" if len(xs) == 1 else None)
                if key.startswith("val_") and len(runs) > 1:
                    ax.fill_between(xs, [min(v) for v in points.values()],
                                    [max(v) for v in points.values()], color=colour, alpha=0.18,
                                    linewidth=0)
        ax.set_title(_TITLES.get(metric, metric.replace("_", " ")))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles: list[Any] = [Line2D([], [], color=c, linewidth=2, label=f"{name} ({_seeds(len(runs))})")
                          for c, (name, runs) in zip(colours, histories.items())]
    handles += [Line2D([], [], color="0.2", linestyle="--", label="train (mean)"),
                Line2D([], [], color="0.2", linestyle="-", label="valid (mean)"),
                Patch(color="0.2", alpha=0.18, label="valid: seeds' range")]
    if title:
        fig.suptitle(title)
    outside_legend(fig, handles, max_columns=4)
    return fig


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n != 1)}"


def _ci(v: dict[str, Any], metric: str, scale: float, digits: int) -> str:
    lo, hi = v.get(f"{metric}_ci95_low"), v.get(f"{metric}_ci95_high")
    if lo is None or hi is None:
        return "–"
    return f"[{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def report_sweep(out: Path, variants: list[dict[str, Any]], runs: list[dict[str, Any]],
                 histories: Histories, *, ranked_by: str) -> Path:
    """Write ``curves.png`` (when any run has curves here) and ``report.html`` into ``out``.

    ``variants`` are the per-variant rows (best first) with ``{metric}_mean``, ``_std``,
    ``_ci95_low``/``_high``, ``seconds_per_epoch_per_model``, ``welch_p_vs_best`` and
    ``vs_best``; ``runs`` the per-model rows; ``histories`` each variant's seeds' curves.
    """
    n_seeds = max((v["seeds"] + v["failed"] for v in variants), default=0)
    title = f"Sweep: {len(variants)} variant{'s' * (len(variants) != 1)} × {_seeds(n_seeds)}"
    page = Page(title, f"{len(runs)} models; numbers over each variant's seeds, read from "
                "runs.csv (one row per model) and summary.csv (one row per variant).")
    best = variants[0] if variants and variants[0]["vs_best"] == "best" else None
    if best is not None:
        beyond = [v["variant"] for v in variants if v["vs_best"] == "worse beyond noise"]
        within = [v["variant"] for v in variants if v["vs_best"] == "within noise"]
        text = (f"Best: {best['variant']} (mean best validation loss "
                f"{pm(best[f'{ranked_by}_mean'], best[f'{ranked_by}_std'], 1, 4)}). "
                f"Worse beyond seed noise: {', '.join(beyond) or 'none'}. "
                f"Within noise of the best: {', '.join(within) or 'none'}."
                + (f" Note: {best['note']}." if best.get("note") else ""))
        page.verdict(text, ok=None)
    page.paragraph(
        f"Each number is the mean ± sample std (ddof=1) over the seeds that trained; the 95% CI is "
        f"the confidence interval of that mean from Student's t with n − 1 degrees of freedom "
        f"(with 3 seeds it is ±4.30 standard errors). Variants are ranked by mean best validation "
        f"loss; 'vs best' is Welch's two-sided t-test of each variant's best validation losses "
        f"against the best variant's, at {NOISE_LEVEL:.0%}. With many variants a few such calls are "
        f"chance, and the best is picked on these same numbers, so its lead is slightly flattered. "
        f"Test accuracy is shown, never used to choose. Seconds per epoch are per model: a stack "
        f"trains K models in one epoch time, divided here by the models training in it.")
    rows = [{"variant": v["variant"], "seeds": f"{v['seeds']}/{v['seeds'] + v['failed']}",
             "best val loss": pm(v["best_val_loss_mean"], v["best_val_loss_std"], 1, 4),
             "val loss 95% CI": _ci(v, "best_val_loss", 1, 4),
             "best val acc (%)": pm(v["best_val_accuracy_mean"], v["best_val_accuracy_std"]),
             "val acc 95% CI": _ci(v, "best_val_accuracy", 100, 2),
             "test acc (%)": pm(v["test_accuracy_mean"], v["test_accuracy_std"]),
             "test acc 95% CI": _ci(v, "test_accuracy", 100, 2),
             "s/epoch per model": v["seconds_per_epoch_per_model"],
             "Welch p vs best": v["welch_p_vs_best"], "vs best": v["vs_best"]} for v in variants]
    page.table(rows, formats={"s/epoch per model": ".3f", "Welch p vs best": ".2g"})
    drawn = {v["variant"]: histories[v["variant"]] for v in variants if v["variant"] in histories}
    drawn = dict(list(drawn.items())[:MAX_CURVES])
    if drawn:
        png = save_figure(variant_curves(drawn, title=title), out / "curves.png")
        which = (f"the best {len(drawn)} of {len(histories)} variants" if len(drawn) < len(histories)
                 else "each variant")
        page.figure(png, f"One colour for {which}: the mean over its seeds, training dashed and "
                    "validation solid, with a band over the seeds' range of the validation curve.")
    page.heading("Runs (one per seed)")
    page.table([{"run": r["run"], "status": r["status"], "best epoch": r.get("best_epoch"),
                 "best val loss": r.get("best_val_loss"), "best val acc": r.get("best_val_accuracy"),
                 "test acc": r.get("test_accuracy"),
                 "s/epoch per model": r.get("seconds_per_epoch_per_model"),
                 "message": r.get("message") or ""} for r in runs],
               formats={"best val loss": ".4f", "best val acc": ".2%", "test acc": ".2%",
                        "s/epoch per model": ".3f"})
    return page.save(out / "report.html")

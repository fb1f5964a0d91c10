"""Figures for runs and studies, drawn without a display.

Figures are built as plain ``matplotlib.figure.Figure`` objects (no pyplot), so drawing needs no
GUI backend, keeps no global state and works the same on a headless server, in a thread or in a
notebook. PNGs are rendered with Agg and written atomically through ``dnnlab.io``.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib._pylab_helpers import Gcf  # pyplot's figure registry (no pyplot import)
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from dnnlab.io import write_bytes

DPI = 120
MIN_LABEL_CHARS = 12   # a legend label is wrapped to no fewer characters a line
_TITLES = {"loss": "Loss", "accuracy": "Accuracy"}


def _colours(n: int) -> list:
    """tab10 stays readable up to ten runs; beyond that tab20 keeps colours distinct."""
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def best_epoch_of(history: dict[str, Sequence[float]]) -> float | None:
    """The epoch of the lowest finite validation loss (the early-stopping default), or None."""
    losses = list(history.get("val_loss", ()))
    finite = [(v, i) for i, v in enumerate(losses) if not math.isnan(v) and math.isfinite(v)]
    if not finite:
        return None
    i = min(finite)[1]
    epochs = list(history.get("epoch", range(1, len(losses) + 1)))
    return float(epochs[i]) if i < len(epochs) else float(i + 1)


def learning_curves(histories: dict[str, dict[str, Sequence[float]]],
                    metrics: Sequence[str] = ("loss", "accuracy"), title: str | None = None,
                    marks: dict[str, float] | None = None,
                    best_epochs: dict[str, float | None] | None = None,
                    path: str | Path | None = None) -> Figure:
    """Overlay the learning curves of several runs, one panel per metric.

    Args:
        histories: run name -> columns of its ``metrics.csv`` (``epoch``, ``loss``,
            ``val_loss``, ...). Each run keeps one colour across panels; training curves are
            dashed and validation curves solid, so overfitting shows as the gap between a run's
            two lines. The x axis is the ``epoch`` column when a history has one, else 1..n.
        metrics: the panels, by column name (default loss and accuracy).
        title: the figure's title (default none).
        marks: labelled vertical lines drawn on every panel, e.g. ``{"1cycle peak": 7}``.
        best_epochs: run name -> its best epoch, marked with a star on that run's validation
            curve in every panel (the weights a run keeps when it restores its best). Runs not
            named here get the epoch of their lowest validation loss; None skips a run.
        path: also save the figure there (format from the suffix); default: not saved.

    Returns the ``Figure`` (no pyplot, no backend switch), so a notebook can show it.
    """
    fig = Figure(figsize=(5.2 * len(metrics), 4.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colours = _colours(len(histories))
    best = {name: best_epoch_of(hist) for name, hist in histories.items()}
    best.update(best_epochs or {})
    starred = False
    for ax, metric in zip(axes, metrics):
        for colour, (name, hist) in zip(colours, histories.items()):
            for key, style in ((metric, "--"), (f"val_{metric}", "-")):
                ys = list(hist.get(key, ()))
                if not ys or all(math.isnan(y) for y in ys):
                    continue
                xs = list(hist.get("epoch", range(1, len(ys) + 1)))[: len(ys)]
                ax.plot(xs, ys, style, color=colour, linewidth=1.6, marker="o" if len(ys) == 1 else None)
                b = best.get(name)
                if key.startswith("val_") and b is not None and b in xs and not math.isnan(ys[xs.index(b)]):
                    ax.scatter([b], [ys[xs.index(b)]], marker="*", s=170, color=colour,
                               edgecolors="black", linewidths=0.7, zorder=5)
                    starred = True
        for i, (label, x) in enumerate((marks or {}).items()):
            ax.axvline(x, color="0.35", linestyle=":", linewidth=1.2)
            if ax is axes[0]:
                ax.annotate(label, (x, 1.0 - 0.07 * i), xycoords=("data", "axes fraction"),
                            xytext=(3, -3), textcoords="offset points", va="top", fontsize=8, color="0.3")
        ax.set_title(_TITLES.get(metric, metric.replace("_", " ")))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=c, linewidth=2, label=name) for c, name in zip(colours, histories)]
    handles += [Line2D([], [], color="0.2", linestyle="--", label="train"),
                Line2D([], [], color="0.2", linestyle="-", label="valid")]
    if starred:
        handles.append(Line2D([], [], color="0.6", marker="*", markersize=11, markeredgecolor="black",
                              markeredgewidth=0.7, linestyle="none", label="best epoch"))
    if title:
        fig.suptitle(title)
    outside_legend(fig, handles)
    if path is not None:
        save_figure(fig, path)
    return fig


def outside_legend(fig: Figure, handles: list, *, max_columns: int = 7,
                   fontsize: float = 9) -> Legend:
    """A legend under the axes of a constrained-layout figure, in as many columns as fit its width.

    ``fig.legend(loc="outside lower center")`` centres the legend on the figure whatever its width,
    so a legend wider than the figure loses both ends (a sweep's curves.png lost the left end of
    its first run's name, "best epoch" became "bes"). Here the legend is measured (a draw without
    rendering) and given fewer columns until it fits; a label wider than the figure on its own is
    wrapped. The figure grows by the extra rows, so the axes keep their height. Returns the legend.
    """
    width = fig.bbox.width
    ncol = max(1, min(len(handles), max_columns))
    while True:
        legend = fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
                            fontsize=fontsize)
        fig.draw_without_rendering()
        box = legend.get_window_extent()
        longest = max(len(line) for h in handles for line in h.get_label().splitlines())
        if box.width <= width or (ncol == 1 and longest <= MIN_LABEL_CHARS):
            break
        legend.remove()
        if ncol == 1:   # a label is wider than the figure: wrap the labels, shorter each time
            chars = max(MIN_LABEL_CHARS, min(longest - 1, int(longest * width / box.width) - 2))
            for h in handles:
                h.set_label(textwrap.fill(" ".join(h.get_label().split()), chars))
        ncol = max(1, min(ncol - 1, int(ncol * width / box.width)))
    rows = math.ceil(len(handles) / ncol)
    if rows > 1:   # the figure's height was chosen for one row of legend
        fig.set_figheight(fig.get_figheight() + box.height * (rows - 1) / rows / fig.dpi)
    return legend


def line_plot(x: Sequence[float], ys: dict[str, Sequence[float]], *, xlabel: str, ylabel: str,
              title: str, logx: bool = False, logy: bool = False,
              path: str | Path | None = None) -> Figure:
    """One axes, one line per entry of ``ys`` against a shared ``x``.

    The generic helper studies use for what is not a learning curve: loss against learning rate
    in an LR search (``logx=True``), activation statistics against layer depth, and the like.
    ``xlabel``, ``ylabel`` and ``title`` label it; ``logx`` / ``logy`` use log scales.
    With ``path`` the figure is also saved there; it is returned either way.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, y in ys.items():
        ax.plot(list(x), list(y), linewidth=1.6, label=label)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both" if (logx or logy) else "major", alpha=0.3)
    if len(ys) > 1:
        ax.legend(frameon=False, fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """Render ``fig`` to bytes (Agg for PNG) and release it, so long studies do not leak memory."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, facecolor="white")
    if fig.canvas.manager is not None:  # made by pyplot: unregister it too (what plt.close does)
        Gcf.destroy_fig(fig)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` atomically (format from the suffix, PNG by default) and close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    return write_bytes(path, figure_bytes(fig, fmt))

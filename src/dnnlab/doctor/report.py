"""``dnnlab doctor``: read a run directory, diagnose it, print the findings, write doctor.html.

The inputs are only files the run left behind (``layers.csv``, ``metrics.csv``, ``config.toml``,
``summary.json``), so a run can be examined long after it trained. A run that diverged in its
first epoch has no ``metrics.csv`` rows; its epoch-0 layer record and its summary still say why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from dnnlab import rundir
from dnnlab.config import RunConfig, load_config
from dnnlab.doctor.diagnose import Diagnosis, diagnose, epochs_recorded, hidden_at
from dnnlab.doctor.record import LAYERS_CSV, read_layers
from dnnlab.errors import DnnlabError
from dnnlab.io import write_json
from dnnlab.report.html import Page
from dnnlab.report.plots import learning_curves
from dnnlab.report.runs import read_metrics, read_summary

REPORT = "doctor.html"
FINDINGS_JSON = "findings.json"
PANELS = (("act_mean", "activation mean", False), ("act_std", "activation std", True),
          ("dead_frac", "dead units (fraction)", False),
          ("saturated_frac", "saturated outputs (fraction)", False),
          ("out_grad_rms", "back-propagated gradient RMS", True),
          ("update_ratio", "update / weight per step", True))


@dataclass
class Examination:
    run_dir: Path
    findings: list[Diagnosis]
    records: list[dict[str, Any]]
    history: dict[str, Any]
    cfg: RunConfig
    status: str
    report: Path | None = None


def load_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], RunConfig, str, str]:
    """(records, history, config, status, message) of a run directory."""
    run_dir = Path(run_dir)
    config = rundir.run_file(run_dir, "config.toml", hint="pass a folder 'dnnlab train' printed "
                             "(or a CONFIG.toml to run a short probe)")
    if not (run_dir / LAYERS_CSV).is_file():
        raise DnnlabError(f"{run_dir} has no {LAYERS_CSV}: it was trained without layer "
                          "recording; run 'dnnlab doctor CONFIG.toml' to probe its config")
    cfg = load_config(config)
    records = read_layers(run_dir / LAYERS_CSV)
    history = read_metrics(run_dir) if (run_dir / "metrics.csv").is_file() else {}
    summary = read_summary(run_dir) if (run_dir / "summary.json").is_file() else {}
    return records, history, cfg, str(summary.get("status", "unknown")), str(summary.get("message", ""))


def examine(run_dir: str | Path, *, report: bool = True, folder: str | Path | None = None) -> Examination:
    """Diagnose a run directory; write ``findings.json`` and (with ``report``) ``doctor.html``
    into ``folder`` (default the run directory; ``dnnlab doctor`` passes another one while the run
    is still training in another process, see :func:`dnnlab.rundir.output_folder`)."""
    run_dir = Path(run_dir)
    records, history, cfg, status, message = load_run(run_dir)
    findings = diagnose(records, history, cfg, status, message)
    out = Examination(run_dir, findings, records, history, cfg, status)
    folder = Path(folder) if folder is not None else run_dir
    write_json(folder / FINDINGS_JSON, {"status": status, "findings": [f.to_json() for f in findings]})
    if report:
        out.report = write_report(out, folder)
    return out


def follows(f: Diagnosis, findings: list[Diagnosis]) -> list[str]:
    """What ``f`` follows from, as "finding N (title): how" (N numbers ``findings`` from 1)."""
    number = {g.kind: (i, g.title) for i, g in enumerate(findings, 1)}
    return [f"finding {number[kind][0]} ({number[kind][1]}): {how}" for kind, how in f.follows_from]


def remedy(f: Diagnosis, findings: list[Diagnosis]) -> tuple[str, str]:
    """(label, text) of ``f``'s remedy: its own for a cause; for a symptom, what to do if it stays
    once its cause is fixed, or "the same as finding N" when that is the cause's own remedy."""
    number = {g.kind: i for i, g in enumerate(findings, 1)}
    causes = [g for g in findings if g.kind in {k for k, _ in f.follows_from}]
    same = next((g for g in causes if g.remedy == f.remedy), None)
    if same is not None:
        return "remedy", f"the same as finding {number[same.kind]}'s"
    label = "remedy if it stays once that is fixed" if causes else "remedy"
    return label, f"{f.set_args()}  ({f.explanation})"


def format_findings(findings: list[Diagnosis]) -> str:
    """The findings as numbered text blocks, causes before the symptoms they explain; "no
    findings" when healthy. A symptom says what it follows from, and that fixing the cause comes
    first (its own remedy is for what remains)."""
    if not findings:
        return "no findings: every check is within its threshold"
    lines = []
    for i, f in enumerate(findings, 1):
        lines.append(f"{i}. {f.title}")
        for cause in follows(f, findings):
            lines.append(f"   follows from {cause}")
        lines.append(f"   evidence: {f.evidence()}")
        label, text = remedy(f, findings)
        lines.append(f"   {label + ':':<9} {text}")
        for alt in f.alternatives:
            lines.append(f"   or:       {f.set_args(alt)}")
    return "\n".join(lines)


def layer_figure(records: list[dict[str, Any]]) -> Figure:
    """Per-layer statistics across training: x = hidden layer, one line per record (colour = epoch)."""
    epochs = epochs_recorded(records)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (key, title, log) in zip(axes, PANELS):
        for i, e in enumerate(epochs):
            hidden = hidden_at(records, e)
            xs = [r["layer"] for r in hidden]
            ys = [r[key] for r in hidden]
            if log:
                ys = [y if (y is not None and math.isfinite(y) and y > 0) else math.nan for y in ys]
            ax.plot(xs, ys, color=cmap(i / max(1, len(epochs) - 1)), linewidth=1.4,
                    marker="o" if len(xs) == 1 else None, label=f"epoch {e}")
        ax.set(title=title, xlabel="hidden layer (1 = next to the input)", yscale="log" if log else "linear")
        ax.grid(True, alpha=0.3)
    if len(epochs) <= 12:
        axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle("Per-layer statistics on the probe batch, one line per record (dark = early)")
    return fig


def write_report(ex: Examination, folder: Path | None = None) -> Path:
    page = Page(f"dnnlab doctor: {ex.cfg.name}", f"{ex.run_dir} (status: {ex.status})")
    page.heading("Findings")
    if not ex.findings:
        page.verdict("No findings: every check is within its threshold.", ok=True)
    for i, f in enumerate(ex.findings, 1):
        page.heading(f"{i}. {f.title}", 3)
        label, text = remedy(f, ex.findings)
        page.bullets([f"Follows from {c}" for c in follows(f, ex.findings)]
                     + [f"Evidence: {f.evidence()}", f"{label.capitalize()}: {text}"]
                     + [f"Or: {f.set_args(a)}" for a in f.alternatives])
    if ex.findings:
        page.verdict(f"{len(ex.findings)} finding(s); first: {ex.findings[0].title}", ok=False)
    if ex.records:
        page.heading("Layers across training")
        page.figure(layer_figure(ex.records), "Per hidden layer, one line per record")
    if ex.history.get("epoch"):
        page.heading("Learning curves")
        page.figure(learning_curves({ex.cfg.name: ex.history}), "dashed: training, solid: validation")
    return page.save((folder if folder is not None else ex.run_dir) / REPORT)

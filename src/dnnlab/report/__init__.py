"""Reports: learning-curve plots, a tiny self-contained HTML builder, and run comparisons."""

from dnnlab.report.html import Page
from dnnlab.report.plots import learning_curves, line_plot, save_figure
from dnnlab.report.runs import read_metrics, read_summary, report_runs

__all__ = ["Page", "learning_curves", "line_plot", "save_figure", "read_metrics", "read_summary",
           "report_runs"]

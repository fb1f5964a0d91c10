"""The HTML page builder and the plotting helpers."""

import base64
import re

from matplotlib.figure import Figure

from dnnlab.report import Page, learning_curves, line_plot, save_figure
from dnnlab.report.sweep import variant_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_page_escapes_text_everywhere(tmp_path):
    evil = "<script>alert(1)</script>"
    page = Page(evil, evil).heading(evil).paragraph(evil).bullets([evil]).verdict(evil, ok=False)
    page.table([{"run": evil, evil: 1}])
    html = page.save(tmp_path / "p.html").read_text()
    assert "<script>" not in html
    # title tag, h1, subtitle, h2, p, li, verdict, td, th
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 9


def test_table_formats_numbers_and_missing_values():
    html = Page("t").table([{"a": 0.123456, "b": None, "c": 3}, {"a": float("nan"), "b": 0.5, "d": "x"}],
                           formats={"b": ".1%"}).to_html()
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html)
    assert cells == ["0.1235", "–", "3", "–", "–", "50.0%", "–", "x"]
    assert re.findall(r"<th>(.*?)</th>", html) == ["a", "b", "c", "d"]
    assert '<td class="num">3</td>' in html


def test_figure_embeds_png_and_verdict_classes(tmp_path):
    fig = line_plot([1, 2, 3], {"y": [1, 4, 9]}, xlabel="x", ylabel="y", title="squares")
    html = Page("f").figure(fig, caption="a & b").verdict("yes", ok=True).verdict("maybe").to_html()
    data = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert "<figcaption>a &amp; b</figcaption>" in html
    assert 'class="verdict ok"' in html and 'class="verdict"' in html


def test_learning_curves_draws_train_and_valid_per_run_and_marks():
    hist = {"a": {"epoch": [1, 2, 3], "loss": [3, 2, 1], "val_loss": [3, 2.5, 2], "accuracy": [.1, .2, .3],
                  "val_accuracy": [.1, .15, .2]},
            "b": {"loss": [2, 1], "val_loss": [2, 1.5], "accuracy": [.3, .4]}}  # b has no val_accuracy
    fig = learning_curves(hist, marks={"best": 2})
    assert isinstance(fig, Figure)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 4 + 1 and len(acc_ax.lines) == 3 + 1
    styles = [line.get_linestyle() for line in loss_ax.lines[:2]]
    assert styles == ["--", "-"]
    assert loss_ax.lines[0].get_color() == acc_ax.lines[0].get_color() != loss_ax.lines[2].get_color()
    assert list(loss_ax.lines[2].get_xdata()) == [1, 2]  # no epoch column: 1..n


def test_save_figure_writes_png_and_line_plot_log_axes(tmp_path):
    fig = line_plot([1e-4, 1e-3, 1e-2], {"a": [2, 1, 3], "b": [2, 1.5, 4]}, xlabel="lr", ylabel="loss",
                    title="LR search", logx=True)
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].lines) == 2
    path = save_figure(fig, tmp_path / "sub" / "lr.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert not list(path.parent.glob(".*.tmp"))


def _inside(fig, legend):
    """The legend's drawn box lies within the figure's canvas (nothing cut at either edge)."""
    fig.canvas.draw()
    box, canvas = legend.get_window_extent(), fig.bbox
    return (box.x0 >= canvas.x0 and box.x1 <= canvas.x1 and box.y0 >= canvas.y0
            and box.y1 <= canvas.y1)


def _histories(names):
    return {name: {"epoch": [1, 2, 3], "loss": [3, 2, 1.5 + i / 10], "val_loss": [3, 2.5, 2 + i / 10],
                   "accuracy": [.1, .2, .3], "val_accuracy": [.1, .15, .2]} for i, name in enumerate(names)}


def test_a_sweeps_long_run_names_keep_the_legend_inside_the_figure():
    # a sweep's curves.png: nine variants named by their values, the legend was cut at both ends
    names = [f"lr={lr}_seed={s}" for lr in (0.0001, 0.0003, 0.001) for s in (42, 43, 44)]
    fig = learning_curves(_histories(names))
    legend = fig.legends[0]
    assert _inside(fig, legend)
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0] == "lr=0.0001_seed=42" and labels[-1] == "best epoch"
    assert fig.get_figheight() > 4.0          # the rows the legend needed were added below
    top = max(ax.get_window_extent().y1 for ax in fig.axes)
    assert legend.get_window_extent().y1 < min(ax.get_window_extent().y0 for ax in fig.axes) < top


def test_a_one_panel_figure_and_a_label_wider_than_the_figure_stay_inside():
    # the transfer report's one-panel figure: five long labels in 5.2 inches
    names = ["5 frozen layers + new head", "4 frozen layers + new head", "top two unfrozen",
             "all unfrozen", "same net from scratch"]
    fig = learning_curves(_histories(names), metrics=("accuracy",))
    assert _inside(fig, fig.legends[0])
    # one label longer than the figure is wide is wrapped onto lines, not cut
    fig = learning_curves(_histories(["a very long run name " * 8]), metrics=("accuracy",))
    legend = fig.legends[0]
    assert _inside(fig, legend) and "\n" in legend.get_texts()[0].get_text()


def test_a_sweeps_variant_curves_keep_a_grids_long_names_inside():
    # dnnlab sweep's curves.png (seeds aggregated): a two-axis grid names its variants at length
    names = [f"lr={lr}_batch_size={b}_activation=leaky_relu" for lr in (1e-4, 3e-4) for b in (32, 64, 128)]
    runs = list(_histories(["s0", "s1", "s2"]).values())
    fig = variant_curves({name: runs for name in names}, title="Sweep: 6 variants x 3 seeds")
    legend = fig.legends[0]
    assert _inside(fig, legend)
    assert legend.get_texts()[0].get_text() == f"{names[0]} (3 seeds)"

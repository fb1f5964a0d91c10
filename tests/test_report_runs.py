"""report_runs and the run-directory readers, on run dirs written by hand."""

import base64
import json
import math
import re

import pytest

from dnnlab.errors import DnnlabError
from dnnlab.report import read_metrics, read_summary, report_runs
from dnnlab.report.runs import select_run_dirs

HEADER = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"


def make_run(root, name, rows, summary=None, extra_header=""):
    d = root / name
    d.mkdir()
    lines = [HEADER + extra_header] + [",".join(str(v) for v in r) for r in rows]
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")
    if summary is not None:
        (d / "summary.json").write_text(json.dumps({"name": name, **summary}))
    return d


@pytest.fixture
def two_runs(tmp_path):
    a = make_run(tmp_path, "elu", [(1, 2.1, 0.30, 1.9, 0.35, 1e-3, 4.0), (2, 1.7, 0.41, 1.6, 0.44, 1e-3, 6.0),
                                   (3, 1.5, 0.48, 1.7, 0.43, 1e-3, 5.0)],
                 {"status": "completed", "best_epoch": 2, "best_val_loss": 1.6, "best_val_accuracy": 0.44,
                  "test_accuracy": 0.4321, "test_loss": 1.65, "epochs_run": 3, "seconds_per_epoch": 5.0,
                  "total_seconds": 15.0, "message": ""})
    b = make_run(tmp_path, "bn", [(1, 1.8, 0.38, 1.5, 0.47, 1e-3, 7.5), (2, 1.4, 0.51, 1.45, 0.5, 1e-3, 7.7)],
                 {"status": "stopped_early", "best_epoch": 2, "best_val_loss": 1.45, "best_val_accuracy": 0.5,
                  "test_loss": None, "epochs_run": 2, "seconds_per_epoch": 7.6, "total_seconds": 15.2,
                  "message": "patience <3> ran out"})
    return a, b


def table_rows(html):
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", body)]


def test_report_has_one_row_per_run_with_its_numbers(two_runs, tmp_path):
    html_path = report_runs(list(two_runs))
    assert html_path == tmp_path / "report" / "report.html"
    assert (tmp_path / "report" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = html_path.read_text()
    assert table_rows(html) == [["elu", "completed", "2", "44.00%", "1.6000", "43.21%", "5.00", "3"],
                                ["bn", "stopped_early", "2", "50.00%", "1.4500", "–", "7.60", "2"]]
    assert "patience &lt;3&gt; ran out" in html


def test_report_is_self_contained(two_runs):
    html = report_runs(list(two_runs)).read_text()
    srcs = re.findall(r'\b(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:") for s in srcs)
    m = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in html


def test_single_run_reports_into_its_own_dir_and_fills_gaps_from_metrics(tmp_path):
    d = make_run(tmp_path, "killed", [(1, 2.0, 0.3, 1.8, 0.36, 0.01, 3.0, ""),
                                      (2, 1.6, 0.4, 1.5, 0.42, 0.01, 5.0, 0.41)],
                 extra_header=",test_accuracy")
    html_path = report_runs([d], out=None)
    assert html_path == d / "report.html" and (d / "curves.png").is_file()
    assert table_rows(html_path.read_text()) == [
        ["killed", "no summary", "2", "42.00%", "1.5000", "41.00%", "4.00", "2"]]


def test_read_metrics_columns_and_empty_cells(tmp_path):
    d = make_run(tmp_path, "r", [(1, 2.0, 0.3, "", "", 0.1, 1.5)])
    m = read_metrics(d)
    assert list(m) == HEADER.split(",")
    assert m["epoch"] == [1.0] and m["loss"] == [2.0] and m["seconds"] == [1.5]
    assert math.isnan(m["val_loss"][0])


def test_missing_metrics_names_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DnnlabError, match="metrics.csv is missing"):
        read_metrics(tmp_path / "empty")
    with pytest.raises(DnnlabError, match="metrics.csv"):
        report_runs([tmp_path / "empty"])
    with pytest.raises(DnnlabError, match="does not exist"):
        read_metrics(tmp_path / "nope")


def test_read_summary_and_damaged_metrics(two_runs, tmp_path):
    assert read_summary(two_runs[0])["test_accuracy"] == 0.4321
    with pytest.raises(DnnlabError, match="summary.json is missing"):
        read_summary(make_run(tmp_path, "nosum", []))
    bad = make_run(tmp_path, "bad", [(1, "oops", 0.3, 1, 1, 1, 1)])
    with pytest.raises(DnnlabError, match="loss='oops'"):
        read_metrics(bad)


def test_a_sweep_folder_stands_for_its_variants(two_runs, tmp_path):
    # `dnnlab report runs/mnist04-5x100-*` matches a sweep's folder too: its variants are reported
    a, b = two_runs
    sweep = tmp_path / "mnist04-sweep"
    sweep.mkdir()
    (sweep / "summary.csv").write_text("run\n")
    v2 = make_run(sweep, "lr=0.001_seed=0", [(1, 1.0, 0.5, 1.1, 0.45, 1e-3, 1.0)])
    v1 = make_run(sweep, "lr=0.0003_seed=0", [(1, 1.2, 0.4, 1.3, 0.40, 3e-4, 1.0)])
    (sweep / "report").mkdir()                           # the sweep's own report: not a run
    (tmp_path / "empty").mkdir()
    dirs, skipped = select_run_dirs([a, sweep, v1, tmp_path / "empty"])
    assert dirs == [a, v1, v2]                           # name order, v1 once
    assert skipped == [(tmp_path / "empty", "no metrics.csv: not a run directory, nor a folder of "
                                             "run directories (a sweep's)")]
    html = report_runs(dirs, tmp_path / "rep").read_text()
    assert [r[0] for r in table_rows(html)] == ["elu", "lr=0.0003_seed=0", "lr=0.001_seed=0"]

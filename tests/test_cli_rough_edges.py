"""Rough edges of the command line: report globs, --threads, help texts that name real defaults."""

import argparse
import io
import json
import re
import time
from pathlib import Path

import pytest
import torch

from dnnlab import cli
from dnnlab.errors import DnnlabError
from dnnlab.report.runs import select_run_dirs
from dnnlab.studies.explain import SOURCES, build_report
from dnnlab.studies.explain.cli import TopicProgress, previous_seconds

HEADER = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"


def _run(root, name):
    d = root / name
    d.mkdir()
    (d / "metrics.csv").write_text(HEADER + "\n1,1.0,0.5,1.1,0.4,0.001,1.0\n2,0.8,0.6,0.9,0.5,0.001,1.0\n")
    return d


def test_report_over_a_glob_skips_the_lr_finder_png_and_other_folders(tmp_path, capsys):
    _run(tmp_path, "mnist04-5x100-1"), _run(tmp_path, "mnist04-5x100-2")
    png = tmp_path / "mnist04-5x100-lr-find.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "mnist04-5x100-notes").mkdir()
    matched = sorted(tmp_path.glob("mnist04-5x100-*"))          # what the shell passes
    assert cli.main(["report", *map(str, matched), "--out", str(tmp_path / "rep"),
                     "--accept-legacy"]) == 0             # metrics alone: a folder with no record
    out, err = capsys.readouterr()
    assert f"skipped {png}: not a directory" in err
    assert "mnist04-5x100-notes: no metrics.csv" in err
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "mnist04-5x100-1" in html and "mnist04-5x100-2" in html and "lr-find" not in html


def test_a_quoted_pattern_is_expanded_and_nothing_usable_is_an_error(tmp_path):
    a, b = _run(tmp_path, "r-1"), _run(tmp_path, "r-2")
    (tmp_path / "r-x.png").write_bytes(b"png")
    dirs, skipped = select_run_dirs([str(tmp_path / "r-*")])
    assert dirs == [a, b] and [p.name for p, _ in skipped] == ["r-x.png"]
    with pytest.raises(DnnlabError, match="no run directory among the paths given.*r-x.png"):
        select_run_dirs([str(tmp_path / "r-x.png")])


def test_train_threads_sets_torch_threads_while_training_only(tmp_path, monkeypatch):
    seen = {}

    def fake_train_run(cfg, out=None, resume=None):
        seen["threads"] = torch.get_num_threads()
        raise DnnlabError("stop here")

    import dnnlab.runs
    monkeypatch.setattr(dnnlab.runs, "train_run", fake_train_run)
    config = tmp_path / "c.toml"
    config.write_text('[data]\nname = "synthetic"\n')
    before = torch.get_num_threads()
    want = 2 if before == 1 else 1
    assert cli.main(["train", str(config), "--threads", str(want)]) == 2
    assert seen["threads"] == want and torch.get_num_threads() == before
    assert cli.main(["train", str(config), "--threads", "0"]) == 2


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def test_help_texts_name_real_defaults():
    """No '(default: None)', and an option with a default names it in its help text."""
    bad = []
    for name, sp in _subparsers(cli.build_parser()):
        text = sp.format_help()
        if "default: None" in text:
            bad.append(f"{name}: prints 'default: None'")
        for a in sp._actions:
            if not a.option_strings or a.default in (None, False, argparse.SUPPRESS) or a.help is None:
                continue
            if str(a.default) not in a.help:
                bad.append(f"{name} {a.option_strings[-1]}: default {a.default!r} not in {a.help!r}")
    assert not bad, "\n".join(bad)


class _Log(io.StringIO):
    def isatty(self):
        return False


def test_explain_shows_progress_lines_per_topic(tmp_path):
    log = _Log()
    with TopicProgress("[1/2] selu (quick)", expected=12.0, stream=log, every=0.05):
        time.sleep(0.3)
    lines = log.getvalue().splitlines()
    assert lines[0] == "[1/2] selu (quick): running, last run took 12 s ..."
    assert any(line.startswith("[1/2] selu (quick): still running, 0 s (last run: 12 s)") for line in lines)
    assert lines[-1].startswith("[1/2] selu (quick): done in 0.")
    with pytest.raises(RuntimeError), TopicProgress("t", None, stream=log, every=10):
        raise RuntimeError("boom")
    assert log.getvalue().splitlines()[-1].startswith("t: failed in ")


def test_previous_seconds_reads_the_same_kind_of_run_only(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({
        "selu": {"seconds": 7.5, "quick": True}, "momentum": {"error": "x", "quick": True}}))
    assert previous_seconds(tmp_path, "selu", quick=True) == 7.5
    assert previous_seconds(tmp_path, "selu", quick=False) is None
    assert previous_seconds(tmp_path, "momentum", quick=True) is None
    assert previous_seconds(tmp_path / "nowhere", "selu", quick=True) is None


def test_explain_report_says_which_source_each_citation_is(tmp_path):
    results = {"symmetry": {"question": "q?", "verdict": "No.", "quick": True, "seed": 0,
                            "confirms": ["000 answer 1 (book)"],
                            "refutes": ["002 answer 1 (equal weights drawn with He init are fine)"],
                            "numbers": {}, "seconds": 1.0}}
    html = build_report(results, tmp_path).to_html()
    assert "confirms 000 answer 1 (book) — source 000: the book" in html
    assert "refutes 002 answer 1 (equal weights drawn with He init are fine) — source 002: " \
           "an unattributed notebook" in html
    legend = html.split("Sources the verdicts are checked against")[1].split("<h2>")[0]
    assert "the book&#x27;s own solutions" in legend and "<td>002</td>" in legend
    assert "<td>001</td>" not in legend      # only the sources cited are described
    # every source a topic module cites is described
    src = Path(__file__).resolve().parents[1] / "src" / "dnnlab" / "studies" / "explain"
    cited = {m for f in src.glob("*.py")
             for m in re.findall(r'"(\d{3}) (?:answer|exercise|\S+ card)', f.read_text())}
    assert cited and cited <= set(SOURCES), cited - set(SOURCES)

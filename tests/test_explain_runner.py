"""The explain registry, runner and CLI, exercised with a stand-in topic (no training)."""

import sys
import types
from pathlib import Path

import pytest

from dnnlab import cli
from dnnlab.errors import DnnlabError
from dnnlab.io import read_json
from dnnlab.studies import explain
from dnnlab.studies.explain import TOPICS, resolve, run_topics
from dnnlab.studies.explain.base import Finding
from dnnlab.studies.explain.cli import register

FAKE = "fake-topic"


def _fake_module(verdict="Stand-in verdict: 3 of 4 measured.", fail=False):
    mod = types.ModuleType("dnnlab.studies.explain.fake_topic")
    mod.QUESTION = "Is the stand-in question answered?"

    def run(out_dir, *, quick=False, seed=0, progress=True):
        if fail:
            raise DnnlabError("the stand-in topic failed on purpose")
        from matplotlib.figure import Figure

        from dnnlab.report import save_figure
        fig = Figure()
        fig.subplots().plot([0, 1], [seed, quick])
        png = save_figure(fig, Path(out_dir) / "fake_topic.png")
        return Finding(topic=FAKE, question=mod.QUESTION, verdict=verdict,
                       confirms=["000 answer 9 (book)"], refutes=["002 answer 9 (wrong)"],
                       numbers={"measured": 0.75, "nested": {"a": [1, 2, 3]}}, figure=png)

    mod.run = run
    return mod


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(explain, "TOPICS", (*TOPICS, FAKE))
    monkeypatch.setitem(sys.modules, "dnnlab.studies.explain.fake_topic", _fake_module())
    return FAKE


def test_registry_lists_the_nine_topics_in_the_issue_order():
    assert TOPICS == ("symmetry", "bias-init", "init-variance", "selu", "activations",
                      "momentum", "sparsity", "dropout-cost", "mc-dropout")
    assert explain.module_name("dropout-cost") == "dropout_cost"


def test_resolve_expands_all_orders_and_dedups():
    assert resolve("all") == list(TOPICS)
    assert resolve(["momentum", "symmetry", "momentum"]) == ["symmetry", "momentum"]
    assert resolve(["bias_init"]) == ["bias-init"]
    with pytest.raises(DnnlabError, match="unknown topic 'nope'; choose one of: symmetry, bias-init"):
        resolve(["nope"])


def test_a_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(explain, "TOPICS", (*TOPICS, "not-written"))
    with pytest.raises(DnnlabError, match="topic 'not-written' is not available"):
        explain.load_topic("not-written")


def test_run_topics_writes_results_and_report(fake, tmp_path, capsys):
    findings = run_topics([fake], tmp_path, quick=True, seed=3)
    assert findings[fake].seconds >= 0
    out = capsys.readouterr().out
    assert "Stand-in verdict: 3 of 4 measured." in out and "measured=0.75" in out
    results = read_json(tmp_path / "results.json")
    r = results[fake]
    assert r["verdict"] == "Stand-in verdict: 3 of 4 measured."
    assert r["confirms"] == ["000 answer 9 (book)"] and r["refutes"] == ["002 answer 9 (wrong)"]
    assert r["numbers"]["measured"] == 0.75 and r["quick"] is True and r["seed"] == 3
    assert Path(r["figure"]).name == "fake_topic.png"
    html = (tmp_path / "report.html").read_text()
    for text in ("Is the stand-in question answered?", "Stand-in verdict", "confirms 000 answer 9",
                 "refutes 002 answer 9", "nested.a", "data:image/png;base64,"):
        assert text in html
    assert not list(tmp_path.glob(".*.tmp"))


def test_results_accumulate_across_runs_in_one_folder(fake, tmp_path):
    io_results = {"symmetry": {"question": "Q", "verdict": "earlier", "confirms": [],
                               "refutes": [], "numbers": {}, "figure": None}}
    from dnnlab.io import write_json
    write_json(tmp_path / "results.json", io_results)
    run_topics([fake], tmp_path)
    results = read_json(tmp_path / "results.json")
    assert list(results) == ["symmetry", fake]
    assert results["symmetry"]["verdict"] == "earlier"


def test_a_failing_topic_is_recorded_and_reported(fake, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dnnlab.studies.explain.fake_topic", _fake_module(fail=True))
    with pytest.raises(DnnlabError, match="1 topic\\(s\\) failed \\(fake-topic\\)"):
        run_topics([fake], tmp_path)
    assert read_json(tmp_path / "results.json")[fake]["error"] == \
        "the stand-in topic failed on purpose"
    assert "Failed: the stand-in topic failed on purpose" in (tmp_path / "report.html").read_text()


def _with_explain(monkeypatch):
    """The explain command is registered by dnnlab.cli itself."""
    assert register in cli._extra_commands()


def test_cli_unknown_topic_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    _with_explain(monkeypatch)
    assert cli.main(["explain", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "unknown topic 'nope'" in err and "mc-dropout" in err
    assert not (tmp_path / "results.json").exists()


def test_cli_runs_a_topic(fake, monkeypatch, capsys, tmp_path):
    _with_explain(monkeypatch)
    assert cli.main(["explain", fake, "--quick", "--seed", "2", "--out", str(tmp_path)]) == 0
    assert "report: " in capsys.readouterr().out
    assert read_json(tmp_path / "results.json")[fake]["seed"] == 2


def test_topics_run_single_threaded_and_threads_are_restored(monkeypatch, tmp_path):
    import torch
    seen = []
    mod = _fake_module()
    inner = mod.run
    mod.run = lambda out_dir, **kw: (seen.append(torch.get_num_threads()), inner(out_dir, **kw))[1]
    monkeypatch.setattr(explain, "TOPICS", (*TOPICS, FAKE))
    monkeypatch.setitem(sys.modules, "dnnlab.studies.explain.fake_topic", mod)
    before = torch.get_num_threads()
    explain.run_topic(FAKE, tmp_path)
    assert seen == [1]
    assert torch.get_num_threads() == before

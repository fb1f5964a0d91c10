"""The explain registry, runner and CLI, exercised with a stand-in topic (no training)."""

import dataclasses
import sys
import types
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from dnnlab import cli
from dnnlab.analysis.verdict import differs
from dnnlab.config import DataConfig
from dnnlab.errors import DnnlabError
from dnnlab.io import read_json
from dnnlab.studies import explain
from dnnlab.studies.explain import TOPICS, resolve, run_topics
from dnnlab.studies.explain.base import Answer, Measurement, Topic
from dnnlab.studies.explain.cli import data_from_args, register

FAKE = "fake-topic"


def _answer(runs):
    """Supported when the seeds' ``measured`` beat 0.5 beyond noise."""
    claim = differs("the stand-in measures above one half", [r["measured"] for r in runs], 0.5,
                    asserted_by=("000 answer 9 (book)",), denied_by=("002 answer 9 (wrong)",))
    return Answer("Stand-in verdict: 3 of 4 measured", (claim,))


def _fake_module(fail=False, seen=None):
    """A topic module declaring a stand-in Topic: measure records its arguments in ``seen``."""
    mod = types.ModuleType("dnnlab.studies.explain.fake_topic")

    def measure(source, sizes, seed):
        if seen is not None:
            seen.append({"source": source, "sizes": sizes, "seed": seed,
                         "threads": torch.get_num_threads()})
        if fail:
            raise DnnlabError("the stand-in topic failed on purpose")
        return Measurement({"measured": 0.75 + 0.01 * (seed % 3), "nested": {"a": [1, 2, 3]},
                            "seed": seed},
                           {"line": [0, sizes["n"]]})

    def figure(n, drawing):
        fig = Figure()
        fig.subplots().plot(drawing["line"], [n["seed"], n["measured"]])
        fig.suptitle(n["data"])
        return fig

    mod.TOPIC = Topic(name=FAKE, question="Is the stand-in question answered?",
                      quick={"n": 1, "seeds": 3}, full={"n": 100, "seeds": 3}, measure=measure,
                      verdict=_answer,
                      figure=figure)
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
    assert "Stand-in verdict: 3 of 4 measured [supported]" in out and "measured=0.75" in out
    assert "  - Supported: the stand-in measures above one half (+0.26 [" in out
    # each seed answer is decoded in the terminal too, not only in report.html
    assert "  confirms 000 answer 9 (book) — source 000: the book\n" in out
    assert "  refutes 002 answer 9 (wrong) — source 002: an unattributed notebook\n" in out
    results = read_json(tmp_path / "results.json")
    r = results[fake]
    assert r["verdict"].startswith("Stand-in verdict: 3 of 4 measured. Supported: the stand-in")
    assert r["outcome"] == "supported" and r["verdicts"][0]["outcome"] == "supported"
    assert r["verdicts"][0]["evidence"]["a"] == [0.75, 0.76, 0.77]     # seeds 3, 4, 5
    assert r["confirms"] == ["000 answer 9 (book)"] and r["refutes"] == ["002 answer 9 (wrong)"]
    assert r["numbers"]["measured"] == 0.75 and r["quick"] is True and r["seed"] == 3
    assert [p["seed"] for p in r["per_seed"]] == [3, 4, 5]
    assert r["data_label"] == "MNIST" and r["numbers"]["data"] == "MNIST"
    assert Path(r["figure"]).name == "fake_topic.png"
    html = (tmp_path / "report.html").read_text()
    for text in ("Is the stand-in question answered?", "Stand-in verdict", "confirms 000 answer 9",
                 "refutes 002 answer 9", "nested.a", "data:image/png;base64,",
                 "quick run on MNIST, seeds 3-5", "one-sample t"):
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
    assert cli.COMMANDS["explain"][0] == register.__module__


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


def test_the_runner_gives_measure_the_sizes_the_seed_and_one_thread(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(explain, "TOPICS", (*TOPICS, FAKE))
    monkeypatch.setitem(sys.modules, "dnnlab.studies.explain.fake_topic", _fake_module(seen=seen))
    before = torch.get_num_threads()
    explain.run_topic(FAKE, tmp_path, seed=4)
    explain.run_topic(FAKE, tmp_path, quick=True)
    assert [(s["seed"], s["threads"]) for s in seen] == [(4, 1), (5, 1), (6, 1), (0, 1), (1, 1), (2, 1)]
    assert [s["sizes"]["n"] for s in seen] == [100] * 3 + [1] * 3
    assert seen[0]["source"].data is None
    assert torch.get_num_threads() == before


def test_a_module_without_a_declared_topic_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(explain, "TOPICS", (*TOPICS, FAKE))
    monkeypatch.setitem(sys.modules, "dnnlab.studies.explain.fake_topic",
                        types.ModuleType("dnnlab.studies.explain.fake_topic"))
    with pytest.raises(DnnlabError, match="declares no TOPIC = Topic"):
        explain.load_topic(FAKE)


def test_every_topic_declares_the_contract():
    for name in TOPICS:
        t = explain.load_topic(name)
        assert t.name == name and len(t.question) > 20
        assert set(t.quick) == set(t.full) and t.quick != t.full, name   # the same sizes, smaller
        assert t.png == name.replace("-", "_") + ".png"


def test_explain_runs_on_the_data_a_config_names(fake, tmp_path, monkeypatch, capsys):
    """--config / --set data.* reach measure as the config's [data] table; the label follows."""
    seen = []
    monkeypatch.setitem(sys.modules, "dnnlab.studies.explain.fake_topic", _fake_module(seen=seen))
    cfg = tmp_path / "own.toml"
    cfg.write_text('[data]\nname = "synthetic"\nlimit = 300\nvalid_size = 50\n[model]\ndepth = 2\n')
    assert cli.main(["explain", fake, "--quick", "--config", str(cfg), "--set", "data.seed=5",
                     "--out", str(tmp_path / "out")]) == 0
    source = seen[0]["source"]
    assert source.data == DataConfig(name="synthetic", limit=300, valid_size=50, seed=5)
    assert "its other tables are not used" in capsys.readouterr().err
    r = read_json(tmp_path / "out" / "results.json")[fake]
    assert r["data_label"] == "synthetic" and r["data"]["name"] == "synthetic"
    # the topic's budget caps the user's data; the user's standardize (false) is kept, and a
    # topic that asked for standardized inputs gets a note saying so
    ds = source.load(200, 50, seed=1, standardize=True)
    assert len(ds.train) == 200 and abs(float(ds.train.x.mean())) > 1e-2
    assert source.notes == ["trained on your data.standardize = false; this experiment assumes "
                            "standardized inputs (set it to true to see it as meant)"]
    assert data_from_args(None, ["data.name=synthetic"]).name == "synthetic"
    assert data_from_args(None, []) is None


def test_explain_refuses_set_keys_outside_data(tmp_path, capsys):
    assert cli.main(["explain", "symmetry", "--set", "model.depth=3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.* keys only" in err and "--set model.depth=3" in err


def test_explain_help_says_what_stays_fixed_on_own_data(capsys):
    with pytest.raises(SystemExit):
        cli.main(["explain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--config" in out and "every topic runs on that data" in out
    for topic in explain.FIXED_PART:
        assert f"{topic}: " in out


class _Loaded(Exception):
    """Raised by the stand-in loader once it has seen a topic's [data] table."""


def test_the_users_standardize_reaches_every_topic(monkeypatch, tmp_path):
    """Every topic trains on the user's [data] table as written: standardize = true stays true
    (and false stays false) whatever the topic would pick on MNIST; the limit is lowered to
    the topic's budget only when the user's is larger."""
    from dnnlab.studies.explain import base
    seen = []

    def loader(table, progress=False):
        seen.append(table)
        raise _Loaded

    monkeypatch.setattr(base, "load_from_config", loader)
    for standardize in (True, False):
        user = DataConfig(name="synthetic", standardize=standardize, classes=[0, 1], limit=10**6,
                          valid_size=40)
        for topic in TOPICS:
            seen.clear()
            with pytest.raises(_Loaded):
                explain.run_topic(topic, tmp_path, quick=True, data=user)
            table = seen[0]
            assert table.standardize is standardize, topic
            assert (table.name, table.classes, table.valid_size) == ("synthetic", [0, 1], 40), topic
            assert table.limit < 10**6, topic


def test_a_topic_whose_needed_setting_the_users_data_lacks_claims_nothing(monkeypatch, tmp_path):
    """A topic that asks for standardized inputs, on a user's table with standardize = false,
    trains on the table as written, says so, and its verdicts are not settled (no sources)."""
    mod = _fake_module()

    def measure(source, sizes, seed):
        source.load(200, 40, seed, standardize=True)
        return Measurement({"measured": 0.75 + 0.01 * (seed % 3), "seed": seed}, {"line": [0, 1]})

    mod.TOPIC = dataclasses.replace(mod.TOPIC, measure=measure)
    monkeypatch.setattr(explain, "TOPICS", (*TOPICS, FAKE))
    monkeypatch.setitem(sys.modules, "dnnlab.studies.explain.fake_topic", mod)
    user = DataConfig(name="synthetic", standardize=False, valid_size=40)
    f = explain.run_topic(FAKE, tmp_path, quick=True, data=user)
    assert f.outcome == "not settled" and f.confirms == [] and f.refutes == []
    assert f.verdict.startswith("Not settled on this data as written (trained on your "
                                "data.standardize = false; this experiment assumes standardized")
    assert f.data["standardize"] is False
    plain = explain.run_topic(FAKE, tmp_path, quick=True,
                              data=dataclasses.replace(user, standardize=True))
    assert plain.outcome == "supported" and plain.confirms == ["000 answer 9 (book)"]

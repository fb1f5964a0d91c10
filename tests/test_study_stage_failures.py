"""A stage that fails does not sink its study: it is recorded with its reason, the stages after
it go on (or are recorded as failed for want of it), a resumed run retries it, the ablation
study's report says what failed and its command exits with the 'incomplete' code."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dnnlab import cli
from dnnlab.studies import engine
from dnnlab.studies.ablation import command
from dnnlab.studies.ablation.report import minimal_report


def _ok(setup, inputs):
    return {"value": 1, "inputs": inputs}


def _boom(setup, inputs):
    raise FloatingPointError("the model diverged before its first epoch ended")


def _stages():
    return (engine.Stage("good", (), "fine", _ok),
            engine.Stage("bad", (), "fails", _boom),
            engine.Stage("after_bad", ("bad",), "needs bad", _ok),
            engine.Stage("summary", ("good", "bad"), "whatever finished", _ok,
                         takes=lambda done: {"finished": sorted(n for n in ("good", "bad")
                                                                if engine.failed(done[n]) is None)},
                         partial=True))


def test_a_failed_stage_is_recorded_and_the_study_goes_on(tmp_path):
    say = engine.Say("test", False)
    store = engine.Store(tmp_path / "stages", False, say)
    records = engine.run(_stages(), None, settings={}, store=store)
    assert records["good"]["value"] == 1
    assert records["bad"]["failed"] == ("FloatingPointError: the model diverged before its first "
                                        "epoch ended")
    assert records["after_bad"]["failed"] == "needs bad, which failed"
    assert records["summary"]["inputs"] == {"finished": ["good"]}      # partial: ran on the rest
    assert engine.failures(records) == {"bad": records["bad"]["failed"],
                                        "after_bad": "needs bad, which failed"}
    # failed records are never saved: a resumed run retries them, and reuses the others
    assert sorted(p.stem for p in (tmp_path / "stages").glob("*.json")) == ["good", "summary"]
    again = engine.run(_stages(), None, settings={},
                       store=engine.Store(tmp_path / "stages", True, say))
    assert "failed" in again["bad"] and again["good"]["value"] == 1


def test_answers_of_failed_stages_say_so_and_the_command_exits_incomplete(tmp_path, monkeypatch):
    fails = {"mc_dropout": "needs alpha_dropout, which failed", "alpha_dropout": "diverged"}
    monkeypatch.setattr(command, "selu_answer", lambda stats: {"text": "SELU ok"})
    monkeypatch.setattr(command, "batchnorm_answer", lambda *a: {"text": "BN ok"})
    answers = command.study_answers({"baseline": {"final": {}}, "batchnorm": {"final": {}},
                                     "selu_stats": {}}, fails)
    assert answers["mc_dropout"]["text"] == ("Not answered: mc_dropout failed (needs "
                                             "alpha_dropout, which failed).")
    assert answers["selu"] == {"text": "SELU ok"} and answers["batchnorm"] == {"text": "BN ok"}
    page = minimal_report(tmp_path, "Ablation", {"failed_stages": fails,
                                                 "stage_seconds": {"baseline": 1.0, **fails}})
    html = page.read_text()
    assert "Incomplete: 2 stage(s) failed (mc_dropout, alpha_dropout)" in html
    assert "Stages that finished: baseline." in html
    monkeypatch.setattr(command, "run", lambda *a, **k: {"complete": False})
    args = SimpleNamespace(config="x.toml", out=str(tmp_path), quick=True, seeds=3, device=None,
                           resume=False, max_epochs=None, patience=None, search_epochs=None,
                           threads=None, workers=None, storage=None, heartbeat=None)
    assert command.main(args) == command.INCOMPLETE == 3
    monkeypatch.setattr(command, "run", lambda *a, **k: {"complete": True})
    assert command.main(args) == 0


@pytest.mark.slow
def test_the_readme_ablation_example_runs_to_its_report(tmp_path):
    """`dnnlab study ablation examples/mnist_5x100.toml --quick`: its timing stage used to rerun
    1cycle's peak rate as a constant rate, diverge and crash the study (IndexError)."""
    example = Path(__file__).resolve().parents[1] / "examples" / "mnist_5x100.toml"
    assert cli.main(["study", "ablation", str(example), "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] and results["failed_stages"] == {}
    assert results["one_cycle"]["seconds_per_epoch"] > 0
    assert (tmp_path / "report.html").stat().st_size > 10_000

"""Honest metrics (issue 26 point 6): empty, one-class or tiny evaluation splits, a class the
training split lacks, and a one-class validation split are named in the terminal, in
summary.json (``warnings``) and in the report; a value not measured is null (never a bare NaN:
summary.json stays valid JSON), with the reason beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import run_cli
from dnnlab import io
from dnnlab.data.caveats import TINY_SPLIT, half_width, split_warnings

RNG = np.random.default_rng(5)

CONFIG = """
name = "honest"
[data]
name = "file"
path = "{path}"
valid_size = {valid}
[model]
depth = 1
width = 8
[train]
epochs = 2
batch_size = 2
progress = false
monitor = "{monitor}"
"""


def strict_json(path):
    """The file parsed as strict JSON: a bare NaN or Infinity fails, as it would in any other
    parser (Python's json module accepts them by default)."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not valid JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def train(tmp_path, path, *, valid=1, monitor="val_loss", extra=()):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(path=path, valid=valid, monitor=monitor))
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", str(cfg), "--out", str(out), "--device", "cpu", *extra])
    assert code == 0, err
    return stdout, strict_json(out / "summary.json"), out


# -- the rule, on labels ------------------------------------------------------------------------

def test_a_healthy_split_says_nothing_and_each_weakness_is_one_sentence():
    big = np.arange(600) % 3
    assert split_warnings(big, big[:TINY_SPLIT], big) == []
    warnings = split_warnings(np.array([0, 1] * 200), np.zeros(150, int), np.arange(300) % 3,
                              ["cat", "dog", "eel"])
    assert warnings == [
        "the validation split holds class 'cat' only (150 rows): its accuracy is that class's "
        "recall, not the classifier's accuracy, and early stopping and restore-best judge the "
        "model on that class alone (a class-sorted file? shuffle its rows)",
        "class 'eel' has 100 test rows but none in training: the model cannot predict them, so "
        "they count as errors"]
    assert split_warnings(big, None, None) == []                       # not measured: no word
    long = split_warnings(big, np.zeros(150, int), None, ["a\n" * 500, "b", "c"])[0]
    assert long.startswith("the validation split holds class " + repr(("a\n" * 500)[:40]))
    empty = split_warnings(big, big[:0], big[:0])
    assert [w.split(" (")[0] for w in empty] == ["the validation split is empty",
                                                 "the test split is empty"]
    assert split_warnings(big, big, big[:25]) == [
        f"the test split has 25 rows: an accuracy measured on it is uncertain by up to "
        f"±{half_width(25):.2f} (95%)"]
    assert half_width(25) == pytest.approx(0.196) and half_width(TINY_SPLIT) < 0.1


# -- end to end: the terminal, summary.json, the report ---------------------------------------------

def test_a_six_row_csv_says_its_test_accuracy_rests_on_one_row(tmp_path):
    """Before: 'test accuracy 1.0000' on one row, and no word of it anywhere."""
    x = RNG.normal(size=(6, 3))
    y = np.array([0, 1, 0, 1, 0, 1])
    path = tmp_path / "six.csv"
    path.write_text("a,b,c,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{t}\n" for r, t in zip(x, y)))
    out, summary, run = train(tmp_path, path)
    assert len(summary["warnings"]) == 4 and summary["test_accuracy"] in (0.0, 1.0)
    assert "the test split has 1 row: an accuracy measured on it is uncertain by up to ±0.98 (95%)" \
        in summary["warnings"]
    for w in summary["warnings"]:
        assert f"warning: {w}\n" in out
    code, _, err = run_cli(["report", str(run)])
    assert code == 0, err
    html = (run / "report.html").read_text()
    assert "warning: the test split has 1 row" in html


def test_valid_size_zero_writes_null_with_its_reason_not_a_bare_nan(tmp_path):
    """Before: "best_val_loss": NaN in summary.json (invalid JSON)."""
    x = RNG.normal(size=(200, 4)).astype(np.float32)
    y = np.arange(200) % 2
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:120], y_test=y[:120])
    _, summary, _ = train(tmp_path, tmp_path / "d.npz", valid=0, monitor="loss")
    assert summary["best_val_loss"] is None and summary["best_val_accuracy"] is None
    assert summary["warnings"] == [
        "the validation split is empty (data.valid_size = 0, or data.classes kept none of its "
        "rows): best_val_loss and best_val_accuracy are null, not measured"]


def test_classes_that_empty_the_test_split_say_so(tmp_path):
    """Before: no test_accuracy at all, and no word of why."""
    x = RNG.normal(size=(300, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(300) % 3, x_test=x[:30],
             y_test=np.zeros(30, int))
    out, summary, _ = train(tmp_path, tmp_path / "d.npz", valid=120,
                            extra=("--set", "data.classes=[1, 2]"))
    assert summary["test_accuracy"] is None and summary["test_loss"] is None
    assert "warning: the test split is empty (the data has none, or data.classes kept none of its " \
           "rows): test_loss and test_accuracy are null, not measured" in out
    assert "test accuracy" not in out.splitlines()[0]


def test_a_class_sorted_npz_and_a_class_only_in_test_are_named(tmp_path):
    """A class-sorted x_train puts one class in the validation rows; a label only x_test holds
    counts as errors. Before: both trained and reported without a word."""
    x = RNG.normal(size=(300, 4)).astype(np.float32)
    y = np.sort(np.arange(300) % 2)                     # 150 zeros, then 150 ones
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:150],
             y_test=np.arange(150) % 3)
    _, summary, _ = train(tmp_path, tmp_path / "d.npz", valid=120)
    assert summary["warnings"][0].startswith("the validation split holds class '0' only (120 rows)")
    assert "class '2' has 50 test rows but none in training" in summary["warnings"][1]


def test_every_json_file_is_strict_json(tmp_path):
    io.write_json(tmp_path / "a.json", {"nan": float("nan"), "inf": np.float32("inf"),
                                        "rows": np.array([1.0, np.nan]), "ok": [1, 2.5, "x"]})
    assert strict_json(tmp_path / "a.json") == {"nan": None, "inf": None, "rows": [1.0, None],
                                                "ok": [1, 2.5, "x"]}


def test_classes_are_kept_before_the_validation_rows_so_they_never_empty_it(tmp_path):
    """A class-sorted file with data.classes = [1, 2]: the validation rows are taken from the
    kept classes (they were taken first, and the class selection then emptied the split), and the
    one-class validation split that a sorted file gives is named."""
    x = RNG.normal(size=(300, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.sort(np.arange(300) % 3), x_test=x[:30],
             y_test=np.arange(30) % 3)
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "d.npz", valid=50, monitor="val_loss"))
    code, _, err = run_cli(["train", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu",
                            "--set", "data.classes=[1, 2]"])
    assert code == 0, err
    summary = strict_json(tmp_path / "run" / "summary.json")
    assert summary["warnings"][0].startswith("the validation split holds class '1' only (50 rows)")


def test_a_sweep_names_the_weak_splits_once_and_records_them_per_variant(tmp_path):
    x = RNG.normal(size=(300, 4)).astype(np.float32)
    y = np.arange(300) % 2
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "d.npz", valid=150, monitor="val_loss"))
    code, out, err = run_cli(["sweep", str(cfg), "--out", str(tmp_path / "sw"), "--device", "cpu",
                              "--set", "optim.lr=1e-3,1e-2"])
    assert code == 0, err
    sentence = "the test split has 30 rows: an accuracy measured on it is uncertain by up to ±0.18 (95%)"
    assert out.count(f"warning: {sentence}\n") == 1
    runs = sorted(p for p in (tmp_path / "sw").iterdir() if (p / "summary.json").is_file())
    assert len(runs) == 2
    for run in runs:
        assert strict_json(run / "summary.json")["warnings"] == [sentence]

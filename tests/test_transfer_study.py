"""`dnnlab study transfer --quick`: the whole pipeline end to end on the MNIST in the package."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from dnnlab.studies.common import book_rows, draw_per_class, mean_std, pm, summarize
from dnnlab.studies.transfer import BOOK, LABELS

KEYS = ("digits04_default", "digits04_tuned", "digits04_batchnorm", "digits04_dropout", "frozen5",
        "frozen5_cached", "frozen4", "unfreeze2", "unfreeze_all", "scratch")


def study_parser() -> argparse.ArgumentParser:
    from dnnlab.studies.cli import register
    p = argparse.ArgumentParser(prog="dnnlab")
    register(p.add_subparsers(dest="command"), lambda sp, required=True: None)
    return p


def test_quick_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "transfer"
    args = study_parser().parse_args(["study", "transfer", "--quick", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "caching speedup" in printed and str(out / "report.html") in printed

    results = json.loads((out / "results.json").read_text())
    assert set(KEYS) <= set(results)
    for key in KEYS:
        r = results[key]
        assert 0.2 < r["test_accuracy_mean"] <= 1.0, key          # 5 classes: chance is 0.2
        assert r["test_accuracy_std"] >= 0 and len(r["test_accuracy_values"]) == 3, key
        assert r["train_seconds"] > 0, key
        assert r["book_test_accuracy"] == pytest.approx(BOOK[key] / 100)
    # the 0-4 networks learn (quick mode trains on 2,000 images for 3 epochs)
    assert results["digits04_default"]["test_accuracy_mean"] > 0.9
    # caching trains the same head, faster
    f5, c5 = results["frozen5"], results["frozen5_cached"]
    assert c5["test_accuracy_values"] == pytest.approx(f5["test_accuracy_values"], abs=1e-6)
    assert c5["max_head_difference"] < 1e-4
    assert c5["speedup"] == pytest.approx(f5["train_seconds"] / c5["train_seconds"])
    assert c5["speedup"] > 2
    assert f5["pretrained_unchanged"] is True
    # training all the layers beats training only the head on 100 images per digit
    assert results["unfreeze_all"]["test_accuracy_mean"] > results["frozen5"]["test_accuracy_mean"]
    assert results["meta"]["quick"] is True and results["meta"]["seeds"] == [0, 1, 2]

    html = (out / "report.html").read_text()
    assert "64.02" in html and "Caching the frozen layers" in html and "<img src=\"data:image/png" in html
    run_dir = out / "digits04_default" / "seed0"
    assert (run_dir / "model.safetensors").exists()
    assert (run_dir / "checkpoints" / "epoch_0002.safetensors").exists()
    from dnnlab.config import load_config
    tuned = load_config(out / "tune" / "best_config.toml")
    assert tuned.model.width == results["digits04_tuned"]["config"]["width"]


def test_common_helpers():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))    # sample std (ddof=1)
    assert mean_std([0.5]) == (0.5, 0.0)
    assert mean_std([]) == (None, None)                               # JSON-safe: no NaN
    assert mean_std([0.5, None, float("nan"), 1.5]) == (1.0, pytest.approx(0.7071, abs=1e-4))
    s = summarize([{"seed": 0, "test_accuracy": 0.9}, {"seed": 1, "test_accuracy": 0.8}],
                  ["test_accuracy"])
    assert s["test_accuracy_mean"] == pytest.approx(0.85) and s["seeds"] == [0, 1]
    assert s["test_accuracy_values"] == [0.9, 0.8] and s["n_seeds"] == 2
    assert pm(0.98912, 0.0012) == "98.91 ± 0.12"
    rows = book_rows({"frozen5": {"test_accuracy_mean": 0.7, "test_accuracy_std": 0.01,
                                  "n_seeds": 3, "train_seconds": 1.5}}, BOOK, LABELS)
    by_name = {r["experiment"]: r for r in rows}
    assert by_name[LABELS["frozen5"]]["ours − book (pts)"] == pytest.approx(70 - 64.02)
    assert by_name[LABELS["scratch"]]["ours − book (pts)"] is None   # not run: no comparison
    import numpy as np
    y = np.repeat(np.arange(3), [5, 7, 9])
    idx = draw_per_class(y, 4, seed=1)
    assert np.bincount(y[idx]).tolist() == [4, 4, 4]
    assert idx.tolist() == draw_per_class(y, 4, seed=1).tolist()


def test_study_command_lists_every_registered_study(capsys):
    from dnnlab.studies.cli import STUDIES
    p = study_parser()
    args = p.parse_args(["study", "transfer", "--seeds", "4", "--pretrained", "tuned",
                         "--device", "cpu"])
    assert (args.seeds, args.pretrained, args.device, args.quick) == (4, "tuned", "cpu", False)
    assert args.func.__module__ == "dnnlab.studies.transfer.command"
    bare = p.parse_args(["study"])
    assert bare.func(bare) == 2                       # no study named: help, exit code 2
    shown = capsys.readouterr().out
    assert all(name in shown for name in STUDIES)


def test_a_transfer_verdict_calls_a_difference_real_by_the_labs_one_rule():
    """'better model' only when Welch's p over the seeds' test accuracies is under 0.05
    (:func:`dnnlab.analysis.stats.compare`): a gap of 2.5 standard errors over 3 seeds is not."""
    from dnnlab.studies.transfer.answers import _gives

    def entry(values):
        return {"test_accuracy_values": values, "test_accuracy_mean": float(np.mean(values)),
                "test_accuracy_std": float(np.std(values, ddof=1))}
    base = entry([0.9900, 0.9910, 0.9890])
    near = entry([0.99204, 0.99304, 0.99104])              # t = 2.5, p = 0.067
    text, better = _gives(near, base)
    assert not better and "no clearly different model (+0.20 points" in text
    far = entry([0.9950, 0.9960, 0.9940])
    text, better = _gives(far, base)
    assert better and "a better model (+0.50 points)" in text
    text, better = _gives(base, far)
    assert not better and "a worse model (-0.50 points)" in text

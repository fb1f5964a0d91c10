"""The CIFAR-10 study: its variants, its answers from hand-made runs, the whole pipeline on tiny
generated data (with resume), the CLI's one-line error without data, and ``--quick`` on the real
CIFAR-10 when it is present."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dnnlab import cli
from dnnlab.studies import cifar10 as study
from dnnlab.studies import engine
from dnnlab.studies.ablation import plan
from dnnlab.studies.ablation import stages as ladder_stages
from dnnlab.studies.ablation.answers import batchnorm_answer, epochs_to_reach, mc_dropout_answer, selu_answer
from dnnlab.studies.ablation.report import shortfall_note
from dnnlab.studies.cifar10 import plan as study_plan
from dnnlab.studies.cifar10.plan import (
    BOOK,
    FULL,
    LR_GRID,
    QUICK,
    TRAINED,
    VARIANTS,
    protocol,
    variant_config,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULT_KEYS = ("lr", "val_accuracy_mean", "val_accuracy_std", "test_accuracy_mean",
               "best_epoch_mean", "seconds_per_epoch", "seeds", "engine_seconds_per_epoch")


# ------------------------------------------------------------------ the plan
def test_protocol_defaults_are_the_books():
    assert (FULL.max_epochs, FULL.patience, FULL.batch_size) == (100, 20, 32)
    assert (FULL.onecycle_epochs, FULL.onecycle_batch) == (15, 128)
    assert FULL.dropout_rates == (0.05, 0.1, 0.2, 0.4)
    assert FULL.mc_samples >= 10 and QUICK.mc_samples >= 10
    assert not FULL.shortened and QUICK.shortened
    assert protocol(max_epochs=30).shortened and protocol(max_epochs=None) == FULL
    # 1e-5 ... 1e-2, log-spaced: equal ratios between neighbours
    assert LR_GRID[0] == pytest.approx(1e-5) and LR_GRID[-1] == pytest.approx(1e-2)
    ratios = np.diff(np.log10(LR_GRID))
    assert np.allclose(ratios, 0.5, atol=0.01)


def test_variant_configs_follow_the_exercise():
    b = variant_config("baseline", FULL, lr=5e-5)
    assert (b.model.depth, b.model.width, b.model.activation, b.model.init) == (20, 100, "elu", "he_normal")
    assert (b.optim.name, b.optim.lr, b.data.standardize) == ("nadam", 5e-5, False)
    assert ((b.train.batch_size, b.train.epochs, b.train.patience, b.train.monitor)
            == (32, 100, 20, "val_loss"))
    bn = variant_config("batchnorm", FULL)
    assert bn.model.batch_norm == "before" and bn.model.input_batch_norm
    s = variant_config("selu", FULL)
    assert (s.model.activation, s.model.init, s.model.batch_norm, s.data.standardize) == (
        "selu", "lecun_normal", "none", True)
    a = variant_config("alpha_dropout", FULL, dropout=0.2)
    assert (a.model.dropout, a.model.dropout_kind, a.model.activation) == (0.2, "alpha", "selu")
    oc = variant_config("one_cycle", FULL, dropout=0.05, max_lr=0.03)
    assert (oc.optim.name, oc.optim.schedule.name, oc.optim.schedule.max_lr) == ("sgd", "1cycle", 0.03)
    assert (oc.train.batch_size, oc.train.epochs) == (128, 15)
    assert oc.train.patience == 15                  # never stops a 15-epoch cycle early
    assert oc.model.dropout == 0.05 and oc.data.standardize


# ------------------------------------------------------------------ the answers
def _run(val_losses, seconds, val_acc, test_acc, seed=0):
    n = len(val_losses)
    best = int(np.argmin(val_losses)) + 1
    return {"seed": seed, "best_epoch": best, "val_accuracy": val_acc, "test_accuracy": test_acc,
            "history": {"epoch": list(range(1, n + 1)), "val_loss": val_losses,
                        "seconds": [seconds] * n}}


def test_epochs_to_reach_counts_epochs_and_seconds():
    h = {"epoch": [1, 2, 3], "val_loss": [2.0, None, 1.4], "seconds": [1.0, 2.0, 3.0]}
    assert epochs_to_reach(h, 1.5) == (3, 6.0)
    assert epochs_to_reach(h, 1.0) == (None, None)


def test_batchnorm_answer_from_hand_made_runs():
    # three seeds a side: no verdict stands on fewer (two seeds make "better" not settled)
    base = {"runs": [_run([2.0, 1.6, 1.5, 1.55], 10.0, 0.47, 0.46),
                     _run([2.0, 1.7, 1.5, 1.52], 10.0, 0.48, 0.47, seed=1),
                     _run([2.0, 1.65, 1.5, 1.53], 10.0, 0.475, 0.465, seed=2)],
            "seconds_per_epoch": 10.0}
    bn = {"runs": [_run([1.6, 1.45, 1.4], 12.0, 0.53, 0.52), _run([1.7, 1.5, 1.3], 12.0, 0.55, 0.54, 1),
                   _run([1.65, 1.48, 1.35], 12.0, 0.54, 0.53, 2)],
          "seconds_per_epoch": 12.0}
    a = batchnorm_answer(base, bn)
    assert a["target_val_loss"] == pytest.approx(1.5)
    assert a["bn_epochs_to_target"] == pytest.approx(2.0)         # epoch 2 in both BN runs
    assert a["bn_seconds_to_target"] == pytest.approx(24.0)
    assert a["baseline_epochs_to_best"] == pytest.approx(3.0)
    assert a["baseline_seconds_to_best"] == pytest.approx(30.0)
    assert a["converges_faster"] and a["better_model"]
    assert a["time_per_epoch_change"] == pytest.approx(0.2)
    assert "2.0 epochs" in a["text"] and "+20% per epoch" in a["text"] and "54.0 ± 1.0 %" in a["text"]
    assert "Supported: BN gives a better model (validation accuracy) (+6.5 pts [" in a["text"]
    assert [v["outcome"] for v in a["verdicts"]] == ["supported", "supported"]
    two = batchnorm_answer({**base, "runs": base["runs"][:2]}, {**bn, "runs": bn["runs"][:2]})
    assert not two["better_model"] and "Not settled: BN gives a better model" in two["text"]
    timed = batchnorm_answer(base, bn, {"baseline": 5.0, "batchnorm": 4.0})   # measured apart
    assert timed["bn_seconds_to_target"] == pytest.approx(8.0)
    assert timed["baseline_seconds_to_best"] == pytest.approx(15.0)
    assert timed["time_per_epoch_change"] == pytest.approx(-0.2) and timed["converges_faster_wall"]
    assert "-20% per epoch; one model" in timed["text"]


def test_batchnorm_answer_when_bn_never_reaches_the_baseline():
    base = {"runs": [_run([1.5, 1.4], 1.0, 0.5, 0.5)], "seconds_per_epoch": 1.0}
    bn = {"runs": [_run([1.9, 1.8], 1.0, 0.4, 0.4)], "seconds_per_epoch": 1.0}
    a = batchnorm_answer(base, bn)
    assert a["seeds_reaching_target"] == 0 and not a["converges_faster"] and not a["better_model"]
    assert "did not converge faster" in a["text"]


def _layers(mean, std, n=20):
    return [{"layer": i + 1, "mean": mean(i), "std": std(i)} for i in range(n)]


def test_selu_answer_tells_normalized_from_drifting():
    flat = _layers(lambda i: 0.01, lambda i: 1.0)
    grow = _layers(lambda i: 0.1 * i, lambda i: 1.0 + 0.3 * i)
    stats = {"epochs": 3, "combos": [
        {"label": "standardized inputs, LeCun init", "inputs": "standardized", "init": "LeCun",
         "at_init": flat, "trained": flat},
        {"label": "raw inputs, He init", "inputs": "raw", "init": "He", "at_init": grow,
         "trained": _layers(lambda i: None, lambda i: None)}],
        "final": flat}
    a = selu_answer(stats)
    assert a["self_normalizes"]
    band = a["bands"]["raw inputs, He init"]["at_init"]
    assert not band["normalized"] and band["last_std"] == pytest.approx(1.0 + 0.3 * 19)
    assert not a["bands"]["raw inputs, He init"]["trained"]["finite"]
    assert "self-normalizes" in a["text"] and "6.70" in a["text"]
    assert a["stays_normalized_when_trained"] and "Training keeps it within" in a["text"]
    drifted = selu_answer({**stats, "final": grow})
    assert drifted["self_normalizes"] and not drifted["stays_normalized_when_trained"]
    assert "Training does not keep it there" in drifted["text"]
    assert "the last (layer 20) at" in a["text"]
    short = {**stats, "combos": [{**c, "at_init": c["at_init"][:4], "trained": c["trained"][:4]}
                                 for c in stats["combos"]], "final": flat[:4]}
    text = selu_answer(short)["text"]          # a 4-layer net (study ablation on the user's config)
    assert "the last (layer 4) at" in text and "layer 20" not in text


def test_mc_dropout_answer_compares_with_plain_inference():
    def ev(acc, ent, ece, secs):
        return {"accuracy": acc, "entropy": ent, "ece": ece, "nll": 1.0, "seconds": secs}
    per = [{"seed": s, "val": {"plain": ev(0.50, 1.0, 0.10, 0.01), "mc": ev(0.52, 1.2, 0.04, 0.5)},
            "test": {"plain": ev(0.49, 1.0, 0.10, 0.02), "mc": ev(0.50, 1.2, 0.05, 1.0)}}
           for s in range(3)]
    a = mc_dropout_answer({"n_samples": 50, "test_images": 10000, "per_seed": per})
    assert a["beats_plain"] and a["better_calibrated"]
    assert a["accuracy_gain_val"] == pytest.approx(0.02) and a["cost_ratio"] == pytest.approx(50)
    assert "50x" in a["text"] and "52.0%" in a["text"] and "4.00%" in a["text"]
    assert a["val_vs_plain"]["test"] == "paired" and a["val_vs_plain"]["beyond_noise"]
    # the same mean gain, but one seed gains and one loses: paired by seed it is seed noise
    for s, gain in zip(per, (0.05, -0.02, 0.03)):
        s["val"]["mc"] = ev(0.50 + gain, 1.2, 0.04, 0.5)
    noisy = mc_dropout_answer({"n_samples": 50, "test_images": 10000, "per_seed": per})
    assert noisy["accuracy_gain_val"] == pytest.approx(0.02) and not noisy["beats_plain"]
    assert "does not beat (within seed noise)" in noisy["text"] and "paired p = 0.4" in noisy["text"]


def test_shortfall_note_names_the_reasons():
    r = {"val_accuracy_mean": 0.45, "val_accuracy_std": 0.01, "best_epoch_mean": 10, "max_epochs": 10}
    note = shortfall_note("baseline", r, protocol(max_epochs=10), BOOK)
    assert "2.6 points below" in note and "capped at 10 epochs" in note and "at the cap" in note
    assert (shortfall_note("baseline", {**r, "val_accuracy_mean": 0.50}, FULL, BOOK)
            == "beats the book by 2.4 points")
    assert shortfall_note("selu", {**r, "val_accuracy_mean": 0.50}, FULL, BOOK) == "within the book's range"


def test_finder_minimum_ignores_the_start_of_the_sweep_and_gives_1cycle_candidates():
    from dnnlab.studies.ablation.stages import finder_minimum, onecycle_candidates
    lrs = [10.0 ** (-6 + i * 0.25) for i in range(25)]            # 1e-6 ... 1
    losses = [2.0] + [2.3] * 15 + [2.1, 1.9, 1.7, 1.8, 2.5, 4.0, None, None, None]
    m = finder_minimum(lrs, losses)
    assert m == pytest.approx(lrs[18])                            # not lrs[0]
    assert onecycle_candidates({"minimum": 0.3}) == (0.03, 0.09, 0.3, 0.9)


def test_the_studys_lr_finder_reruns_to_the_bit_whatever_the_thread_count():
    """1cycle's candidates are multiples of the finder's minimum, so the finder runs on one thread
    (FINDER_THREADS): the same curve whether the process had 1 or 2 threads before, which it then
    gets back."""
    import torch

    from dnnlab.data import synthetic
    data = synthetic(n_train=2048, n_valid=64, n_test=64, n_features=3072, n_classes=10, seed=0)
    cfg = study_plan.variant_config("one_cycle", QUICK, dropout=0.1, device="cpu")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, depth=3, width=100))
    before = torch.get_num_threads()
    curves = []
    try:
        for n in (2, 1, 2):
            torch.set_num_threads(n)
            rec = ladder_stages.lr_finder(cfg, data, 60, device="cpu")
            assert torch.get_num_threads() == n
            curves.append((rec["losses"], rec["minimum"]))
    finally:
        torch.set_num_threads(before)
    assert curves[0] == curves[1] == curves[2]


# ------------------------------------------------------------------ the pipeline on tiny data
@pytest.fixture
def tiny_cifar(monkeypatch):
    """Generated stand-in for CIFAR-10 (10 classes, 48 features), so the pipeline runs in seconds."""
    from dnnlab.data import standardized, synthetic

    def fake_load(setup):
        raw = synthetic(n_train=256, n_valid=96, n_test=96, n_features=48, n_classes=10, seed=0)
        return raw, standardized(raw)

    monkeypatch.setattr(ladder_stages, "load_data", fake_load)
    monkeypatch.setattr(engine, "_CACHE", {})        # no data another test loaded
    monkeypatch.setattr(plan, "QUICK", dataclasses.replace(plan.QUICK, finder_steps=30,
                                                           stats_examples=64))


def test_pipeline_writes_results_and_report_and_resumes(tiny_cifar, tmp_path, capsys, monkeypatch):
    out = tmp_path / "c10"
    # workers=1: the stand-in data exists in this process only (worker processes would load the
    # real CIFAR-10); the parallel stages run in test_quick_study_on_real_cifar10
    res = study.run(out, quick=True, seeds=2, device="cpu", progress=False, workers=1)
    saved = json.loads((out / "results.json").read_text())
    for key in VARIANTS:
        for field in RESULT_KEYS:
            assert field in saved[key], (key, field)
        assert len(saved[key]["seeds"]) == 2
        assert 0.0 <= saved[key]["val_accuracy_mean"] <= 1.0
        assert saved[key]["book_val_accuracy"] == list(BOOK[key])
    assert saved["max_epochs"] == QUICK.max_epochs and saved["shortened"] and saved["quick"]
    assert saved["baseline"]["lr"] in LR_GRID
    assert saved["alpha_dropout"]["dropout"] in QUICK.dropout_rates
    assert saved["mc_dropout"]["n_samples"] == QUICK.mc_samples
    assert saved["one_cycle"]["lr"] > 0
    oc = json.loads((out / "stages" / "one_cycle.json").read_text())["record"]
    assert oc["search"]["key"] == "optim.schedule.max_lr"
    assert len(oc["search"]["rows"]) == len(plan.ONECYCLE_PEAKS)
    assert saved["one_cycle"]["lr"] == oc["search"]["best"]
    for key in ("batchnorm", "selu", "mc_dropout"):
        assert saved["answers"][key]["text"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4          # curves, search, finder, SELU
    assert "47.6%" in html and "52.0-52.8%" in html and "http" not in html.split("<body>")[1]
    assert capsys.readouterr().out == ""                      # progress=False prints nothing
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    assert stages == sorted([*TRAINED, "mc_dropout", "selu_stats", "doctor", "timing"])
    assert set(saved["baseline"]["doctor"] or {}) >= ({"kind", "title"} if saved["baseline"]["doctor"]
                                                      else set())
    # a resumed run reuses every finished stage and reports the same numbers
    again = study.run(out, quick=True, seeds=2, device="cpu", progress=False, resume=True,
                      workers=1)
    for key in VARIANTS:
        assert again[key]["val_accuracy_mean"] == res[key]["val_accuracy_mean"]
    assert again["stage_seconds"] == res["stage_seconds"]
    # more MC samples redo the MC Dropout stage alone
    monkeypatch.setattr(plan, "QUICK", dataclasses.replace(plan.QUICK, mc_samples=12))
    third = study.run(out, quick=True, seeds=2, device="cpu", progress=False, resume=True,
                      workers=1)
    assert third["mc_dropout"]["n_samples"] == 12
    changed = {k for k in res["stage_seconds"] if third["stage_seconds"][k] != res["stage_seconds"][k]}
    assert changed == {"mc_dropout"}


def test_bad_options_fail_before_any_work(tmp_path):
    from dnnlab.errors import DnnlabError
    with pytest.raises(DnnlabError, match="--max-epochs 0"):
        study.run(tmp_path, max_epochs=0, progress=False)
    with pytest.raises(DnnlabError, match="seed"):
        study.run(tmp_path, seeds=0, progress=False)


def test_cli_without_data_or_network_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("DNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("DNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DNNLAB_MIRROR", "http://127.0.0.1:9")      # nothing listens: no network
    code = cli.main(["study", "cifar10", "--quick", "--data-dir", str(empty),
                                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "cifar10" in err and "not found" in err
    assert "--data-dir" in err


# ------------------------------------------------------------------ --quick on real CIFAR-10
def _cifar_dir() -> Path | None:
    env = os.environ.get("DNNLAB_DATA_DIR")
    for d in (Path(env) if env else None, SHARED):
        if d is not None and ((d / "cifar10.npz").exists() or (d / "cifar-10-binary.tar.gz").exists()):
            return d
    return None


def test_quick_study_on_real_cifar10(monkeypatch, tmp_path):
    data_dir = _cifar_dir()
    if data_dir is None:
        pytest.skip("CIFAR-10 not found: set DNNLAB_DATA_DIR to a folder holding cifar10.npz or "
                    "cifar-10-binary.tar.gz (or put ../shared/data beside the checkout)")
    out = tmp_path / "cifar10"
    code = cli.main(["study", "cifar10", "--quick", "--data-dir", str(data_dir),
                                   "--out", str(out), "--device", "cpu"])
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["train_images"] == QUICK.train_limit and saved["quick"]
    for key in VARIANTS:
        assert all(field in saved[key] for field in RESULT_KEYS)
        assert len(saved[key]["seeds"]) == 3
        assert saved[key]["val_accuracy_mean"] > 0.1 or key in ("mc_dropout", "one_cycle",
                                                               "alpha_dropout")
    assert math.isfinite(saved["wall_seconds"]) and saved["wall_seconds"] < 180
    assert (out / "report.html").stat().st_size > 50_000
    windows = {p.stem: json.loads(p.read_text())["record"]["stage_window"]
               for p in (out / "stages").glob("*.json")}
    declared = ladder_stages.stages()
    assert set(windows) == {s.name for s in declared}
    for s in declared:                               # the worker processes kept the graph's order
        assert all(windows[n][1] <= windows[s.name][0] for n in s.needs), s.name


@pytest.mark.parametrize("variant, example", [
    ("baseline", "cifar10_20x100.toml"), ("batchnorm", "cifar10_batchnorm.toml"),
    ("selu", "cifar10_selu.toml"), ("alpha_dropout", "cifar10_alpha_dropout.toml"),
    ("one_cycle", "cifar10_1cycle.toml")])
def test_example_configs_are_the_studys_variants(variant, example):
    """examples/cifar10_*.toml train what the study trains (at the book's rates)."""
    from dnnlab.config import load_config
    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / example)
    ours = variant_config(variant, FULL, lr=cfg.optim.lr, dropout=cfg.model.dropout or 0.1,
                          max_lr=cfg.optim.schedule.max_lr)
    assert cfg.model == ours.model and cfg.data.standardize == ours.data.standardize
    assert (cfg.optim.name, cfg.optim.schedule.name) == (ours.optim.name, ours.optim.schedule.name)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.patience) == (
        ours.train.epochs, ours.train.batch_size, ours.train.patience)

import csv
import json
import math
import statistics
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from dnnlab import cli
from dnnlab.analysis.stats import mean_interval, pm, t_cdf, t_quantile, welch
from dnnlab.config import group_key, replace
from dnnlab.errors import ConfigError
from dnnlab.runs.sweep import (
    aggregate,
    format_table,
    grid,
    per_model_seconds,
    split_values,
    sweep,
    sweep_id,
    variant_name,
)
from dnnlab.storage import open_storage


def test_grid_is_every_combination_and_keeps_lists_whole():
    assert split_values("[10, 20],[30]") == ["[10, 20]", "[30]"]
    g = grid(["optim.lr=1e-4,1e-3", "model.hidden=[8,8],[16]"])
    assert len(g) == 4
    assert {"optim.lr": 1e-4, "model.hidden": [16]} in g
    with pytest.raises(ConfigError, match="empty item"):
        grid(["optim.lr=1e-4,,1e-3"])


def _csv(path):
    return list(csv.DictReader(open(path)))


def test_sweep_writes_one_run_per_model_and_one_summary_row_per_variant(tiny, tiny_cfg, tmp_path,
                                                                          monkeypatch):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    cfg = replace(tiny_cfg, **{"train.epochs": 2})
    out = sweep(cfg, ["optim.lr=1e-3,1e-2", "model.width=8,16"], seeds=3, out=tmp_path / "sw",
                progress=False)
    runs = _csv(out / "runs.csv")
    assert len(runs) == 12 and all(r["status"] == "completed" for r in runs)
    for r in runs:
        run = out / r["run"]
        assert (run / "metrics.csv").exists() and (run / "model.safetensors").exists()
        assert r["run"] == f"{r['variant']}_seed={r['seed']}"
    variants = _csv(out / "summary.csv")
    assert sorted(v["variant"] for v in variants) == sorted(
        f"lr={lr}_width={w}" for lr in (0.001, 0.01) for w in (8, 16))
    means = [float(v["best_val_loss_mean"]) for v in variants]
    assert means == sorted(means)                              # best first
    for v in variants:
        losses = [float(r["best_val_loss"]) for r in runs if r["variant"] == v["variant"]]
        assert v["seeds"] == "3" and v["failed"] == "0"
        assert float(v["best_val_loss_mean"]) == pytest.approx(statistics.fmean(losses))
        assert float(v["best_val_loss_std"]) == pytest.approx(statistics.stdev(losses))
        assert float(v["best_val_loss_ci95_low"]) < float(v["best_val_loss_mean"]) \
            < float(v["best_val_loss_ci95_high"])
    assert variants[0]["vs_best"] == "best" and variants[0]["welch_p_vs_best"] == ""
    assert all(v["vs_best"] in ("worse beyond noise", "within noise") for v in variants[1:])
    assert all(0 <= float(v["welch_p_vs_best"]) <= 1 for v in variants[1:])
    table = format_table(out)
    assert len(table.splitlines()) == 1 + 4 and "vs best" in table.splitlines()[0]
    assert table.splitlines()[1].split()[:2] == [variants[0]["variant"], "3/3"]
    html = (out / "report.html").read_text()
    assert "4 variants × 3 seeds" in html and "Welch" in html and (out / "curves.png").exists()
    # per model: the lr variants of one width share a stack of 6 models, whose epoch times
    # metrics.csv holds (nobody stops early: each model's share is a sixth of each epoch)
    stack = [float(r["seconds"]) for r in _csv(out / runs[0]["run"] / "metrics.csv")]
    per_model = float(runs[0]["seconds_per_epoch_per_model"])
    assert per_model == pytest.approx(statistics.median(stack) / 6, rel=1e-3)   # csv rounds a little


def test_variant_curves_draw_one_line_and_one_band_per_variant():
    from matplotlib.collections import PolyCollection

    from dnnlab.report.sweep import variant_curves
    seeds = [{"epoch": [1, 2, 3], "loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, v],
              "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.5, 0.6]} for v in (0.8, 0.9, 1.0)]
    fig = variant_curves({"lr=0.001": seeds, "lr=0.01": seeds[:2]})
    ax = fig.axes[0]
    assert len(ax.lines) == 4                                    # 2 variants x (train, valid)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    top = bands[0].get_paths()[0].vertices[:, 1]
    assert top.max() == pytest.approx(1.1) and top.min() == pytest.approx(0.8)   # the seeds' range
    assert list(ax.lines[1].get_ydata()) == pytest.approx([1.1, 0.9, 0.9])      # the valid mean


def test_per_model_seconds_divides_each_epoch_by_the_models_training_in_it():
    """Planted: a stack of 3 whose epochs take 3 s; one model stops after epoch 2, so epoch 3
    (2 models, 2 s) costs 1 s each: the median per-model figure is 1 s for everyone."""
    hist = [SimpleNamespace(history={"epoch": [1, 2, 3], "seconds": [3.0, 3.0, 2.0]}),
            SimpleNamespace(history={"epoch": [1, 2, 3], "seconds": [3.0, 3.0, 2.0]}),
            SimpleNamespace(history={"epoch": [1, 2], "seconds": [3.0, 3.0]}),
            SimpleNamespace(history={"epoch": [], "seconds": []})]
    secs = per_model_seconds(hist)
    assert secs[:3] == [1.0, 1.0, 1.0] and math.isnan(secs[3])


def _row(variant, seed, loss, acc=0.9, status="completed"):
    return {"run": f"{variant}_seed={seed}", "variant": variant, "seed": seed, "status": status,
            "best_val_loss": loss, "best_val_accuracy": acc, "test_accuracy": acc,
            "seconds_per_epoch_per_model": 0.5, "message": "" if status == "completed" else "nan"}


def test_aggregate_on_planted_numbers():
    """A is best; B's losses are far above A's with a small spread (beyond noise); C's mean is
    above A's but its spread is wide (within noise); D has one seed (no test); E failed."""
    rows = [_row("A", s, v) for s, v in enumerate((0.100, 0.102, 0.098))]
    rows += [_row("B", s, v) for s, v in enumerate((0.130, 0.131, 0.129))]
    rows += [_row("C", s, v) for s, v in enumerate((0.080, 0.120, 0.160))]
    rows += [_row("D", 0, 0.05), _row("D", 1, None, None, "failed")]
    rows += [_row("E", s, None, None, "failed") for s in range(3)]
    # D's one seed has the lowest loss, but D ranks by its mean of one value: it is first
    variants = {v["variant"]: v for v in aggregate(rows)}
    order = [v["variant"] for v in aggregate(rows)]
    assert order == ["D", "A", "C", "B", "E"]
    d, a, b, c, e = (variants[k] for k in "DABCE")
    assert d["vs_best"] == "best" and (d["seeds"], d["failed"]) == (1, 1)
    assert a["vs_best"] == "no test (under 3 seeds)"      # D has 1 seed: no verdict
    assert a["welch_p_vs_best"] is None
    assert a["best_val_loss_mean"] == pytest.approx(0.1) and a["best_val_loss_std"] == pytest.approx(0.002)
    half = 4.302653 * 0.002 / math.sqrt(3)                          # t(0.975, 2) x std / sqrt(n)
    assert (a["best_val_loss_ci95_low"], a["best_val_loss_ci95_high"]) == (
        pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    assert e["vs_best"] == "failed" and e["best_val_loss_mean"] is None and e["failed"] == 3
    assert d["best_val_loss_std"] is None and d["best_val_loss_ci95_low"] is None
    rows = [r for r in rows if r["variant"] != "D"]                 # now A is the best
    variants = {v["variant"]: v for v in aggregate(rows)}
    assert variants["A"]["vs_best"] == "best"
    assert variants["B"]["vs_best"] == "worse beyond noise"
    assert variants["B"]["welch_p_vs_best"] == pytest.approx(1.9925e-04, rel=1e-3)   # scipy
    assert variants["C"]["vs_best"] == "within noise"
    assert variants["C"]["welch_p_vs_best"] == pytest.approx(0.4779, abs=1e-3)


def test_sweep_with_128_models_loses_none(tiny, tiny_cfg, tmp_path, monkeypatch):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    lrs = ",".join(f"{1e-4 * 1.1 ** i:.6g}" for i in range(64))
    cfg = replace(tiny_cfg, **{"train.epochs": 1})
    out = sweep(cfg, [f"optim.lr={lrs}"], seeds=2, out=tmp_path / "big", progress=False)
    rows = _csv(out / "runs.csv")
    assert len(rows) == 128 and len({r["run"] for r in rows}) == 128
    assert len(_csv(out / "summary.csv")) == 64 and all(v["seeds"] == "2" for v in _csv(out / "summary.csv"))
    assert "the best 10 of 64 variants" in (out / "report.html").read_text()
    assert sum(1 for p in out.iterdir() if p.is_dir()) == 128


def test_sweep_cli_bad_value_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n')
    assert cli.main(["sweep", str(cfg), "--set", "model.activation=elu,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.activation = 'nope'" in err


def _summary(out):
    return {r["run"]: r for r in _csv(out / "runs.csv")}


def test_a_sweep_over_a_data_key_trains_each_variant_on_its_own_data(tiny_cfg, tmp_path):
    """Issue 18: a data key was grouped away and every variant trained on the first one's data
    while its config.toml claimed its own. Now each group loads its own data."""
    from dnnlab.config import load_config
    cfg = replace(tiny_cfg, **{"train.epochs": 1, "data.valid_size": 100})
    out = sweep(cfg, ["data.limit=300,700", "optim.lr=1e-3,3e-3"], out=tmp_path / "sw",
                progress=False)
    rows = _summary(out)
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows.values())
    for name in rows:
        trained = load_config(out / name / "config.toml")
        assert f"limit={trained.data.limit}" in name        # exactly what it trained on
        start = json.loads((out / name / "checkpoints" / "start.json").read_text()) \
            if (out / name / "checkpoints" / "start.json").exists() else None
        assert start is None or start["config"]["data"]["limit"] == trained.data.limit
    by_limit = {}
    for name, r in rows.items():
        by_limit.setdefault("limit=300" in name, set()).add(r["best_val_loss"])
    assert by_limit[True].isdisjoint(by_limit[False])       # other data, other results


@pytest.mark.realdata
def test_a_sweep_over_data_name_gives_each_dataset_its_own_results(tiny_cfg, tmp_path, data_dir):
    """The issue's own case: mnist and fashion-mnist gave identical results (both trained on
    MNIST)."""
    from dnnlab.config import load_config
    cfg = replace(tiny_cfg, **{"train.epochs": 1, "data.limit": 1000, "data.valid_size": 500,
                               "data.data_dir": str(data_dir)})
    out = sweep(cfg, ["data.name=mnist,fashion-mnist"], out=tmp_path / "sw", progress=False)
    rows = _summary(out)
    assert len(rows) == 2
    results = {load_config(out / n / "config.toml").data.name: (r["best_val_loss"], r["test_accuracy"])
               for n, r in rows.items()}
    assert set(results) == {"mnist", "fashion-mnist"}
    assert results["mnist"] != results["fashion-mnist"]


def test_a_variant_that_diverges_in_its_first_epoch_is_recorded_and_the_sweep_goes_on(
        tiny_cfg, tmp_path):
    """Issue 18: an early divergence ended the sweep with IndexError and no summary.csv; a group
    whose data cannot be read is recorded too, and the groups after it still train."""
    cfg = replace(tiny_cfg, **{"train.epochs": 2, "optim.name": "sgd",
                               "model.activation": "linear"})
    out = sweep(cfg, ["optim.lr=1e-2,10", "data.classes=[0,1],[0,7],[1,2]"],
                out=tmp_path / "sw", progress=False)
    rows = _summary(out)
    assert len(rows) == 6                                    # every variant listed
    failed = {n: r for n, r in rows.items() if r["status"] == "failed"}
    diverged = [r for n, r in failed.items() if "lr=10" in n and "[0,7]" not in n]
    assert len(diverged) == 2 and all("epoch 1" in r["message"] for r in diverged)
    unreadable = [r for n, r in failed.items() if "[0,7]" in n]
    assert len(unreadable) == 2 and all("7" in r["message"] for r in unreadable)
    done = [n for n, r in rows.items() if r["status"] == "completed"]
    assert len(done) == 2 and all("lr=0.01" in n for n in done)
    assert (out / "report.html").exists()


def test_a_sweep_of_absurd_size_is_refused_before_any_work(tmp_path, capsys):
    """Issue 18: --seeds 100000000 grew to 21 GB before the kernel killed it."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n')
    assert cli.main(["sweep", str(cfg), "--seeds", "100000000", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 10000 models" in err
    assert not (tmp_path / "s").exists()


def test_the_t_distribution_interval_and_welch_on_planted_numbers():
    """Reference values from the t table (and scipy.stats: t.ppf, ttest_ind(equal_var=False))."""
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)     # 3 seeds: not 1.96
    assert t_quantile(0.975, 1) == pytest.approx(12.706205, abs=1e-6)
    assert t_quantile(0.025, 9.5) == pytest.approx(-2.244137, abs=1e-6)
    assert t_cdf(0.0, 3) == 0.5 and t_cdf(2.0, 30) == pytest.approx(0.972687, abs=1e-6)
    low, high = mean_interval([0.1, 0.2, 0.3])          # 0.2 +- 4.3027 * 0.1 / sqrt(3)
    assert (low, high) == (pytest.approx(-0.0484138), pytest.approx(0.4484138))
    assert mean_interval([0.5]) == (None, None)
    t, df, p = welch([0.97, 0.975, 0.972], [0.96, 0.962, 0.958])
    assert (t, df, p) == (pytest.approx(6.645396), pytest.approx(3.805941), pytest.approx(0.0031693142))
    t, df, p = welch([0.97, 0.98, 0.96], [0.965, 0.975, 0.97])
    assert t == 0.0 and p == pytest.approx(1.0)
    assert welch([1.0, 1.0], [1.0, 1.0])[2] == 1.0 and welch([1.0, 1.0], [2.0, 2.0])[2] == 0.0
    assert welch([1.0], [1.0, 2.0]) is None
    assert pm(0.98912, 0.0012) == "98.91 ± 0.12" and pm(None, None) == "–"
    assert pm(0.98912, None) == "98.91" and pm(0.5, 0.0) == "50.00 ± 0.00"


def test_a_group_enqueued_twice_trains_once(tiny, tiny_cfg, tmp_path, monkeypatch):
    """Workers that start together may both enqueue every group: the later trial of a group sees
    the earlier one ahead of it and ends pruned, so each group trains once and the summary holds
    each variant once."""
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    cfg = replace(tiny_cfg, **{"train.epochs": 1})
    sets = ["model.width=4,8", "optim.lr=1e-3,1e-2"]
    combos = grid(sets)
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    study = optuna.create_study(storage=open_storage(url, 1),
                                study_name=f"dnnlab-sweep-{sweep_id(cfg, combos, 1)}")
    keys = list(dict.fromkeys(group_key(replace(cfg, **c)) for c in combos))
    assert len(keys) == 2
    for key in keys + keys:                        # two workers' enqueues, interleaved
        study.enqueue_trial({}, user_attrs={"group": key})
    out = sweep(cfg, sets, out=tmp_path / "sw", progress=False, storage=url, grace=3)
    runs = _csv(out / "runs.csv")
    assert sorted(r["run"] for r in runs) == sorted(variant_name(c, 42) for c in combos)
    trials = study.get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED"]
    assert all(t.user_attrs.get("duplicate") for t in trials if t.state == TrialState.PRUNED)
    assert {t.user_attrs["group"] for t in trials if t.state == TrialState.COMPLETE} == set(keys)
    assert [t.number for t in trials if t.state == TrialState.COMPLETE] == [0, 1]   # the earlier


def test_groups_that_share_their_data_load_it_once(tiny_cfg, tmp_path, monkeypatch):
    """Two shapes (two groups) on one [data] table: one load; another [data]: its own."""
    import dnnlab.data as data_mod
    real = data_mod.load_from_config
    loads = []
    monkeypatch.setattr(data_mod, "load_from_config",
                        lambda cfg, **kw: loads.append(cfg.limit) or real(cfg, **kw))
    cfg = replace(tiny_cfg, **{"train.epochs": 1, "data.valid_size": 100})
    sweep(cfg, ["model.width=8,16", "data.limit=300,400"], out=tmp_path / "sw", progress=False)
    assert sorted(loads) == [300, 400]


def test_a_best_at_the_end_of_a_numeric_axis_gets_a_note(tiny, tiny_cfg, tmp_path, monkeypatch):
    """The best variant's value is the largest (or smallest) of an axis of 3 or more numbers: the
    sweep may have stopped short, and summary.csv, the table and the report say so. Two values
    or a non-numeric axis: no note."""
    from dnnlab.runs.sweep import edge_notes
    axes = [("optim.lr", [1e-4, 1e-3, 1e-2]), ("model.width", [8, 16]),
            ("model.activation", ["relu", "elu", "selu"])]
    assert edge_notes({"optim.lr": 1e-2, "model.width": 16, "model.activation": "selu"}, axes) == [
        "the best variant's optim.lr = 0.01 is the largest value swept: a larger one may do better"]
    assert edge_notes({"optim.lr": 1e-4}, axes)[0].startswith(
        "the best variant's optim.lr = 0.0001 is the smallest value swept")
    assert edge_notes({"optim.lr": 1e-3}, axes) == []
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    cfg = replace(tiny_cfg, **{"train.epochs": 2})
    out = sweep(cfg, ["optim.lr=1e-7,1e-6,1e-2"], out=tmp_path / "sw", progress=False)
    best = _csv(out / "summary.csv")[0]
    assert best["variant"] == "lr=0.01" and "is the largest value swept" in best["note"]
    assert "note: the best variant's optim.lr = 0.01 is the largest" in format_table(out)
    assert "is the largest value swept" in (out / "report.html").read_text()

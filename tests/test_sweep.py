import csv
import json

import pytest

from dnnlab import cli
from dnnlab.analysis.stats import mean_interval, pm, t_cdf, t_quantile, welch
from dnnlab.config import replace
from dnnlab.errors import ConfigError
from dnnlab.runs.sweep import grid, split_values, sweep


def test_grid_is_every_combination_and_keeps_lists_whole():
    assert split_values("[10, 20],[30]") == ["[10, 20]", "[30]"]
    g = grid(["optim.lr=1e-4,1e-3", "model.hidden=[8,8],[16]"])
    assert len(g) == 4
    assert {"optim.lr": 1e-4, "model.hidden": [16]} in g
    with pytest.raises(ConfigError, match="empty item"):
        grid(["optim.lr=1e-4,,1e-3"])


def test_sweep_writes_one_run_per_variant_and_groups_shapes(tiny, tiny_cfg, tmp_path, monkeypatch):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    cfg = replace(tiny_cfg, **{"train.epochs": 2})
    out = sweep(cfg, ["optim.lr=1e-3,1e-2", "model.width=8,16"], seeds=2, out=tmp_path / "sw",
                progress=False)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 8
    assert all(r["status"] == "completed" for r in rows)
    losses = [float(r["best_val_loss"]) for r in rows]
    assert losses == sorted(losses)                     # best first
    for r in rows:
        run = out / r["run"]
        assert (run / "metrics.csv").exists() and (run / "model.safetensors").exists()
    assert (out / "report.html").exists()


def test_sweep_with_128_models_loses_none(tiny, tiny_cfg, tmp_path, monkeypatch):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    lrs = ",".join(f"{1e-4 * 1.1 ** i:.6g}" for i in range(64))
    cfg = replace(tiny_cfg, **{"train.epochs": 1})
    out = sweep(cfg, [f"optim.lr={lrs}"], seeds=2, out=tmp_path / "big", progress=False)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 128 and len({r["run"] for r in rows}) == 128
    assert sum(1 for p in out.iterdir() if p.is_dir()) == 128


def test_sweep_cli_bad_value_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n')
    assert cli.main(["sweep", str(cfg), "--set", "model.activation=elu,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.activation = 'nope'" in err


def _summary(out):
    return {r["run"]: r for r in csv.DictReader(open(out / "summary.csv"))}


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

"""dnnlab tune: stratified folds, the [tune] search space, the cross-validated search itself."""

from __future__ import annotations

import csv
import inspect

import numpy as np
import pytest

from dnnlab.config import ConfigError, RunConfig, load_config, replace
from dnnlab.errors import DnnlabError
from dnnlab.tune import apply, parse_space, stratified_kfold, tune
from dnnlab.tune.search import make_objective

SPACE = {"optim.lr": {"low": 1e-2, "high": 1e-1, "log": True},
         "model": {"width": {"low": 4, "high": 16}},       # nested, as unquoted TOML keys give
         "model.activation": ["elu", "relu"]}


def tiny_tune_cfg(**extra) -> RunConfig:
    return replace(RunConfig(), **{
        "name": "tiny", "data.name": "synthetic", "data.valid_size": 200, "data.limit": 300,
        "model.depth": 1, "model.width": 8, "train.epochs": 5, "train.batch_size": 32,
        "train.patience": 2, "train.progress": False, "train.device": "cpu",
        "train.checkpoint_every": 0, "tune": SPACE, **extra})


@pytest.fixture
def tiny_data():
    from dnnlab.data import synthetic
    return synthetic(n_train=240, n_valid=90, n_test=30, n_features=8, n_classes=3, seed=1)


# --------------------------------------------------------------------------------- folds

def test_folds_partition_and_stratify():
    y = np.repeat([0, 1, 2], [50, 31, 19])
    folds = stratified_kfold(y, 4, seed=3)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(len(y)))            # each index held out once
    for tr, ho in folds:
        assert set(tr).isdisjoint(ho) and len(tr) + len(ho) == len(y)
        for c, n in ((0, 50), (1, 31), (2, 19)):
            assert abs(np.sum(y[ho] == c) - n / 4) < 1              # each class's share, +- 1
    sizes = [len(h) for _, h in folds]
    assert max(sizes) - min(sizes) <= 1
    again = stratified_kfold(y, 4, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = stratified_kfold(y, 4, seed=4)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_folds_refuse_too_few_images_or_folds():
    with pytest.raises(ConfigError, match="class 1 has only 2"):
        stratified_kfold(np.array([0, 0, 0, 1, 1]), 3)
    with pytest.raises(ConfigError, match="takes 2 to 20 folds"):
        stratified_kfold(np.array([0, 1] * 5), 1)


# --------------------------------------------------------------------------------- space

def test_space_reads_ranges_choices_and_nesting():
    params = {p.key: p for p in parse_space(tiny_tune_cfg())}
    assert params["optim.lr"].kind == "float" and params["optim.lr"].log
    width = params["model.width"]
    assert width.kind == "int" and (width.low, width.high) == (4, 16)
    assert params["model.activation"].choices == ("elu", "relu")
    cfg = apply(tiny_tune_cfg(), {"optim.lr": 0.01, "model.width": 12, "model.activation": "relu"})
    assert (cfg.optim.lr, cfg.model.width, cfg.model.activation, cfg.tune) == (0.01, 12, "relu", {})


def test_space_from_toml_example():
    cfg = load_config("examples/tune_mnist.toml")
    keys = [p.key for p in parse_space(cfg)]
    assert keys == ["model.width", "model.activation", "optim.lr", "train.batch_size", "model.dropout"]


@pytest.mark.parametrize("space, message", [
    ({"model.widht": {"low": 4, "high": 8}}, "unknown key 'model.widht'"),
    ({"model.dropout": {"low": 0.0, "high": 1.5}}, "model.dropout = 1.5 is out of range"),
    ({"model.activation": ["elu", "swishy"]}, "'swishy' is not allowed"),
    ({"optim.lr": {"low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
    ({"optim.lr": {"low": 0.1, "high": 0.01}}, "must be below high"),
    ({"optim.lr": {"low": 0.01, "hi": 0.1}}, "needs low and high"),
    ({"optim.lr": 0.01}, "give a range like"),
    ({"optim.lr": []}, "list of choices is empty"),
])
def test_space_errors_name_the_key(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(tiny_tune_cfg(tune=space))


def test_space_missing_table():
    with pytest.raises(ConfigError, match="no \\[tune\\] table"):
        parse_space(replace(RunConfig(), tune={}))


# --------------------------------------------------------------------------------- search

def test_tune_writes_table_and_a_trainable_best_config_and_resumes(tmp_path, tiny_data):
    logs: list[str] = []
    res = tune(tiny_tune_cfg(), trials=3, folds=2, out=tmp_path, data=tiny_data, seed=0,
               log=logs.append)
    assert res.trials_here == [0, 1, 2] and len(res.rows) == 3
    assert (tmp_path / "study.db").exists()
    completed = [r for r in res.rows if r["state"] == "complete"]
    assert res.best_value == max(r["cv_accuracy"] for r in completed) == res.rows[0]["cv_accuracy"]
    assert 0.5 < res.best_value <= 1.0              # the blobs are learnable
    folds = [float(v) for v in res.rows[0]["folds"].split()]
    assert len(folds) == 2 and res.best_value == pytest.approx(np.mean(folds), abs=1e-4)
    with open(res.paths["trials_csv"]) as f:
        table = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in table] == [r["trial"] for r in res.rows]
    assert {"optim.lr", "model.width", "model.activation", "cv_accuracy"} <= set(table[0])
    best = load_config(res.paths["best_config"])      # what `dnnlab train` reads
    assert best.optim.lr == pytest.approx(res.best_params["optim.lr"])
    assert best.model.width == res.best_params["model.width"]
    assert best.model.activation == res.best_params["model.activation"]
    assert best.tune == {} and best.name == "tiny-tuned"
    assert "trial 0: cv accuracy" in logs[1]

    again = tune(tiny_tune_cfg(), trials=5, folds=2, out=tmp_path, data=tiny_data, seed=1,
                 log=logs.append)                     # the stopped search resumes
    assert again.trials_here == [3, 4] and len(again.rows) == 5


def test_bad_trial_is_pruned_after_its_first_fold(tmp_path, tiny_data):
    import optuna

    from dnnlab.tune.search import default_storage, open_storage
    cfg = tiny_tune_cfg(tune={"optim.lr": [0.03, 1e-7]})
    study = optuna.create_study(storage=open_storage(default_storage(tmp_path)), study_name="tiny",
                                direction="maximize")
    study.enqueue_trial({"optim.lr": 0.03})           # a good trial sets the median ...
    study.enqueue_trial({"optim.lr": 1e-7})           # ... that a learning-free one falls below
    logs: list[str] = []
    res = tune(cfg, trials=2, folds=3, out=tmp_path, data=tiny_data, startup_trials=1,
               log=logs.append)
    states = {r["trial"]: r["state"] for r in res.rows}
    assert states == {0: "complete", 1: "pruned"}
    assert len(res.rows[1]["folds"].split()) == 1     # stopped after one of three folds
    assert any("trial 1: pruned after fold 1" in line for line in logs)


def test_objective_scores_on_held_out_folds(tiny_data):
    """The score is the held-out folds' accuracy, each fold trained on the others only."""
    class FakeTrial:
        number, reports, attrs = 0, [], {}

        def suggest_float(self, name, low, high, step=None, log=False):
            return 0.03

        def suggest_int(self, name, low, high, step=1, log=False):
            return 8

        def suggest_categorical(self, name, choices):
            return choices[0]

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return False

        def set_user_attr(self, key, value):
            self.attrs[key] = value

    cfg = tiny_tune_cfg()
    objective = make_objective(cfg, parse_space(cfg), tiny_data, 3, log=lambda m: None)
    trial = FakeTrial()
    value = objective(trial)
    scores = trial.attrs["fold_scores"]
    assert len(scores) == 3 and value == pytest.approx(np.mean(scores))
    assert [s for s, _ in trial.reports] == [0, 1, 2]
    assert trial.reports[-1][1] == pytest.approx(value)
    # each held-out fold has 80 of the 240 training images: scores are multiples of 1/80
    assert all(abs(s * 80 - round(s * 80)) < 1e-6 for s in scores)


def test_register_adds_the_tune_command():
    import argparse

    from dnnlab.tune.cli import register
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()

    def with_config(sp, required=True):
        sp.add_argument("config")
        sp.add_argument("--set", action="append")

    register(sub, with_config)
    args = p.parse_args(["tune", "c.toml", "--trials", "7", "--folds", "4",
                         "--storage", "postgresql://u@h/db", "--study-name", "s", "--out", "o"])
    assert (args.trials, args.folds, args.storage, args.study_name, args.out) == \
        (7, 4, "postgresql://u@h/db", "s", "o")
    assert args.func.__name__ == "cmd_tune"


def test_postgresql_urls_get_an_installed_driver():
    import importlib.util

    from dnnlab.storage import safe_url as _safe_url
    from dnnlab.storage import with_driver
    url = with_driver("postgresql://u:secret@db.example/tune")
    if importlib.util.find_spec("psycopg") or importlib.util.find_spec("psycopg2"):
        assert url.startswith(("postgresql+psycopg://", "postgresql+psycopg2://"))
    assert url.endswith("u:secret@db.example/tune")
    assert with_driver("postgresql+psycopg2://h/db") == "postgresql+psycopg2://h/db"
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"
    assert "secret" not in _safe_url("postgresql://u:secret@db.example/tune")


def test_opening_a_storage_retries_a_lost_race_and_names_a_lasting_failure(tmp_path, monkeypatch):
    """Workers starting together on an empty PostgreSQL database race to create Optuna's tables;
    the loser's ``relation "alembic_version" already exists`` (a ProgrammingError, seen in CI) is
    retried like a lock. An error that lasts is reported once, naming the URL without its password
    and what to check."""
    import optuna
    from sqlalchemy.exc import ProgrammingError

    from dnnlab import storage
    real = optuna.storages.RDBStorage
    calls = []

    class Racing(real):
        def __init__(self, url, **kw):
            calls.append(url)
            if len(calls) < 3:
                raise ProgrammingError("CREATE TABLE alembic_version", {},
                                       Exception('relation "alembic_version" already exists'))
            super().__init__(url, **kw)
    Racing.__init__.__signature__ = inspect.signature(real.__init__)   # retry_kwargs reads it

    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    opened = storage.open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    assert isinstance(opened, real) and len(calls) == 3

    class Down(real):
        def __init__(self, url, **kw):
            calls.append(url)
            raise ProgrammingError("SELECT 1", {}, Exception("server closed the connection"))
    Down.__init__.__signature__ = inspect.signature(real.__init__)

    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", Down)
    with pytest.raises(DnnlabError) as e:
        storage.open_storage("postgresql://u:secret@db.example/tune")
    assert len(calls) == storage.OPEN_ATTEMPTS
    message = str(e.value)
    assert "server closed the connection" in message and "check the URL" in message
    assert "secret" not in message and "u:***@db.example/tune" in message


def test_a_trial_that_draws_a_data_key_trains_on_its_own_data(tmp_path, monkeypatch):
    """Issue 18: tune over data.limit trained every trial on the base config's data."""
    import dnnlab.data as data_mod
    from dnnlab.data import load_from_config as real_load
    seen: list[int] = []

    def load(cfg, **kw):
        data = real_load(cfg, **kw)
        seen.append(len(data.train))
        return data

    monkeypatch.setattr(data_mod, "load_from_config", load)
    cfg = tiny_tune_cfg(**{"tune": {"data.limit": [120, 300]}, "train.epochs": 1})
    objective = make_objective(cfg, parse_space(cfg), real_load(cfg.data), folds=2,
                               log=lambda s: None)

    class Trial:                                    # the part of optuna.Trial the objective uses
        number = 0

        def __init__(self, limit):
            self.limit = limit

        def suggest_categorical(self, name, choices):
            return self.limit

        def set_user_attr(self, *a):
            pass

        def report(self, *a):
            pass

        def should_prune(self):
            return False

    objective(Trial(300))
    assert seen == []                               # the base config's data: already loaded
    objective(Trial(120))
    assert seen == [120]                            # its own data, loaded once
    objective(Trial(120))
    assert seen == [120]


def test_tune_shows_a_bar_per_trial_and_the_best_so_far(tmp_path, tiny_data, capsys):
    """Progress on a long job: each trial's bar runs over folds x epochs (on stderr), and each
    finished trial's line says its value and the best value of the study so far."""
    logs: list[str] = []
    res = tune(tiny_tune_cfg(**{"train.progress": True, "train.patience": None}), trials=2,
               folds=2, out=tmp_path, data=tiny_data, seed=0, log=logs.append)
    err = capsys.readouterr().err
    assert "trial 0 fold 2/2" in err and "trial 1 fold 1/2" in err
    assert "10/10" in err                                # 2 folds x 5 epochs, to the end
    finished = [line for line in logs if ": cv accuracy" in line]
    values = [float(line.split("cv accuracy ")[1].split(",")[0]) for line in finished]
    bests = [float(line.split("best so far ")[1].split()[0]) for line in finished]
    assert len(finished) == 2 and bests == [values[0], max(values)]
    assert max(bests) == pytest.approx(res.best_value, abs=1e-4)

"""``dnnlab tune``: an Optuna search scored by stratified k-fold cross-validation.

Protocol (the book's ``RandomizedSearchCV`` with early stopping): the training split is cut into
``folds`` stratified folds; a trial trains one model per fold on the other folds, stops early on
the dataset's validation split (the first 5,000 training images, never scored), and is scored by
its accuracy on the held-out fold with the best weights restored. The trial's value is the mean
over folds. After each fold the running mean is reported, so Optuna's median pruner drops a trial
whose first folds already trail the median of earlier trials.

A search lives in an Optuna storage: by default ``study.db`` (SQLite) in the output folder, so a
stopped search resumes where it stopped; with ``storage="postgresql://..."`` any number of
workers on any number of machines share one study. ``trials`` is the number of finished trials
the study should hold: each worker runs trials until the study holds that many *finished*
(complete or pruned) trials. A worker killed at any moment leaves a RUNNING trial whose heartbeat
stops; after the grace period (3 heartbeats) the next worker to start a trial marks it failed and
Optuna's ``RetryFailedTrialCallback`` enqueues a copy with the same parameters, which a worker
runs first; failed trials never count. Every trial records which worker ran it (host:pid).
"""

from __future__ import annotations

import csv
import io as _io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from dnnlab import io, rundir
from dnnlab.config import RunConfig, replace, to_toml
from dnnlab.data import ConfigLoader, load_from_config
from dnnlab.data.splits import from_arrays
from dnnlab.errors import DnnlabError
from dnnlab.storage import HEARTBEAT_SECONDS, open_storage, worker_id
from dnnlab.storage import safe_url as _safe_url
from dnnlab.train import Callback, fit
from dnnlab.tune.folds import stratified_kfold
from dnnlab.tune.space import Param, apply, parse_space


@dataclass
class TuneResult:
    """A finished search: the best trial, its config, and every trial of the study."""
    study_name: str
    storage: str
    best_value: float
    best_params: dict[str, Any]
    best_config: RunConfig
    rows: list[dict[str, Any]]            # one per trial, best first (see ``trial_rows``)
    trials_here: list[int]                 # the trial numbers this process ran
    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def table(self, limit: int | None = 20) -> str:
        """The results table as fixed-width text (the best ``limit`` trials)."""
        return format_table(self.rows[:limit] if limit else self.rows)


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def _counted(study) -> int:
    """Trials that count towards the target: finished ones (complete or pruned).

    Running trials do not count (their worker may be dead: the heartbeat will tell), nor failed
    ones (retried), nor enqueued ones (a worker has yet to run them, and will, first). Workers
    that start their last trials together may overshoot the target by one trial each.
    """
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class TrialBar(Callback):
    """One bar per trial over its folds x epochs: a fold advances it an epoch at a time, and a
    fold that stops early jumps to its end, so the bar's remaining time stays honest."""

    def __init__(self, number: int, folds: int, epochs: int, show: bool = True):
        self.number, self.folds, self.epochs, self.fold = number, folds, epochs, 0
        self.bar = tqdm(total=folds * epochs, unit="epoch", desc=f"trial {number}", leave=False,
                        dynamic_ncols=True, file=sys.stderr, disable=not show)

    def __enter__(self) -> TrialBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def start_fold(self, fold: int) -> None:
        self.fold = fold
        self.bar.set_description(f"trial {self.number} fold {fold + 1}/{self.folds}")

    def on_epoch_end(self, run, epoch: int, logs) -> None:
        self.bar.update(1)
        m = next(iter(logs.values()), None)
        if m is not None and not math.isnan(m.get("val_accuracy", math.nan)):
            self.bar.set_postfix_str(f"val_acc {m['val_accuracy']:.4f}")

    def on_train_end(self, run, results) -> None:
        self.bar.update((self.fold + 1) * self.epochs - self.bar.n)   # an early stop: the rest


def make_objective(cfg: RunConfig, params: list[Param], data, folds: int, log=print,
                   progress: bool = False):
    """The Optuna objective: mean held-out-fold accuracy of the config a trial draws.

    With ``progress`` a bar per trial shows its folds x epochs (on stderr). A pruned or diverged
    trial is one ``log`` line here; a completed one is logged by :func:`tune`, which knows the
    study's best so far.

    A trial that draws a data key (``data.limit``, ``data.classes``, ``data.standardize`` ...:
    the table's data keys) trains on the data its own config describes, loaded once per distinct
    ``[data]`` and cross-validated on its own folds; the others share ``data``.
    """
    data_of = ConfigLoader()
    data_of.loaded[data_of.key(cfg.data)] = data          # the base config's: already loaded

    def objective(trial) -> float:
        t0 = time.perf_counter()
        trial.set_user_attr("worker", worker_id())
        values = {p.key: p.suggest(trial) for p in params}
        tcfg = replace(apply(cfg, values), **{"train.progress": False})
        tdata = data_of(tcfg.data)
        x, y = tdata.train.x, tdata.train.y
        has_valid = len(tdata.valid) > 0
        scores: list[float] = []
        with TrialBar(trial.number, folds, tcfg.train.epochs, show=progress) as bar:
            for f, (tr, ho) in enumerate(stratified_kfold(y, folds, seed=tcfg.data.seed)):
                scores.append(fold_score(trial, tcfg, tdata, x, y, tr, ho, has_valid, bar, f,
                                         values, t0))
                trial.set_user_attr("fold_scores", scores)
                trial.report(float(np.mean(scores)), f)
                if f + 1 < folds and trial.should_prune():
                    trial.set_user_attr("seconds", time.perf_counter() - t0)
                    log(f"trial {trial.number}: pruned after fold {f + 1}, mean accuracy "
                        f"{np.mean(scores):.4f} ({_params_text(values)})")
                    raise optuna.TrialPruned()
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        return float(np.mean(scores))     # its line, with the best so far: finished() in tune()

    def fold_score(trial, tcfg, tdata, x, y, tr, ho, has_valid, bar, f, values, t0) -> float:
        """One fold: train on the others, score on it (a divergence prunes the trial)."""
        valid = (tdata.valid.x, tdata.valid.y) if has_valid else (x[ho], y[ho])
        fold = from_arrays(x[tr], y[tr], *valid, x[ho], y[ho], class_names=tdata.class_names)
        bar.start_fold(f)
        res = fit(tcfg, fold, evaluate_test=True, callbacks=[bar])
        if res.status == "diverged":
            trial.set_user_attr("diverged", res.message)
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            log(f"trial {trial.number}: diverged in fold {f + 1} ({_params_text(values)})")
            raise optuna.TrialPruned(res.message)
        return float(res.test["test_accuracy"])

    return objective


def _params_text(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in values.items())


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def tune(cfg: RunConfig, *, trials: int, folds: int = 3, storage: str | None = None,
         out: str | Path | None = None, study_name: str | None = None, data=None,
         seed: int | None = None, startup_trials: int = 5, heartbeat: int = HEARTBEAT_SECONDS,
         log=print) -> TuneResult:
    """Search ``cfg.tune``'s space until the study holds ``trials`` finished trials.

    ``data`` is a loaded :class:`~dnnlab.data.Dataset` (default: ``cfg.data`` is loaded).
    ``seed`` seeds the sampler; leave it None when several workers share a study, or they would
    all propose the same first trials. Pruning starts once ``startup_trials`` trials completed.
    Writes ``trials.csv`` and ``best_config.toml`` to ``out`` (default ``runs/NAME-tune``) and
    returns the :class:`TuneResult`. ``heartbeat``: seconds between a running trial's heartbeats
    (a dead worker's trial is retried after 3 missed ones).
    """
    if trials < 1:
        raise DnnlabError(f"--trials {trials}: run at least 1 trial")
    params = parse_space(cfg)
    out_dir = Path(out) if out is not None else rundir.child("runs", f"{cfg.name}-tune")
    name = study_name or cfg.name
    if data is None:
        data = load_from_config(cfg.data)
    stratified_kfold(data.train.y, folds)     # --folds checked before any trial (or folder)
    url = storage or default_storage(out_dir)
    objective = make_objective(cfg, params, data, folds, log=log, progress=cfg.train.progress)

    # ERROR: Optuna logs a trial that raised at WARNING with its traceback; an error here ends
    # the command in one line (dnnlab.cli), and Ctrl-C or SIGTERM ends it "interrupted"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with rundir.undo_if_refused(out_dir):        # a storage that cannot open leaves no folder
        rundir.make_dir(out_dir)
        study = optuna.create_study(
            storage=open_storage(url, heartbeat), study_name=name, direction="maximize",
            load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0))
    optuna.storages.fail_stale_trials(study)
    log(f"study {name!r} in {_safe_url(url)}: {_counted(study)} of {trials} trials finished; "
        f"searching {len(params)} parameters with {folds}-fold cross-validation")
    mine: list[int] = []

    def finished(study, t) -> None:
        """A line per completed trial: its value, the study's best so far, folds, parameters."""
        mine.append(t.number)
        if t.state == TrialState.COMPLETE:
            folds_text = " ".join(f"{s:.4f}" for s in t.user_attrs.get("fold_scores", []))
            log(f"trial {t.number}: cv accuracy {t.value:.4f}, best so far {study.best_value:.4f} "
                f"(folds {folds_text}) {_params_text(t.params)} "
                f"[{t.user_attrs.get('seconds', math.nan):.1f} s]")

    while _counted(study) < trials:
        study.optimize(objective, n_trials=1, catch=(), callbacks=[finished])

    rows = trial_rows(study, params)
    try:
        best = study.best_trial
    except ValueError:
        raise DnnlabError(f"study {name!r} has no completed trial (all were pruned or failed); "
                          "widen the search space or lower the learning-rate range") from None
    best_cfg = apply(cfg, best.params)
    best_cfg.name = f"{cfg.name}-tuned"
    paths = {"trials_csv": write_csv(out_dir / "trials.csv", rows),
             "best_config": io.write_text(out_dir / "best_config.toml", _best_toml(best_cfg, best))}
    return TuneResult(name, url, float(best.value), dict(best.params), best_cfg, rows, mine,
                      out_dir, paths)


def _best_toml(cfg: RunConfig, best) -> str:
    folds = " ".join(f"{s:.4f}" for s in best.user_attrs.get("fold_scores", []))
    return (f"# Best trial {best.number} of dnnlab tune: cross-validated accuracy {best.value:.4f}"
            f" (folds {folds}).\n# Train it with: dnnlab train THIS_FILE\n" + to_toml(cfg))


def trial_rows(study, params: list[Param]) -> list[dict[str, Any]]:
    """One row per trial: number, state, cv accuracy, fold scores, parameters, seconds, worker.

    Completed trials come first, best first; then pruned and failed ones by trial number.
    """
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower(),
                               "cv_accuracy": t.value if t.value is not None else math.nan,
                               "folds": " ".join(f"{s:.4f}" for s in t.user_attrs.get("fold_scores", []))}
        for p in params:
            row[p.key] = t.params.get(p.key)
        row["seconds"] = t.user_attrs.get("seconds", math.nan)
        row["worker"] = t.user_attrs.get("worker", "")
        rows.append(row)
    done = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: -r["cv_accuracy"])
    rest = [r for r in rows if r["state"] != "complete"]
    return done + rest


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a fixed-width text table (what the terminal shows)."""
    if not rows:
        return "(no trials)"
    cols = list(rows[0])
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = _io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return io.write_text(path, buf.getvalue())

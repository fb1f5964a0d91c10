"""Sweeps: many variants of one config, trained at once by the K-model engine.

``--set optim.lr=1e-5,3e-5,1e-4 --set model.dropout=0,0.2 --seeds 3`` is the grid of every
combination (here 3 x 2 x 3 = 18 models); a ``--set`` with one value is a fixed setting applied
to every variant, not an axis. Any key may be an axis, data keys included. Variants are grouped by
:func:`dnnlab.config.group_key` of their full config: those that differ only in what the engine can
vary per model (seed, learning rate, momentum, dropout rate, penalties ...: the table's per-model
keys) are trained together; every other difference (another shape, another dataset, another
class subset ...) makes a group of its own, each group one engine run on its own data. A
variant that fails (diverges, even in its first epoch) is recorded as failed with its reason; a
group that cannot train at all (its data cannot be read) records each of its variants as failed;
the sweep goes on. Each trained model gets a run directory like ``dnnlab train`` writes (its name
made safe and bounded *before* any training: :func:`dnnlab.rundir.safe_name`).

**What a sweep writes**: ``runs.csv``, one row per model (a *variant* is the axis values; a
*run* is a variant with one seed), and ``summary.csv``, one row per variant over its seeds
(:func:`aggregate`: mean ± std, the 95% interval of the mean, and whether it is beyond seed
noise from the best variant), the same rows as the terminal table (:func:`format_table`), and
``report.html`` with one curve per variant and a band over its seeds.

**Many workers** (``storage="sqlite:///..."`` or ``"postgresql://..."``): every process started
with the same sweep and storage works on it, through an Optuna study as ``dnnlab tune`` does
(:mod:`dnnlab.storage`): each group is an enqueued trial whose user attribute ``group`` is its
group key; workers run them with ``study.optimize``, whose heartbeats let a worker killed
mid-group be noticed ``grace`` seconds later and its group retried. A finished group's rows are
stored as its trial's user attribute ``rows``, and the summary is built from the completed
trials, one per group, so it holds every variant exactly once. Re-running the command resumes
the sweep: finished groups are skipped. The study is named by a hash of the sweep (config, grid,
seeds), so every worker finds it, and so is the default sweep folder.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import itertools
import json
import math
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from dnnlab import config as config_mod
from dnnlab import data as datasets  # called through the module, so tests can stand in data
from dnnlab import io, rundir
from dnnlab.analysis.stats import grid_end, mean_interval, mean_std, pm
from dnnlab.analysis.verdict import MIN_SEEDS, SUPPORTED, differs
from dnnlab.config import PER_MODEL_KEYS, RunConfig, group_key
from dnnlab.data.preprocessing import Preprocessing
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.report.runs import read_metrics
from dnnlab.report.sweep import report_sweep
from dnnlab.runs.recorded import train_many
from dnnlab.storage import GRACE_BEATS, MAX_RETRY, check_grace, open_storage, worker_id
from dnnlab.train import state as run_state
from dnnlab.train.callbacks import CsvLogger
from dnnlab.train.checkpoint import save_final
from dnnlab.train.driver import FitResult, Variant

# More models than this in one sweep is a typo, not an experiment: 10,000 of the book's 5 x 100
# MNIST nets, stacked with their optimizer state and best/last-good copies, need about 30 GB.
MAX_MODELS = 10_000
GRACE_SECONDS = 60       # --grace: a group whose worker sent no heartbeat for this long is redone
INTERVAL = 0.95          # the interval of each mean over seeds


def split_values(text: str) -> list[str]:
    """Split ``a,b,c`` on the commas that are not inside brackets or quotes."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    if any(p == "" for p in parts):
        raise ConfigError(f"--set value {text!r} has an empty item; write e.g. optim.lr=1e-4,3e-4")
    return parts


def _axes(sets: list[str]) -> list[tuple[str, list[Any]]]:
    axes: list[tuple[str, list[Any]]] = []
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value[,value...], e.g. optim.lr=1e-4,3e-4")
        key, text = item.split("=", 1)
        axes.append((key.strip(), [config_mod.parse_value(v) for v in split_values(text)]))
    return axes


def split_sets(sets: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Separate one-value ``--set`` items (fixed settings, as dotted key -> value) from axes."""
    fixed, axes = {}, []
    for item, (key, values) in zip(sets, _axes(sets)):
        if len(values) == 1:
            fixed[key] = values[0]
        else:
            axes.append(item)
    return fixed, axes


def grid(sets: list[str]) -> list[dict[str, Any]]:
    """Every combination of the ``key=v1,v2,...`` lists, as dicts of dotted key -> value."""
    axes = _axes(sets)
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def _axis_parts(overrides: dict[str, Any]) -> list[str]:
    return [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]


def variant_label(overrides: dict[str, Any]) -> str:
    """The variant (its axis values, without the seed) as one safe name; ``base`` for a sweep
    with no axis (only seeds)."""
    parts = _axis_parts(overrides)
    return rundir.safe_name("_".join(parts).replace(" ", "")) if parts else "base"


def variant_name(overrides: dict[str, Any], seed: int) -> str:
    """The run's folder name: its axis values and seed, safe and bounded (long ones end in a
    hash of the whole name, so they stay unique)."""
    return rundir.safe_name("_".join(_axis_parts(overrides) + [f"seed={seed}"]).replace(" ", ""))


def sweep_id(cfg: RunConfig, combos: list[dict[str, Any]], seeds: int) -> str:
    """A hash of what the sweep trains: every worker of one sweep computes the same."""
    text = json.dumps({"config": config_mod.fingerprint(cfg), "grid": combos, "seeds": seeds},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


Members = list[tuple[dict[str, Any], int]]      # a group's variants: (axis values, seed)


def sweep(cfg: RunConfig, sets: list[str], seeds: int = 1, out: str | Path | None = None,
          *, progress: bool = True, storage: str | None = None,
          grace: float = GRACE_SECONDS) -> Path:
    """Train every variant; write one run directory each plus ``runs.csv``, ``summary.csv`` and
    ``report.html``.

    ``sets`` are ``key=v1,v2,...`` axes (a one-value item is a fixed setting). With ``storage``
    (a database URL) this process is one of any number of workers on the sweep, and ``grace`` is
    how long a worker may miss its heartbeats before its group is redone (module docstring).
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least 1")
    if seeds > MAX_MODELS:
        raise ConfigError(f"--seeds {seeds}: at most {MAX_MODELS} models per sweep")
    check_grace(grace)
    fixed, axes = split_sets(sets)
    if fixed:
        cfg = config_mod.replace(cfg, **fixed)
    combos = grid(axes)
    if len(combos) * seeds > MAX_MODELS:
        raise ConfigError(f"the sweep has {len(combos)} variants x {seeds} seeds = "
                          f"{len(combos) * seeds} models; at most {MAX_MODELS}: sweep fewer values "
                          "or seeds")
    names: set[str] = set()
    for combo in combos:                              # validate every variant before any work
        config_mod.replace(cfg, **combo)
        names.update(variant_name(combo, cfg.train.seed + s) for s in range(seeds))
    if len(names) != len(combos) * seeds:
        raise ConfigError("two variants of the sweep get the same name; give each --set value "
                          "once")
    sid = sweep_id(cfg, combos, seeds)
    if out is not None:
        out = Path(out)
    elif storage is not None:
        out = rundir.named("runs", cfg.name, f"sweep-{sid}")
    else:
        out = rundir.named("runs", cfg.name, f"sweep-{rundir.timestamp()}")
    if storage is not None:               # a storage that cannot open is refused before the claim
        open_storage(storage, heartbeat_for(grace))
    claim(out, sid)
    groups: dict[str, Members] = {}
    for combo in combos:
        key = group_key(config_mod.replace(cfg, **combo))
        for s in range(seeds):
            groups.setdefault(key, []).append((combo, cfg.train.seed + s))

    load = datasets.ConfigLoader(progress)   # groups that share their [data] share one load
    if storage is None:
        with rundir.hold(out, "sweep folder"):
            rows = [row for members in groups.values()
                    for row in _train_group(cfg, members, out, progress, load)]
            _finish(out, rows, combos, _axes(axes))
        return out
    _finish(out, _shared(cfg, groups, out, progress, storage, f"dnnlab-sweep-{sid}", grace, load),
            combos, _axes(axes))
    return out


def heartbeat_for(grace: float) -> int:
    """The heartbeat of a shared sweep's trials: ``GRACE_BEATS`` of them missed is ``grace``."""
    return max(1, round(grace / GRACE_BEATS))


RECORD = "sweep.json"    # what a sweep folder holds: the sweep's id (see claim)


def claim(out: Path, sid: str) -> Path:
    """Make ``out`` this sweep's folder, or refuse before any work: a sweep owns its folder.

    A second sweep with other settings (config, grid or seeds: another :func:`sweep_id`) into
    the same folder would overwrite the first one's variants or leave its own beside them, and a
    report would mix both; a sweep into a train run's folder would write into that run. So the
    folder must be new, empty, or this very sweep's (``sweep.json`` holds its id: the same
    command run again, e.g. a worker continuing a ``--storage`` sweep).
    """
    if out.is_dir():
        what = None
        record = out / RECORD
        if (out / "config.toml").exists() or (out / run_state.START).exists():
            what = "is a run directory of 'dnnlab train'"
        elif record.is_file():
            try:
                found = io.read_json(record).get("sweep_id")
            except (DnnlabError, AttributeError):
                found = None
            if found != sid:
                what = (f"holds another sweep (sweep id {io.shown(found, 20)}, this one {sid}: "
                        "another config, grid or seeds)")
        elif any(p.name != rundir.LOCK_NAME for p in out.iterdir()):
            what = "holds files of no sweep"
        if what is not None:
            raise DnnlabError(f"sweep folder {out} {what}; choose a new --out (a sweep owns its "
                              "folder; the same sweep run again continues in its own)")
    rundir.make_dir(out, "sweep folder")
    if not (out / RECORD).is_file():
        io.write_json(out / RECORD, {"sweep_id": sid})
    return out


def edge_notes(best: dict[str, Any], axes: list[tuple[str, list[Any]]]) -> list[str]:
    """For each numeric axis, a note when the best variant's value is its largest or smallest
    (:func:`dnnlab.analysis.stats.grid_end`): the sweep may have stopped short."""
    notes = []
    for key, values in axes:
        if key not in best or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in values):
            continue
        end = grid_end(best[key], values)
        if end:
            beyond = "larger" if end == "largest" else "smaller"
            notes.append(f"the best variant's {key} = {best[key]} is the {end} value swept: a "
                         f"{beyond} one may do better")
    return notes


def _shared(cfg: RunConfig, groups: dict[str, Members], out: Path, progress: bool, storage: str,
            name: str, grace: float, load: datasets.ConfigLoader) -> list[dict[str, Any]]:
    """Work on the sweep's groups with the other workers until every group is done; return the
    rows of every group, each from exactly one completed trial.

    Each pass: stale trials are failed (Optuna's retry enqueues them again); a group with no
    waiting, running or completed trial is enqueued (the first pass, a retry lost with its
    worker), unless it failed more than ``MAX_RETRY`` times, then its variants are recorded as
    failed; then this worker runs a waiting trial, or waits while others train, until every
    group is done and nothing waits. Workers that start together may enqueue a group twice: a
    trial runs its group only if no other trial of the group has completed or is ahead of it (a
    lower number, waiting or running), so the duplicate ends pruned and the group trains once.
    """
    heartbeat = heartbeat_for(grace)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(storage, heartbeat), study_name=name,
                                direction="maximize", load_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        key = trial.user_attrs.get("group")
        if key not in groups:      # another worker took the waiting trial first: optuna made one
            raise optuna.TrialPruned("no group: the waiting trial was taken by another worker")
        if _ahead(study.get_trials(deepcopy=False), key, trial.number):
            trial.set_user_attr("duplicate", True)
            raise optuna.TrialPruned(f"group {key} is run by another trial")
        rows = _train_group(cfg, groups[key], out, progress, load)
        trial.set_user_attr("rows", rows)
        return float(sum(r["status"] != "failed" for r in rows))

    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done: dict[str, list[dict[str, Any]]] = {}
        for key, members in groups.items():
            mine = sorted((t for t in trials if t.user_attrs.get("group") == key),
                          key=lambda t: t.number)
            complete = [t for t in mine if t.state == TrialState.COMPLETE]
            failures = sum(t.state == TrialState.FAIL for t in mine)
            if complete:
                done[key] = complete[0].user_attrs["rows"]
            elif any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in mine):
                continue
            elif failures > MAX_RETRY:
                done[key] = [_write_failed_variant(
                    cfg, combo, seed, out, f"its workers died or failed {failures} times on it; "
                    "see their output") for combo, seed in members]
            else:
                study.enqueue_trial({}, user_attrs={
                    "group": key, "runs": [variant_name(c, s) for c, s in members]})
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:               # a group to train, or a duplicate to prune: none is left waiting
                study.optimize(objective, n_trials=1, catch=())
            except optuna.exceptions.UpdateFinishedTrialError:
                pass           # our trial went stale (a stall past the grace) and was redone
        elif len(done) == len(groups):
            return [row for key in groups for row in done[key]]
        else:
            time.sleep(min(heartbeat, 2.0))    # others train the rest: wait, then look again


def _ahead(trials: list[optuna.trial.FrozenTrial], key: str, number: int) -> bool:
    """Whether another trial of group ``key`` has completed, or comes before trial ``number``
    (lower number) and waits or runs: then ``number`` is a duplicate of it."""
    return any(t.user_attrs.get("group") == key and t.number != number and (
        t.state == TrialState.COMPLETE
        or (t.number < number and t.state in (TrialState.WAITING, TrialState.RUNNING)))
        for t in trials)


def _train_group(cfg: RunConfig, members: Members, out: Path, progress: bool,
                 load: datasets.ConfigLoader) -> list[dict[str, Any]]:
    """Train one group (one stack, one dataset) as one K-model run; write its variants' run
    directories. A group that cannot train records every variant as failed, with the reason."""
    shared = {k: v for k, v in members[0][0].items() if k not in PER_MODEL_KEYS}
    group_cfg = config_mod.replace(cfg, **shared) if shared else cfg
    variants = [Variant(seed=seed, overrides={k: v for k, v in combo.items() if k in PER_MODEL_KEYS})
                for combo, seed in members]
    names = [variant_name(combo, seed) for combo, seed in members]
    try:
        data = load(group_cfg.data)
        results = train_many(group_cfg, data, variants, device=cfg.train.device,
                             progress=progress, run_dirs=[out / n for n in names])
    except DnnlabError as e:
        return [_write_failed_variant(cfg, combo, seed, out, str(e)) for combo, seed in members]
    per_model = per_model_seconds(results)
    rows = []
    for (combo, seed), name, res, secs in zip(members, names, results, per_model):
        assert res.config is not None
        vcfg = config_mod.replace(res.config, name=name)
        with rundir.hold(out / name):
            rows.append(_write_variant(out / name, vcfg, res, secs, data.fingerprint(),
                                       data.preprocessing())
                        | {"variant": variant_label(combo), "seed": seed})
    return rows


def per_model_seconds(results: list[FitResult]) -> list[float]:
    """Each model's seconds per epoch as if it had trained alone on the stack's share: a stack
    trains its K models in one epoch time, so each epoch's time is divided by the models still
    training in it (early-stopped and diverged ones drop out), then the median over the model's
    epochs is taken, as :attr:`FitResult.seconds_per_epoch` does for the stack's own time."""
    live = Counter(e for r in results for e in r.history["epoch"])
    return [statistics.median(s / live[e] for e, s in zip(r.history["epoch"], r.history["seconds"]))
            if r.history["epoch"] else math.nan for r in results]


# runs.csv: one row per model. summary.csv: one per variant, over its seeds (see aggregate).
RUN_COLUMNS = ("run", "variant", "seed", "status", "best_epoch", "best_val_loss",
               "best_val_accuracy", "test_accuracy", "epochs_run", "seconds_per_epoch_per_model",
               "message")
METRICS = ("best_val_loss", "best_val_accuracy", "test_accuracy")
SUMMARY_COLUMNS = ("variant", "seeds", "failed",
                   *(f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci95_low", "ci95_high")),
                   "seconds_per_epoch_per_model", "welch_p_vs_best", "vs_best", "note")
RANKED_BY = "best_val_loss"


def _write_variant(run_dir: Path, cfg: RunConfig, res: FitResult, per_model: float,
                   data: dict[str, str], preprocessing: Preprocessing) -> dict[str, Any]:
    """A model's run directory: exactly the config it trained with, its record (config, data
    fingerprints, run id: :func:`dnnlab.train.state.write_start`), its curves, its weights."""
    run_id = run_state.write_start(run_dir, cfg, data)
    io.write_text(run_dir / "config.toml", config_mod.to_toml(cfg))
    CsvLogger(run_dir / "metrics.csv").write(res.history)
    summary = res.summary()
    summary.update(name=cfg.name, status="failed" if res.status == "diverged" else res.status,
                   seconds_per_epoch_per_model=per_model)
    io.write_json(run_dir / "summary.json", summary)
    save_final(res.model, run_dir, {"best_epoch": res.best_epoch, run_state.RUN_ID: run_id},
               preprocessing)
    return {"run": run_dir.name, **{k: summary.get(k) for k in RUN_COLUMNS if k != "run"}}


def _write_failed_variant(cfg: RunConfig, combo: dict[str, Any], seed: int, out: Path,
                          message: str) -> dict[str, Any]:
    """The run directory of a model whose group could not train: its config and why."""
    name = variant_name(combo, seed)
    run_dir = rundir.make_dir(out / name, "variant folder")
    vcfg = config_mod.replace(cfg, **combo, **{"train.seed": seed, "name": name})
    run_state.write_start(run_dir, vcfg, None)         # no data was loaded: none to record
    io.write_text(run_dir / "config.toml", config_mod.to_toml(vcfg))
    io.write_json(run_dir / "summary.json", {"name": name, "status": "failed",
                                             "message": message, "epochs_run": 0})
    return {**{k: None for k in RUN_COLUMNS}, "run": name, "variant": variant_label(combo),
            "seed": seed, "status": "failed", "epochs_run": 0, "message": message}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant over its seeds, best first (lowest mean best validation loss).

    Per metric: the mean and sample std (ddof=1) over the seeds that trained (a failed seed has
    no score and is counted in ``failed``), and the 95% confidence interval of the mean from
    Student's t with n - 1 degrees of freedom (:func:`dnnlab.analysis.stats.mean_interval`).

    Variants are ranked by the mean best validation loss: the number each run's best epoch was
    chosen by, continuous where accuracy on a few thousand images moves in steps; test accuracy
    is shown but never chooses (that would leak the test set into the choice).

    *Beyond noise*: the verdict "this variant is worse than the best"
    (:func:`dnnlab.analysis.verdict.differs`): Welch's two-sided t-test of each variant's best
    validation losses against the best variant's, at 5% (``welch_p_vs_best`` < ``NOISE_LEVEL``,
    the lab's one rule: :func:`dnnlab.analysis.stats.compare`). Welch's because it tests the difference
    itself and does not assume the two spreads equal (a high learning rate scatters its seeds
    more than a low one). Non-overlapping 95% intervals were the other candidate; they are a far
    stricter test than they look (about p < 0.006 for equal spreads, and a level that shifts
    with n and the spreads), so they would call real differences noise. Two caveats the report
    repeats: with many variants, each tested at 5%, a few calls are chance; and the best is
    chosen on these same numbers, so its lead is slightly flattered. Fewer than
    :data:`~dnnlab.analysis.verdict.MIN_SEEDS` seeds on either side: no verdict ("no test"), and a
    variant of one seed has no std (empty, not 0).
    """
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    out = []
    for variant, runs in by_variant.items():
        ok = [r for r in runs if r["status"] != "failed"]
        row: dict[str, Any] = {"variant": variant, "seeds": len(ok), "failed": len(runs) - len(ok)}
        for m in METRICS:
            values = [r.get(m) for r in ok]
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(values)
            if len(ok) < 2:                         # one seed: no spread, not a spread of 0
                row[f"{m}_std"] = None
            row[f"{m}_ci95_low"], row[f"{m}_ci95_high"] = mean_interval(values, INTERVAL)
        row["seconds_per_epoch_per_model"] = mean_std(
            r.get("seconds_per_epoch_per_model") for r in ok)[0]
        row["_ranked"] = [r.get(RANKED_BY) for r in ok]
        out.append(row)
    out.sort(key=lambda v: (v[f"{RANKED_BY}_mean"] is None, v[f"{RANKED_BY}_mean"] or 0.0,
                            v["variant"]))
    best = out[0] if out and out[0][f"{RANKED_BY}_mean"] is not None else None
    for v in out:
        claim = (differs(f"{v['variant']} is worse than {best['variant']} ({RANKED_BY})",
                         v["_ranked"], best["_ranked"], larger=True,
                         names=(v["variant"], best["variant"]))
                 if best is not None and v is not best else None)
        v["welch_p_vs_best"] = claim.p if claim else None
        v["vs_best"] = ("best" if v is best else "failed" if v["seeds"] == 0
                        else f"no test (under {MIN_SEEDS} seeds)"
                        if best is None or claim is None or min(v["seeds"], best["seeds"]) < MIN_SEEDS
                        else "worse beyond noise" if claim.outcome == SUPPORTED else "within noise")
    for v in out:
        del v["_ranked"]
    return out


def _finish(out: Path, rows: list[dict[str, Any]], combos: list[dict[str, Any]],
            axes: list[tuple[str, list[Any]]]) -> None:
    """runs.csv, summary.csv and the report, from every row; the curves from the run
    directories present here (another machine's are elsewhere). The best variant's row carries
    :func:`edge_notes` in its ``note`` column."""
    variants = aggregate(rows)
    if variants and variants[0]["vs_best"] == "best":
        best = {variant_label(c): c for c in combos}.get(variants[0]["variant"], {})
        variants[0]["note"] = "; ".join(edge_notes(best, axes))
    order = {v["variant"]: i for i, v in enumerate(variants)}
    rows = sorted(rows, key=lambda r: (order[r["variant"]], r["seed"]))
    _write_csv(out / "runs.csv", RUN_COLUMNS, rows)
    _write_csv(out / "summary.csv", SUMMARY_COLUMNS, variants)
    histories: dict[str, list[dict[str, list[float]]]] = {}
    for r in rows:
        if r.get("epochs_run") and (out / r["run"] / "metrics.csv").is_file():
            histories.setdefault(r["variant"], []).append(read_metrics(out / r["run"]))
    report_sweep(out, variants, rows, histories, ranked_by=RANKED_BY)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    io.write_text(path, buf.getvalue())


def _warnings(out: Path, runs: list[dict[str, str]]) -> list[str]:
    """The runs' ``warnings`` (data.caveats: weak evaluation splits), each sentence once."""
    found: dict[str, None] = {}
    for r in runs:
        path = out / r["run"] / "summary.json"
        if r["status"] != "failed" and path.is_file():
            summary = io.read_json(path)
            found.update(dict.fromkeys(summary.get("warnings") or [] if isinstance(summary, dict) else []))
    return list(found)


def all_failed(out: Path) -> bool:
    """Whether every model of the sweep in ``out`` failed (runs.csv): then the sweep measured
    nothing, and ``dnnlab sweep`` exits non-zero as a diverged ``dnnlab train`` does."""
    with open(out / "runs.csv", encoding="utf-8") as f:
        return all(r.get("status") == "failed" for r in csv.DictReader(f))


def format_table(out: Path) -> str:
    """summary.csv as the terminal table: one line per variant over its seeds, best first, then
    the failed runs with their reasons (from runs.csv)."""
    def read(name: str) -> list[dict[str, str]]:
        with open(out / name, encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def num(r: dict[str, str], key: str) -> float | None:
        return float(r[key]) if r.get(key) not in (None, "") else None

    def ci(r: dict[str, str], m: str, scale: float, digits: int) -> str:
        lo, hi = num(r, f"{m}_ci95_low"), num(r, f"{m}_ci95_high")
        return "-" if lo is None or hi is None else f"[{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"

    variants, runs = read("summary.csv"), read("runs.csv")
    width = max([len("variant"), *(len(v["variant"]) for v in variants)])
    width = min(width, 48)
    lines = [f"{'variant':<{width}} {'seeds':>5}  {'val loss (mean ± std)':>21} {'95% CI':>17}  "
             f"{'val acc %':>13}  {'test acc %':>13}  {'s/epoch/model':>13}  vs best (Welch, 5%)"]
    for v in variants:
        total = int(v["seeds"]) + int(v["failed"])
        spe = num(v, "seconds_per_epoch_per_model")
        p = num(v, "welch_p_vs_best")
        verdict = v["vs_best"] + (f" (p={p:.2g})" if p is not None else "")
        lines.append(
            f"{v['variant'][:width]:<{width}} {v['seeds'] + '/' + str(total):>5}  "
            f"{pm(num(v, 'best_val_loss_mean'), num(v, 'best_val_loss_std'), 1, 4):>21} "
            f"{ci(v, 'best_val_loss', 1, 4):>17}  "
            f"{pm(num(v, 'best_val_accuracy_mean'), num(v, 'best_val_accuracy_std')):>13}  "
            f"{pm(num(v, 'test_accuracy_mean'), num(v, 'test_accuracy_std')):>13}  "
            f"{'-' if spe is None else format(spe, '.3f'):>13}  {verdict}")
    lines += [f"note: {v['note']}" for v in variants if v.get("note")]
    lines += [f"warning: {w}" for w in _warnings(out, runs)]
    failed = [r for r in runs if r["status"] == "failed"]
    if failed:
        lines.append(f"failed runs ({len(failed)}):")
        lines += [f"  {r['run']}: {r['message']}" for r in failed]
    return "\n".join(lines)

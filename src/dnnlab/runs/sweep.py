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
the sweep goes on and summary.csv lists every variant. Each variant gets a run
directory like ``dnnlab train`` writes (its name made safe and bounded *before* any training:
:func:`dnnlab.rundir.safe_name`), and the sweep a summary table and a report.

**Many workers** (``storage="sqlite:///..."`` or ``"postgresql://..."``): every process started
with the same sweep and storage works on it. Groups are claimed in a claims table (an INSERT
that only one worker can win, and a takeover UPDATE of a claim whose heartbeat is older than
``grace`` seconds, so a killed worker's group is redone); a finished group's summary rows are
stored with its claim in one transaction, keyed by run name, so the summary holds every variant
exactly once. Re-running the command resumes the sweep: finished groups are skipped. The sweep
folder is named by a hash of the sweep (config, grid, seeds), so every worker finds it.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from dnnlab import config as config_mod
from dnnlab import data as datasets  # called through the module, so tests can stand in data
from dnnlab import io, rundir
from dnnlab.config import PER_MODEL_KEYS, RunConfig, group_key
from dnnlab.dburl import safe_url, with_driver
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.report import report_runs
from dnnlab.runs.recorded import train_many
from dnnlab.runs.single import default_run_dir
from dnnlab.train.callbacks import CsvLogger
from dnnlab.train.checkpoint import save_model
from dnnlab.train.driver import FitResult, Variant

# More models than this in one sweep is a typo, not an experiment: 10,000 of the book's 5 x 100
# MNIST nets, stacked with their optimizer state and best/last-good copies, need about 30 GB.
MAX_MODELS = 10_000
GRACE_SECONDS = 60       # a claim whose heartbeat is older than this is redone by another worker


def split_values(text: str) -> list[str]:
    """Split ``a,b,c`` on the commas that are not inside brackets or quotes."""
    parts, depth, quote, cur = [], 0, "", []
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


def variant_name(overrides: dict[str, Any], seed: int) -> str:
    """The variant's folder name: its axis values and seed, safe and bounded (long ones end in a
    hash of the whole name, so they stay unique)."""
    parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
    return rundir.safe_name("_".join(parts + [f"seed={seed}"]).replace(" ", ""))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Claims:
    """The shared state of a sweep in a database: who works on which group, and the results.

    ``claim`` is atomic in SQLite and PostgreSQL alike: a new claim is an INSERT that a primary
    key lets only one worker win; a stale claim (no heartbeat for ``grace`` seconds: its worker
    died) is taken over by an UPDATE whose WHERE re-checks the staleness under the row lock.
    """

    def __init__(self, url: str, sweep_id: str, grace: float = GRACE_SECONDS):
        self.sweep, self.grace, self.me = sweep_id, grace, worker_id()
        url = with_driver(url)
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 120}
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except (ImportError, ModuleNotFoundError) as e:
            raise DnnlabError(f"--storage {safe_url(url)} needs a database driver that is not "
                              f"installed ({e}); for PostgreSQL: pip install psycopg2-binary") from None
        except Exception as e:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL
            raise DnnlabError(f"--storage {safe_url(url)}: not a usable database URL ({e})") from None
        meta = sa.MetaData()
        self.claims = sa.Table(
            "dnnlab_sweep_claims", meta,
            sa.Column("sweep", sa.String(64), primary_key=True),
            sa.Column("grp", sa.String(64), primary_key=True),
            sa.Column("worker", sa.String(300), nullable=False),
            sa.Column("heartbeat", sa.Float, nullable=False),
            sa.Column("state", sa.String(16), nullable=False))
        self.rows_table = sa.Table(
            "dnnlab_sweep_rows", meta,
            sa.Column("sweep", sa.String(64), primary_key=True),
            sa.Column("run", sa.String(300), primary_key=True),
            sa.Column("grp", sa.String(64), nullable=False),
            sa.Column("row", sa.Text, nullable=False))
        last: Exception | None = None
        for attempt in range(8):                # workers that start together race to create
            try:
                meta.create_all(self.engine)
                return
            except (OperationalError, IntegrityError) as e:
                last = e
                time.sleep(0.25 * (attempt + 1))
            except Exception as e:  # noqa: BLE001
                raise DnnlabError(f"--storage {safe_url(url)}: cannot open the database ({e}); "
                                  "check the URL and that the server is running") from None
        raise DnnlabError(f"--storage {safe_url(url)}: cannot create the sweep tables ({last})")

    def _where(self, group: str):
        c = self.claims.c
        return sa.and_(c.sweep == self.sweep, c.grp == group)

    def status(self) -> dict[str, tuple[str, str, float]]:
        """group -> (state, worker, heartbeat) of every claimed group."""
        c = self.claims.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.grp, c.state, c.worker, c.heartbeat)
                                .where(c.sweep == self.sweep)).all()
        return {g: (state, w, hb) for g, state, w, hb in rows}

    def claim(self, group: str) -> bool:
        """Take ``group`` if nobody has, or if its worker's heartbeat is stale."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(self.claims.insert().values(sweep=self.sweep, grp=group, worker=self.me,
                                                         heartbeat=now, state="running"))
            return True
        except IntegrityError:
            pass
        c = self.claims.c
        with self.engine.begin() as conn:
            res = conn.execute(self.claims.update()
                               .where(self._where(group), c.state == "running",
                                      c.heartbeat < now - self.grace)
                               .values(worker=self.me, heartbeat=now))
            return res.rowcount == 1

    def beat(self, group: str) -> bool:
        c = self.claims.c
        with self.engine.begin() as conn:
            res = conn.execute(self.claims.update()
                               .where(self._where(group), c.worker == self.me, c.state == "running")
                               .values(heartbeat=time.time()))
            return res.rowcount == 1

    def finish(self, group: str, rows: list[dict[str, Any]]) -> bool:
        """Store ``rows`` and mark ``group`` done, in one transaction; False (nothing stored)
        when the claim was taken over meanwhile (the other worker will store its own rows)."""
        c = self.claims.c
        with self.engine.begin() as conn:
            res = conn.execute(self.claims.update()
                               .where(self._where(group), c.worker == self.me, c.state == "running")
                               .values(state="done", heartbeat=time.time()))
            if res.rowcount != 1:
                conn.rollback()
                return False
            r = self.rows_table.c
            conn.execute(self.rows_table.delete().where(r.sweep == self.sweep, r.grp == group))
            conn.execute(self.rows_table.insert(), [
                {"sweep": self.sweep, "run": row["run"], "grp": group,
                 "row": json.dumps(row, default=io._json_default)} for row in rows])
        return True

    def rows(self) -> list[dict[str, Any]]:
        r = self.rows_table.c
        with self.engine.connect() as conn:
            texts = conn.execute(sa.select(r.row).where(r.sweep == self.sweep)).scalars().all()
        return [json.loads(t) for t in texts]


class _Heartbeat:
    """Beats for a claimed group from a thread while the group trains."""

    def __init__(self, claims: Claims, group: str):
        self.claims, self.group, self.stop = claims, group, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(max(self.claims.grace / 4, 0.2)):
            try:
                self.claims.beat(self.group)
            except Exception:  # noqa: BLE001 - a lost beat is retried; a dead DB ends the sweep later
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def sweep_id(cfg: RunConfig, combos: list[dict[str, Any]], seeds: int) -> str:
    """A hash of what the sweep trains: every worker of one sweep computes the same."""
    text = json.dumps({"config": config_mod.fingerprint(cfg), "grid": combos, "seeds": seeds},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def sweep(cfg: RunConfig, sets: list[str], seeds: int = 1, out: str | Path | None = None,
          *, progress: bool = True, storage: str | None = None,
          grace: float = GRACE_SECONDS) -> Path:
    """Train every variant; write one run directory each plus ``summary.csv`` and ``report.html``.

    ``sets`` are ``key=v1,v2,...`` axes (a one-value item is a fixed setting). With ``storage``
    (a database URL) this process is one of any number of workers on the sweep (module docstring).
    """
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: need at least 1")
    if seeds > MAX_MODELS:
        raise ConfigError(f"--seeds {seeds}: at most {MAX_MODELS} models per sweep")
    if grace <= 0:
        raise ConfigError(f"--grace {grace}: give a number of seconds > 0")
    fixed, axes = split_sets(sets)
    if fixed:
        cfg = config_mod.replace(cfg, **fixed)
    combos = grid(axes)
    if len(combos) * seeds > MAX_MODELS:
        raise ConfigError(f"the sweep has {len(combos)} variants x {seeds} seeds = "
                          f"{len(combos) * seeds} models; at most {MAX_MODELS}: sweep fewer values "
                          "or seeds")
    names: dict[str, tuple[dict[str, Any], int]] = {}
    for combo in combos:                              # validate every variant before any work
        config_mod.replace(cfg, **combo)
        for s in range(seeds):
            names[variant_name(combo, cfg.train.seed + s)] = (combo, cfg.train.seed + s)
    if len(names) != len(combos) * seeds:
        raise ConfigError("two variants of the sweep get the same name; give each --set value "
                          "once")
    sid = sweep_id(cfg, combos, seeds)
    if out is not None:
        out = Path(out)
    elif storage is not None:
        out = rundir.child("runs", f"{rundir.safe_name(cfg.name, 100)}-sweep-{sid}")
    else:
        out = default_run_dir(cfg).with_name(
            f"{rundir.safe_name(cfg.name, 100)}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    rundir.make_dir(out, "sweep folder")
    groups: dict[str, list[tuple[dict[str, Any], int]]] = {}
    for combo in combos:
        key = group_key(config_mod.replace(cfg, **combo))
        for s in range(seeds):
            groups.setdefault(key, []).append((combo, cfg.train.seed + s))

    if storage is None:
        with rundir.hold(out, "sweep folder"):
            rows = [row for members in groups.values()
                    for row in _train_group(cfg, members, out, progress)]
            _finish(out, rows)
        return out

    claims = Claims(storage, sid, grace)
    while True:
        status = claims.status()
        now = time.time()
        open_groups = [g for g in groups if g not in status or (
            status[g][0] == "running" and status[g][2] < now - grace)]
        mine = next((g for g in open_groups if claims.claim(g)), None)
        if mine is not None:
            with _Heartbeat(claims, mine):
                rows = _train_group(cfg, groups[mine], out, progress)
            claims.finish(mine, rows)
            continue
        if all(status.get(g, ("",))[0] == "done" for g in groups):
            break
        time.sleep(min(grace / 4, 2.0))      # others are training the rest: wait, then look again
    rows = claims.rows()
    _finish(out, rows)
    return out


def _train_group(cfg: RunConfig, members: list[tuple[dict[str, Any], int]], out: Path,
                 progress: bool) -> list[dict[str, Any]]:
    """Train one group (one stack, one dataset) as one K-model run; write its variants' run
    directories. A group that cannot train records every variant as failed, with the reason."""
    shared = {k: v for k, v in members[0][0].items() if k not in PER_MODEL_KEYS}
    group_cfg = config_mod.replace(cfg, **shared) if shared else cfg
    variants = [Variant(seed=seed, overrides={k: v for k, v in combo.items() if k in PER_MODEL_KEYS})
                for combo, seed in members]
    names = [variant_name(combo, seed) for combo, seed in members]
    try:
        data = datasets.load_from_config(group_cfg.data)
        results = train_many(group_cfg, data, variants, device=cfg.train.device,
                             progress=progress, run_dirs=[out / n for n in names])
    except DnnlabError as e:
        return [_write_failed(out / name, config_mod.replace(group_cfg, **v.overrides,
                                                             **{"train.seed": v.seed, "name": name}),
                              str(e)) for name, v in zip(names, variants)]
    rows = []
    for name, res in zip(names, results):
        assert res.config is not None
        vcfg = config_mod.replace(res.config, name=name)
        with rundir.hold(out / name):
            rows.append(_write_variant(out / name, vcfg, res))
    return rows


def _finish(out: Path, rows: list[dict[str, Any]]) -> None:
    """summary.csv from every row; the report over the run directories present here."""
    _write_summary(out, rows)
    dirs = [out / r["run"] for r in rows if r.get("epochs_run")]   # failed before an epoch: no curve
    dirs = [d for d in dirs if (d / "metrics.csv").is_file()]      # other workers' are elsewhere
    if dirs:
        report_runs(dirs, out)


SUMMARY_COLUMNS = ("run", "status", "best_epoch", "best_val_loss", "best_val_accuracy",
                   "test_accuracy", "epochs_run", "seconds_per_epoch", "message")


def _write_variant(run_dir: Path, cfg: RunConfig, res: FitResult) -> dict[str, Any]:
    """A variant's run directory: exactly the config it trained with, its curves, its model."""
    io.write_text(run_dir / "config.toml", config_mod.to_toml(cfg))
    CsvLogger(run_dir / "metrics.csv").write(res.history)
    summary = res.summary()
    summary.update(name=cfg.name, status="failed" if res.status == "diverged" else res.status)
    io.write_json(run_dir / "summary.json", summary)
    save_model(res.model, run_dir / "model.safetensors", {"best_epoch": res.best_epoch})
    return {"run": run_dir.name, **{k: summary.get(k) for k in SUMMARY_COLUMNS if k != "run"}}


def _write_failed(run_dir: Path, cfg: RunConfig, message: str) -> dict[str, Any]:
    """The run directory of a variant whose group could not train: its config and why."""
    rundir.make_dir(run_dir, "variant folder")
    io.write_text(run_dir / "config.toml", config_mod.to_toml(cfg))
    io.write_json(run_dir / "summary.json", {"name": cfg.name, "status": "failed",
                                             "message": message, "epochs_run": 0})
    return {"run": run_dir.name, **{k: None for k in SUMMARY_COLUMNS if k != "run"},
            "status": "failed", "epochs_run": 0, "message": message}


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    rows.sort(key=lambda r: (r["best_val_loss"] is None, r["best_val_loss"] or 0.0, r["run"]))
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    io.write_text(out / "summary.csv", buf.getvalue())


def format_table(out: Path) -> str:
    """summary.csv as the terminal table (every variant, failed ones with their status)."""
    with open(out / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))

    def num(r: dict[str, str], k: str, fmt: str) -> str:
        return format(float(r[k]), fmt) if r.get(k) not in (None, "", "None") else "-"
    lines = [f"{'run':<48} {'status':<14} {'best ep':>7} {'val loss':>9} {'val acc':>8} {'test acc':>8}"]
    for r in rows:
        lines.append(f"{r['run'][:48]:<48} {r['status']:<14} {r['best_epoch'] or '-':>7} "
                     f"{num(r, 'best_val_loss', '.4f'):>9} {num(r, 'best_val_accuracy', '.4f'):>8} "
                     f"{num(r, 'test_accuracy', '.4f'):>8}")
    return "\n".join(lines)

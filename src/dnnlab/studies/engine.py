"""The study engine: stages declared once, run in dependency order, resumed from their records.

A study is a tuple of :class:`Stage`. Each stage says, in one place, its name, the stages it
needs, what its record holds, which of the study's settings it alone reads (``own``), what it
takes from the records of the stages it needs (``takes``: part of its fingerprint) and the
function that computes its record. :func:`run` does the rest for every study:

* **order**: a stage starts as soon as every stage it needs is done; ready stages start in
  declaration order (a study declares its longest chains first, so that its workers finish
  together);
* **resume**: each finished record is saved as ``<out>/stages/<name>.json`` with its fingerprint
  (the study's settings the stage depends on, its ``version``, the inputs it took); a resumed run
  reuses a record whose fingerprint matches and recomputes the rest;
* **workers**: with ``workers > 1`` stages run in processes that share the free cores through one
  :class:`~dnnlab.train.threads.Group` (on a CPU a process per core trains about twice what two
  threads of one process do on these small nets: benchmarks/README.md);
* **progress**: one line when a stage starts, is reused or is done.

:func:`run_shared` runs the same stages as trials of an Optuna storage (``--storage URL``): any
number of workers on any number of machines, each stage done once, a killed worker's stage
retried (heartbeats, as ``dnnlab tune`` does); records are the trials' user attributes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from dnnlab import io
from dnnlab.errors import DnnlabError
from dnnlab.storage import HEARTBEAT_SECONDS, open_storage, worker_id
from dnnlab.train import threads as thread_policy

Record = dict[str, Any]


def _no_inputs(done: dict[str, Record]) -> dict[str, Any] | None:
    return None


@dataclass(frozen=True)
class Stage:
    """One stage of a study, declared once.

    ``compute(setup, inputs) -> record`` runs in this process or a worker's; ``setup`` is the
    study's picklable settings object, ``inputs`` what ``takes(done)`` drew from the finished
    records it needs. ``own``: settings only this stage reads (changing one redoes this stage
    alone on resume). ``version``: bumped when the stage's method changes, so that a resumed run
    redoes it. ``threads``: torch threads fixed for this stage (1 for a stage that measures time
    and must not share cores), None to let the thread policy decide. ``partial``: the stage runs
    on whatever its needs finished (its ``takes`` skips the failed ones); otherwise a stage whose
    need failed is itself recorded as failed.

    A stage that raises (a diverged model, a variant the user's data cannot train) does not stop
    the study: its record is ``{"failed": reason}`` (never saved, so ``--resume`` retries it),
    the stages after it go on as above, and :func:`failures` lists what failed.
    """
    name: str
    needs: tuple[str, ...]
    produces: str
    compute: Callable[[Any, dict[str, Any]], Record]
    takes: Callable[[dict[str, Record]], dict[str, Any] | None] = _no_inputs
    own: tuple[str, ...] = ()
    version: int = 1
    threads: int | None = None
    partial: bool = False


FAILED = "failed"    # the key of a failed stage's record: why it failed


def failed(record: Record | None) -> str | None:
    """Why a stage failed (its record's ``failed``), or None for a finished stage."""
    return record.get(FAILED) if isinstance(record, dict) else None


def failures(records: dict[str, Record]) -> dict[str, str]:
    """The failed stages of a run and why, in declaration order."""
    return {name: why for name, rec in records.items() if (why := failed(rec)) is not None}


def check_graph(stages: tuple[Stage, ...]) -> None:
    """Every need names an earlier stage (so the graph has no cycle) and names are unique."""
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise DnnlabError(f"study stage {s.name!r} is declared twice; give each stage its own "
                              "name")
        missing = [n for n in s.needs if n not in seen]
        if missing:
            raise DnnlabError(f"study stage {s.name!r} needs {', '.join(missing)}, not declared "
                              "before it; declare the stages a stage needs first")
        seen.add(s.name)


@dataclass(frozen=True)
class Say:
    """Progress lines on stderr, ``[study] text``; picklable, so that workers print them too."""
    study: str
    on: bool = True

    def __call__(self, text: str) -> None:
        if self.on:
            print(f"[{self.study}] {text}", file=sys.stderr, flush=True)


def fingerprint(stage: Stage, stages: tuple[Stage, ...], settings: dict[str, Any],
                inputs: dict[str, Any] | None) -> dict[str, Any]:
    """What ``stage``'s record depends on: the study's ``settings`` less the ones other stages
    alone read, its version, and the inputs it took from earlier stages (as JSON reads back)."""
    others = {k for s in stages if s is not stage for k in s.own} - set(stage.own)
    fp: dict[str, Any] = {"settings": {k: v for k, v in settings.items() if k not in others},
                          "version": stage.version}
    if inputs:
        fp["inputs"] = inputs
    return json.loads(json.dumps(fp))


def digest(value: Any) -> str:
    """A short stable hash of a JSON-able value (names a shared study in a storage)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Store:
    """Stage records in ``folder`` (``<name>.json``: fingerprint and record)."""
    folder: Path
    resume: bool
    say: Say
    reused: list[str] = field(default_factory=list)

    def lookup(self, name: str, fp: dict[str, Any]) -> Record | None:
        path = self.folder / f"{name}.json"
        if not (self.resume and path.is_file()):
            return None
        saved = io.read_json(path)
        if saved.get("fingerprint") != fp:
            return None
        self.say(f"{name}: reusing the finished stage in {path}")
        self.reused.append(name)
        return saved["record"]

    def save(self, name: str, fp: dict[str, Any], record: Record) -> None:
        io.write_json(self.folder / f"{name}.json", {"fingerprint": fp, "record": record})


_GROUP: thread_policy.Group | None = None    # per worker process: the workers sharing the cores
_CACHE: dict[str, Any] = {}                  # per process: what its stages load once (the data)


def _init_worker(group: thread_policy.Group) -> None:
    global _GROUP
    _GROUP = group


def cached(key: str, make: Callable[[], Any]) -> Any:
    """``make()`` once per process and ``key``: a worker's next stages reuse the loaded data."""
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def compute(stage_compute: Callable, fixed: int | None, setup: Any,
            inputs: dict[str, Any] | None) -> Record:
    """Run one stage's function under the thread policy; its record gains ``stage_seconds`` and
    ``stage_window`` (wall-clock start and end: the study's timeline). An exception becomes a
    failed record (``{"failed": "<what went wrong>"}``), like a failed sweep variant."""
    share = _GROUP.member() if fixed is None and _GROUP is not None else contextlib.nullcontext()
    with thread_policy.fixed(fixed), share:
        started, t0 = time.time(), time.perf_counter()
        try:
            record = stage_compute(setup, inputs or {})
        except Exception as e:  # noqa: BLE001 - one stage must not sink the study
            why = str(e) if isinstance(e, DnnlabError) else f"{type(e).__name__}: {e}"
            record = {FAILED: why}
        record["stage_seconds"] = time.perf_counter() - t0
        record["stage_window"] = [started, time.time()]
        return record


def _fixed(stage: Stage, threads: int | None) -> int | None:
    return threads or stage.threads


def run(stages: tuple[Stage, ...], setup: Any, *, settings: dict[str, Any], store: Store,
        workers: int = 1, threads: int | None = None, say: Say | None = None) -> dict[str, Record]:
    """Every stage, each as soon as what it needs is done, on ``workers`` processes (in this one
    when 1); returns the records by name. ``settings``: the study-level values every stage's
    fingerprint starts from (protocol, seeds, data). ``threads`` fixes torch's threads per
    process (None: the policy shares the free cores among the running stages)."""
    check_graph(stages)
    say = say or store.say
    done: dict[str, Record] = {}
    running: dict[Future, tuple[Stage, dict[str, Any] | None]] = {}
    pool = None
    if workers > 1:
        spawn = mp.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init_worker,
                                   initargs=(thread_policy.Group(workers, spawn),))

    def finish(stage: Stage, inputs: dict[str, Any] | None, record: Record) -> None:
        done[stage.name] = record
        if failed(record) is not None:
            say(f"{stage.name}: FAILED: {failed(record)} ({len(done)} of {len(stages)} stages)")
            return
        store.save(stage.name, fingerprint(stage, stages, settings, inputs), record)
        say(f"{stage.name}: done in {record['stage_seconds']:.0f} s ({len(done)} of "
            f"{len(stages)} stages)")

    try:
        while len(done) < len(stages):
            active = {s.name for s, _ in running.values()}
            for stage in stages:                           # start every stage that is ready
                if stage.name in done or stage.name in active:
                    continue
                if not all(n in done for n in stage.needs):
                    continue
                lost = [n for n in stage.needs if failed(done[n]) is not None]
                if lost and not stage.partial:
                    finish(stage, None, {FAILED: f"needs {', '.join(lost)}, which failed",
                                         "stage_seconds": 0.0})
                    continue
                inputs = stage.takes(done)
                saved = store.lookup(stage.name, fingerprint(stage, stages, settings, inputs))
                if saved is not None:
                    done[stage.name] = saved
                    continue
                say(f"{stage.name}: started ({stage.produces})")
                if pool is None:
                    finish(stage, inputs, compute(stage.compute, _fixed(stage, threads), setup,
                                                  inputs))
                else:
                    fut = pool.submit(compute, stage.compute, _fixed(stage, threads), setup,
                                      inputs)
                    running[fut] = (stage, inputs)
            if running:                                    # wait for one to finish
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    stage, inputs = running.pop(fut)
                    finish(stage, inputs, fut.result())
    except KeyboardInterrupt:             # Ctrl-C, SIGTERM, SIGHUP: the workers stop now too
        if pool is not None:
            stop_workers(pool)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return done


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """End a pool's worker processes at once (SIGTERM), so an interrupted study ends within
    seconds instead of after its running stages (``shutdown`` waits for them); the stages
    finished so far are saved and a ``--resume`` reuses them."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.terminate()
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError, AttributeError, AssertionError):
            process.join(5)


def default_workers(device_type: str) -> int:
    """One process more than the cores (while one stage waits for another the cores stay busy),
    at most 4; 1 on CUDA, where one process keeps the device busy."""
    return min((os.cpu_count() or 1) + 1, 4) if device_type == "cpu" else 1


# ----------------------------------------------------------------------------- across machines
POLL_SECONDS = 1.0
STAGE_ATTR = "stage"
RECORD_ATTR = "record"


def _trials(study) -> list:
    return study.get_trials(deepcopy=False)


def _completed(study) -> dict[str, Record]:
    return {t.user_attrs[STAGE_ATTR]: t.user_attrs[RECORD_ATTR] for t in _trials(study)
            if t.state == optuna.trial.TrialState.COMPLETE and STAGE_ATTR in t.user_attrs}


def _open_study(url: str, name: str, stages: tuple[Stage, ...], heartbeat: int):
    """The shared study ``name``; the worker that creates it enqueues one trial per stage."""
    storage = open_storage(url, heartbeat)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(storage=storage, study_name=name)
    for stage in stages:
        study.enqueue_trial({}, user_attrs={STAGE_ATTR: stage.name})
    return study


def _requeue_lost(study, stages: tuple[Stage, ...]) -> None:
    """A stage with no trial waiting, running or complete (its retries spent, or its creator
    killed before it enqueued it) is enqueued again: no stage is ever left undone."""
    live = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING,
            optuna.trial.TrialState.COMPLETE)
    held = {t.user_attrs.get(STAGE_ATTR) for t in _trials(study) if t.state in live}
    for stage in stages:
        if stage.name not in held:
            study.enqueue_trial({}, user_attrs={STAGE_ATTR: stage.name})


def run_shared(stages: tuple[Stage, ...], setup: Any, *, settings: dict[str, Any], url: str,
               study_name: str, threads: int | None = None, heartbeat: int = HEARTBEAT_SECONDS,
               say: Say) -> dict[str, Record]:
    """The stages as trials of the Optuna storage ``url``, this process one worker among any.

    The study is named ``study_name`` and the hash of ``settings``, so workers started with the
    same study settings share it and another protocol starts afresh. A worker takes the oldest
    waiting trial: a stage whose needs are not done yet goes back to the end of the queue; a stage
    another worker runs or has done is skipped (pruned); a worker killed mid-stage stops its
    heartbeat and, ``GRACE_BEATS`` heartbeats later, its stage is enqueued again (Optuna's retry
    callback). Returns every record once all stages are done.
    """
    check_graph(stages)
    by_name = {s.name: s for s in stages}
    name = f"{study_name}-{digest(settings)}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # a line per trial is noise here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = _open_study(url, name, stages, heartbeat)
    say(f"worker {worker_id()} on shared study {name!r}")

    def objective(trial) -> float:
        stage_name = trial.user_attrs.get(STAGE_ATTR)
        if stage_name not in by_name:
            raise optuna.TrialPruned("no stage was waiting")
        stage = by_name[stage_name]
        trials = _trials(study)
        done = _completed(study)
        if stage_name in done or any(
                t.state == optuna.trial.TrialState.RUNNING and t.number != trial.number
                and t.user_attrs.get(STAGE_ATTR) == stage_name for t in trials):
            raise optuna.TrialPruned(f"{stage_name}: done or running elsewhere")
        if not all(n in done for n in stage.needs):
            study.enqueue_trial({}, user_attrs={STAGE_ATTR: stage_name})   # back of the queue
            raise optuna.TrialPruned(f"{stage_name}: waiting for what it needs")
        lost = [n for n in stage.needs if failed(done[n]) is not None]
        if lost and not stage.partial:
            record: Record = {FAILED: f"needs {', '.join(lost)}, which failed", "stage_seconds": 0.0}
        else:
            inputs = stage.takes(done)
            say(f"{stage_name}: started ({stage.produces})")
            record = compute(stage.compute, _fixed(stage, threads), setup, inputs)
        trial.set_user_attr(RECORD_ATTR, json.loads(json.dumps(record)))
        trial.set_user_attr("worker", worker_id())
        say(f"{stage_name}: done in {record['stage_seconds']:.0f} s")
        return 0.0

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        done = _completed(study)
        if len(done) == len(stages):
            return {s.name: done[s.name] for s in stages}
        _requeue_lost(study, stages)
        if not any(t.state == optuna.trial.TrialState.WAITING for t in _trials(study)):
            time.sleep(POLL_SECONDS)        # every stage left is running elsewhere
            continue
        study.optimize(objective, n_trials=1, catch=())
        if _only_blocked(study, by_name):
            time.sleep(POLL_SECONDS)        # do not cycle a queue of stages that must wait


def _only_blocked(study, by_name: dict[str, Stage]) -> bool:
    """True when every waiting stage waits for a running one (then this worker pauses a poll
    interval instead of cycling the queue)."""
    done = _completed(study)
    waiting = [t.user_attrs.get(STAGE_ATTR) for t in _trials(study)
               if t.state == optuna.trial.TrialState.WAITING]
    return all(n in by_name and not all(m in done for m in by_name[n].needs) for n in waiting)

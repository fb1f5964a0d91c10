"""``dnnlab explain TOPIC|all``: the command-line face of :func:`run_topics` (parse, then call).

Topics run one at a time, each under a live line that says which topic of how many is running,
for how long, and how long it took the last time it ran into the same folder (from its
``results.json``), so a long ``explain all`` never sits silent. On a terminal that line is a tqdm
bar refreshed every half second; in a log (not a TTY) it is a plain line every 15 seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from dnnlab import io, rundir
from dnnlab.cli_common import with_threads
from dnnlab.config import DataConfig, load_config
from dnnlab.errors import DnnlabError
from dnnlab.studies.explain import DEFAULT_OUT, FIXED_PART, RESULTS, TOPICS, resolve, run_topics

LOG_EVERY_S = 15.0      # a "still running" line this often when stderr is not a terminal
TTY_REFRESH_S = 0.5


def previous_seconds(out_dir: Path, topic: str, quick: bool) -> float | None:
    """How long ``topic`` took when it last ran into ``out_dir`` with the same ``quick``, if known."""
    path = Path(out_dir) / RESULTS
    if not path.is_file():
        return None
    try:
        entry = io.read_json(path).get(topic) or {}
    except (DnnlabError, AttributeError):
        return None
    seconds = entry.get("seconds")
    if "error" in entry or entry.get("quick") != quick or not isinstance(seconds, (int, float)):
        return None
    return float(seconds) if seconds > 0 else None


class TopicProgress:
    """Shows one topic's elapsed time while it runs (the topics report no steps of their own)."""

    def __init__(self, label: str, expected: float | None, stream: TextIO | None = None,
                 every: float | None = None):
        self.label, self.expected = label, expected
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every is not None else (TTY_REFRESH_S if self.tty else LOG_EVERY_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: tqdm | None = None

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            elapsed = time.perf_counter() - self.t0
            if self._bar is not None:
                self._bar.n = round(min(elapsed, self.expected or elapsed), 1)
                self._bar.set_postfix_str(f"{elapsed:.0f} s", refresh=True)
            else:
                hint = f" (last run: {self.expected:.0f} s)" if self.expected else ""
                print(f"{self.label}: still running, {elapsed:.0f} s{hint}", file=self.stream,
                      flush=True)

    def __enter__(self) -> TopicProgress:
        self.t0 = time.perf_counter()
        hint = f", last run took {self.expected:.0f} s" if self.expected else ""
        if self.tty:
            self._bar = tqdm(total=round(self.expected, 1) if self.expected else None,
                             desc=self.label, unit="s", file=self.stream, leave=False,
                             bar_format="{desc}: {bar} {postfix}" if self.expected
                             else "{desc}: {postfix}")
        else:
            print(f"{self.label}: running{hint} ...", file=self.stream, flush=True)
        self._thread = threading.Thread(target=self._tick, name="explain-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
        elapsed = time.perf_counter() - self.t0
        state = "failed" if exc[0] is not None else "done"
        print(f"{self.label}: {state} in {elapsed:.1f} s", file=self.stream, flush=True)


def explain_with_progress(topics: list[str], out: Path, *, quick: bool, seed: int,
                          stream: TextIO | None = None, data: DataConfig | None = None) -> int:
    """Run ``topics`` one by one under a :class:`TopicProgress` line; raise if any failed.

    A topic that fails does not stop the others (as in :func:`run_topics`, which records its
    error in results.json and the report); a bug in the only topic asked for shows its traceback.
    """
    failed: dict[str, str] = {}
    for i, topic in enumerate(topics, 1):
        label = f"[{i}/{len(topics)}] {topic}{' (quick)' if quick else ''}"
        try:
            with TopicProgress(label, previous_seconds(out, topic, quick), stream):
                run_topics([topic], out, quick=quick, seed=seed, progress=False, data=data)
        except DnnlabError as e:
            failed[topic] = str(e)
        except Exception as e:  # noqa: BLE001 - one topic must not sink the rest
            if len(topics) == 1:
                raise
            failed[topic] = f"{type(e).__name__}: {e}"
    if len(topics) == 1 and failed:          # its own error (a full disk: the file not written)
        raise DnnlabError(next(iter(failed.values())))
    if failed:                               # results.json named only when written
        where = (f"; the others' results are in {out / RESULTS}"
                 if len(failed) < len(topics) and (out / RESULTS).is_file() else "")
        raise DnnlabError(f"{len(failed)} topic(s) failed ({', '.join(failed)}){where}")
    return 0


def data_from_args(config: str | None, sets: list[str]) -> DataConfig | None:
    """The ``[data]`` table to run the topics on: the config's, with ``--set data.*`` applied;
    None (the built-in MNIST) when neither is given. Only data keys are taken: each topic fixes
    the nets it compares, so a model/optim/train key would be silently unused, and is refused."""
    other = [item for item in sets if not item.split("=", 1)[0].strip().startswith("data.")]
    if other:
        raise DnnlabError(f"explain --set takes data.* keys only (each topic fixes the nets it "
                          f"compares); drop --set {other[0]}")
    if config is None and not sets:
        return None
    return load_config(config, sets).data


def cmd_explain(args) -> int:
    topics = resolve(args.topics)          # an unknown name fails here, before any work
    data = data_from_args(args.config, list(args.set or []))
    if data is not None and args.config is not None:
        print(f"explain: on the [data] of {args.config} ({data.name}) as written "
              f"(standardize = {str(data.standardize).lower()}; a topic that assumes otherwise "
              "says so in its verdicts); the topics fix their own nets, so its other tables are "
              "not used", file=sys.stderr, flush=True)
    return explain_with_progress(topics, Path(args.out), quick=args.quick, seed=args.seed, data=data)


def register(sub, with_config) -> None:
    """Add the ``explain`` subcommand (``with_config`` is unused: topics build their own nets,
    and only a config's [data] table applies)."""
    fixed = "; ".join(f"{t}: {why}" for t, why in FIXED_PART.items())
    sp = sub.add_parser(
        "explain", help="settle one of the chapter's questions by experiment",
        description="Run the experiment that answers a question of the chapter, print the verdict "
                    "with its numbers, and write a plot, results.json and report.html. "
                    f"Topics: {', '.join(TOPICS)}, or all. By default on the MNIST that ships with "
                    "dnnlab; with --config or --set data.* every topic runs on that data instead, "
                    f"within its own budget of examples. What stays fixed there: {fixed}.")
    sp.add_argument("topics", nargs="+", metavar="TOPIC",
                    help=f"one or more of: {', '.join(TOPICS)}; or all")
    sp.add_argument("--out", default=str(DEFAULT_OUT), type=rundir.out_arg,
                    help=f"output folder (default {DEFAULT_OUT})")
    sp.add_argument("--quick", action="store_true",
                    help="tiny settings (seconds per topic) that still show the verdict's direction")
    sp.add_argument("--seed", type=int, default=0, help="random seed of the experiments (default 0)")
    sp.add_argument("--config", metavar="CONFIG.toml",
                    help="run on this config's [data] table (default: the built-in MNIST)")
    sp.add_argument("--set", action="append", metavar="data.KEY=VALUE",
                    help="override a data key, e.g. --set data.name=fashion-mnist (repeatable)")
    with_threads(sp)
    sp.set_defaults(func=cmd_explain)

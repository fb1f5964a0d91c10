"""The chapter's questions, settled by experiment: the topic registry and the one runner.

Each topic is a module of this package (``bias-init`` -> ``bias_init.py``) declaring a
:class:`~dnnlab.studies.explain.base.Topic` named ``TOPIC`` (the contract is in
:mod:`dnnlab.studies.explain.base`). Modules are imported only when their topic runs, so one
topic's heavy imports or a missing module never slow down or break another.

:func:`run_topic` is the common part of every topic: measure (single-threaded), judge, draw.
:func:`run_topics` runs topics in the issue's order, prints each verdict as it lands, and writes
``results.json`` and ``report.html`` into the output folder. Running a few topics into a folder
that already holds results adds to them: the report always shows every topic answered there.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dnnlab import io
from dnnlab.analysis.verdict import MIN_SEEDS, NOT_SETTLED, ROW_COLUMNS, Verdict
from dnnlab.config import DataConfig
from dnnlab.errors import DnnlabError
from dnnlab.report import Page, save_figure
from dnnlab.studies.explain.base import Answer, DataSource, Finding, Topic
from dnnlab.train import threads as thread_policy

TOPICS: tuple[str, ...] = ("symmetry", "bias-init", "init-variance", "selu", "activations",
                           "momentum", "sparsity", "dropout-cost", "mc-dropout")
# What stays fixed when a topic runs on a user's data (--config / --set data.*): every topic
# trains and measures on that data, but these parts are the experiment itself.
FIXED_PART: dict[str, str] = {
    "momentum": "its quadratic half is always f = (x^2 + 100 y^2) / 2, whose trajectory is the "
                "experiment; only its net half trains on your data",
    "mc-dropout": "its out-of-distribution inputs are your test rows with their features shuffled "
                  "(Fashion-MNIST is the out-of-distribution set for MNIST only)",
    "symmetry": "its training set is cut to a multiple of 64 rows, so that float rounding cannot "
                "tell identical neurons apart",
}
DEFAULT_OUT = Path("runs/explain")
CPU_THREADS = 1   # see single_threaded()
RESULTS = "results.json"
REPORT = "report.html"


def module_name(topic: str) -> str:
    """The module that answers ``topic`` (CLI names use dashes, modules underscores)."""
    return topic.replace("-", "_")


def resolve(names: list[str] | tuple[str, ...] | str) -> list[str]:
    """Topic names in the issue's order, ``all`` expanded, duplicates dropped; unknown names fail."""
    if isinstance(names, str):
        names = [names]
    wanted: set[str] = set()
    for raw in names:
        name = raw.strip().lower().replace("_", "-")
        if name == "all":
            wanted.update(TOPICS)
        elif name in TOPICS:
            wanted.add(name)
        else:
            raise DnnlabError(f"unknown topic {raw!r}; choose one of: {', '.join(TOPICS)}, all")
    if not wanted:
        raise DnnlabError(f"no topic given; choose one of: {', '.join(TOPICS)}, all")
    return [t for t in TOPICS if t in wanted]


def load_topic(topic: str) -> Topic:
    """The topic's declared :class:`Topic`; a missing module is a one-line error, not a traceback."""
    mod = f"{__name__}.{module_name(topic)}"
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name == mod:
            raise DnnlabError(f"topic {topic!r} is not available: its module {mod} is missing from "
                              "this installation; reinstall dnnlab or pick another topic") from None
        raise
    declared = getattr(module, "TOPIC", None)
    if not isinstance(declared, Topic):
        raise DnnlabError(f"topic {topic!r}: module {mod} declares no TOPIC = Topic(...)")
    return declared


def question(topic: str) -> str:
    return load_topic(topic).question


@contextmanager
def single_threaded(threads: int = CPU_THREADS) -> Iterator[None]:
    """At most ``threads`` torch CPU threads while a topic runs (the thread policy's cap; a fixed
    ``--threads N`` wins), then the policy as before.

    The topics' nets are at most a few hundred units wide: splitting such small matrix products
    across threads costs more in synchronization than it gains, and when anything else runs on
    the machine the threads spin-wait for each other: beside one busy process, two threads made a
    quick topic an order of magnitude slower than one (figures: benchmarks/README.md).
    """
    with thread_policy.cap(threads):
        yield


def run_topic(topic: str, out_dir: Path, *, quick: bool = False, seed: int = 0,
              data: DataConfig | None = None) -> Finding:
    """One topic, start to end: measure at each of its seeds (``seed``, ``seed + 1``, ...;
    single-threaded on the CPU, timed) on MNIST or on ``data`` (a config's ``[data]`` table),
    judge the per-seed numbers, save the first seed's figure as ``out_dir/<topic>.png``. The
    runner's unit of work, the same for every topic."""
    declared = load_topic(topic)
    sizes = declared.quick if quick else declared.full
    n_seeds = int(sizes.get("seeds", MIN_SEEDS))
    if n_seeds < MIN_SEEDS:
        raise DnnlabError(f"topic {topic!r} declares {n_seeds} seed(s); a verdict needs at least "
                          f"{MIN_SEEDS}")
    source = DataSource(data)
    t0 = time.perf_counter()
    measured = []
    with single_threaded():
        for s in range(seed, seed + n_seeds):
            measured.append(declared.measure(source, sizes, s))
    seconds = round(time.perf_counter() - t0, 2)
    runs = [{**m.numbers, "data": source.label} for m in measured]
    answer = declared.verdict(runs)
    # a topic whose needed setting the user's data does not meet (SELU's standardized inputs)
    # measured outside its claims' premise: it reports what it measured, and claims nothing
    unmet = bool(source.notes)
    verdicts = [dataclasses.replace(v, note="; ".join(filter(None, [v.note, *source.notes])),
                                    outcome=NOT_SETTLED if unmet else v.outcome)
                for v in answer.verdicts]
    head = (f"Not settled on this data as written ({'; '.join(source.notes)}); what it measured: "
            f"{answer.head}" if unmet else answer.head)
    answer = Answer(head, tuple(verdicts), answer.detail)
    text = answer.text
    numbers = {**runs[0], "per_seed": runs}
    drawing = {**measured[0].drawing, "per_seed": [m.drawing for m in measured]}
    png = save_figure(declared.figure(numbers, drawing), Path(out_dir) / declared.png)
    loaded = source.loaded[0] if source.loaded else data
    table = dataclasses.asdict(loaded) if loaded is not None else {}
    return Finding(topic=topic, question=declared.question, verdict=text, verdicts=verdicts,
                   numbers=runs[0], per_seed=runs, figure=png, seconds=seconds, data=table,
                   data_label=source.label, outcome=answer.outcome)


def run_topics(names, out_dir: str | Path = DEFAULT_OUT, quick: bool = False, seed: int = 0,
               progress: bool = True, data: DataConfig | None = None) -> dict[str, Finding]:
    """Run ``names`` (topic names or ``"all"``), print each verdict, write results and report.

    ``data`` (a config's ``[data]`` table) runs the topics on that data instead of MNIST.

    A topic that fails does not stop the others: its error is recorded in ``results.json`` and
    the report, and once every topic has run a ``DnnlabError`` names the ones that failed.
    """
    topics = resolve(names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = _read_results(out_dir / RESULTS)
    findings: dict[str, Finding] = {}
    failed: dict[str, str] = {}
    for i, topic in enumerate(topics, 1):
        if progress:
            print(f"[{i}/{len(topics)}] {topic}: running{' (quick)' if quick else ''} ...",
                  file=sys.stderr, flush=True)
        try:
            finding = run_topic(topic, out_dir, quick=quick, seed=seed, data=data)
        except Exception as e:  # noqa: BLE001 - one topic must not sink the rest
            failed[topic] = str(e) if isinstance(e, DnnlabError) else f"{type(e).__name__}: {e}"
            results[topic] = {"error": failed[topic], "quick": quick, "seed": seed,
                              "data": dataclasses.asdict(data) if data else {},
                              "data_label": DataSource(data).label}
            print(f"{topic}: FAILED: {failed[topic]}", flush=True)
            _save(out_dir, results)
            if len(topics) == 1 and not isinstance(e, DnnlabError):
                raise  # a bug in the one topic asked for: show the traceback
            continue
        findings[topic] = finding
        results[topic] = {**finding.to_json(), "quick": quick, "seed": seed}
        print(format_finding(topic, finding), flush=True)
        _save(out_dir, results)
    if (progress or findings) and (out_dir / RESULTS).is_file():   # never a file not written
        print(f"results: {out_dir / RESULTS}\nreport: {out_dir / REPORT}", flush=True)
    if failed:
        where = f"; the others' results are in {out_dir / RESULTS}" if findings else ""
        raise DnnlabError(f"{len(failed)} topic(s) failed ({', '.join(failed)}){where}")
    return findings


def format_finding(topic: str, finding: Finding) -> str:
    """The lines printed when a topic lands: the answer, each verdict, seed answers, numbers."""
    head = finding.verdict.split(". ", 1)[0]
    lines = [f"{topic}: {head} [{finding.outcome}]"]
    lines += [f"  - {v.sentence()}" for v in finding.verdicts]
    lines += [f"  {_citation(verb, c)}" for verb, cited in (("confirms", finding.confirms),
                                                              ("refutes", finding.refutes))
              for c in cited]
    headline = [(k, v) for k, v in finding.numbers.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if headline:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in headline[:10])
        lines.append(f"  numbers (first seed): {shown} "
                     f"(every seed's in results.json)")
    lines.append(f"  figure: {finding.figure}  ({finding.seconds:.1f} s, "
                 f"{len(finding.per_seed)} seeds)")
    return "\n".join(lines)


def flatten(numbers: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested numbers as (dotted key, value) pairs; lists of scalars stay one value."""
    out: list[tuple[str, Any]] = []
    for k, v in numbers.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.extend(flatten(v, key))
        else:
            out.append((key, v))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        items = [_fmt(x) for x in v[:8]]
        return "[" + ", ".join(items) + (f", ... ({len(v)} values)" if len(v) > 8 else "") + "]"
    return str(v)


def _read_results(path: Path) -> dict[str, Any]:
    """Earlier results in the same folder, kept so the report covers every topic answered there."""
    if not path.exists():
        return {}
    try:
        data = io.read_json(path)
    except DnnlabError:
        return {}
    return {k: v for k, v in data.items() if k in TOPICS} if isinstance(data, dict) else {}


def _save(out_dir: Path, results: dict[str, Any]) -> None:
    ordered = {t: results[t] for t in TOPICS if t in results}
    io.write_json(out_dir / RESULTS, ordered)
    build_report(ordered, out_dir).save(out_dir / REPORT)


# The seed answers each verdict is checked against, cited as "NNN answer K" (answer K to question
# K of the chapter's exercises, in source NNN) or "NNN <name> card". The report says in words what
# each source is, so "confirms 002 answer 1" means something to a reader.
SOURCES: dict[str, tuple[str, str]] = {
    "000": ("the book", "the book's own solutions to the chapter 11 exercises (Géron, Hands-On "
            "Machine Learning, 2nd edition, appendix A)"),
    "001": ("a learner's notes", "a learner's study notes: the learner's own answers, each followed "
            "by the book's answer (cited as \"learner\" or \"book's answer\"), plus flashcards"),
    "002": ("an unattributed notebook", "a notebook listing the exercises with answers of unknown "
            "origin, not from the book; several contradict it"),
    "003": ("a flashcard deck", "a flashcard deck that restates the book's answers"),
    "004": ("first-edition notes", "a reader's notes on the book's first edition (its answers and "
            "page numbers)"),
}


def source_of(citation: str) -> tuple[str, str] | None:
    """The (short name, description) of the source a citation such as "002 answer 1 (...)" names."""
    key = citation.strip()[:3]
    return SOURCES.get(key) if key.isdigit() else None


def cited_sources(results: dict[str, Any]) -> list[str]:
    """The source numbers the results cite, in order."""
    cited = {c.strip()[:3] for r in results.values() if isinstance(r, dict)
             for c in [*r.get("confirms", []), *r.get("refutes", [])]}
    return sorted(cited)


def _citation(verb: str, citation: str) -> str:
    """One line (printed, and a bullet of the report): the verb, the citation, and in words
    which source it is, so "000 answer 2" needs no legend."""
    src = source_of(citation)
    where = f" — source {citation.strip()[:3]}: {src[0]}" if src else " — source not described"
    return f"{verb} {citation}{where}"


def build_report(results: dict[str, Any], out_dir: Path):
    """One page: per topic the question, the verdict, the figure, the numbers, the seed answers.

    Every "confirms"/"refutes" line names its source in words, and a table at the top says what
    each cited source is (see :data:`SOURCES`).
    """
    page = Page("The chapter's questions, settled by experiment",
                "dnnlab explain: each verdict is computed from the numbers measured below.")
    cited = cited_sources(results)
    if cited:
        page.heading("Sources the verdicts are checked against")
        page.paragraph("Each topic lists the published answers its measurement confirms or refutes. "
                       "\"000 answer 1\" means source 000's answer to exercise question 1 of the "
                       "chapter; \"card\" is a flashcard of that source.")
        page.table([{"source": key, "what it is": (SOURCES.get(key) or ("?", "not described"))[1]}
                    for key in cited], ["source", "what it is"])
    for topic in TOPICS:
        r = results.get(topic)
        if r is None:
            continue
        page.heading(topic)
        q = r.get("question") or _question_or_topic(topic)
        page.paragraph(q)
        if "error" in r:
            page.verdict(f"Failed: {r['error']}", ok=False)
            continue
        page.verdict(r["verdict"])
        rows = [Verdict.from_json(v).row() for v in r.get("verdicts", [])]
        if rows:
            page.table(rows, list(ROW_COLUMNS))
        answers = [_citation("confirms", a) for a in r.get("confirms", [])]
        answers += [_citation("refutes", a) for a in r.get("refutes", [])]
        if answers:
            page.bullets(answers)
        fig = r.get("figure")
        if fig:
            path = Path(fig)
            if not path.exists():
                path = out_dir / path.name
            if path.exists():
                page.figure(path, f"{topic}: {path.name}")
        rows = [{"quantity": k, "value": _fmt(v) if isinstance(v, (list, tuple)) else v}
                for k, v in flatten(r.get("numbers", {}))]
        if rows:
            page.table(rows, ["quantity", "value"])
        run = "quick run" if r.get("quick") else "full run"
        seeds = len(r.get("per_seed", [])) or 1
        first = r.get("seed")
        which = f"seed {first}" if seeds == 1 else f"seeds {first}-{(first or 0) + seeds - 1}"
        page.paragraph(f"{run} on {r.get('data_label', 'MNIST')}, {which} (the figure and the "
                       f"numbers: seed {first}), {r.get('seconds', 0):.1f} s")
    return page


def _question_or_topic(topic: str) -> str:
    try:
        return question(topic)
    except Exception:  # noqa: BLE001 - the report must be written even when a topic is broken
        return topic


__all__ = ["TOPICS", "SOURCES", "Finding", "Topic", "build_report", "source_of", "load_topic",
           "module_name", "resolve", "run_topic", "run_topics"]

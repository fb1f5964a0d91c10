"""The contract every explained question follows, and what the runner hands back.

A topic is a module of ``dnnlab.studies.explain`` that declares one :class:`Topic`, named
``TOPIC``: its name, the chapter's question, the sizes of a quick and a full run, and three
functions the runner (:func:`dnnlab.studies.explain.run_topic`) calls in turn:

* ``measure(source, sizes, seed) -> Measurement``: the experiment. It loads its examples through
  ``source`` (MNIST by default, the user's ``[data]`` table with ``--config``), trains and measures;
  it writes nothing and prints nothing.
* ``verdict(runs) -> Answer``: a pure function of the numbers measured at each seed (``runs``,
  one dict per seed, at least :data:`~dnnlab.analysis.verdict.MIN_SEEDS`): the answer's head and
  its :class:`~dnnlab.analysis.verdict.Verdict` s, each judged over the seeds by the lab's one
  rule, so each verdict can be flipped in a test by moving the numbers
  (tests/test_explain_verdicts.py). What a topic confirms or refutes is its verdicts'.
* ``figure(numbers, drawing) -> Figure``: the plot, from the first seed's numbers (with every
  seed's under ``numbers["per_seed"]``) and what only the plot needs.

The common ending (timing, the verdict, the PNG, results.json, the report, the printed lines)
is the runner's alone, so that no topic repeats it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dnnlab.analysis.verdict import Verdict, headline, sources
from dnnlab.config import DataConfig, RunConfig, replace
from dnnlab.data import Dataset, load_from_config

DEFAULT_DATA = "mnist"


@dataclass
class Measurement:
    """What ``measure`` returns: ``numbers`` (JSON-ready: what the verdict reads and results.json
    keeps) and ``drawing`` (arrays, curves or tensors only the figure needs; never saved)."""
    numbers: dict[str, Any]
    drawing: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSource:
    """Where a topic's examples come from: the MNIST that ships with dnnlab (``data`` None), or
    the ``[data]`` table of a user's config.

    The user's table is used as written: its path, label, classes, ``standardize`` and
    ``valid_size`` are kept, and only ``limit`` is lowered to the topic's budget ``n_train``
    when the user's is larger (or unset). A topic that needs another setting than the user's
    (SELU's fixed point assumes standardized inputs) still trains on the user's, and the
    mismatch is recorded in ``notes``, which the runner adds to the topic's verdicts; it also
    makes them "not settled", since the measurement was made outside the claims' premise. Every
    table a topic loaded is kept in ``loaded`` (results.json records it under ``data``).
    On the built-in MNIST the topic's own settings apply (the table says which).
    """
    data: DataConfig | None = None
    loaded: list[DataConfig] = field(default_factory=list, compare=False)
    notes: list[str] = field(default_factory=list, compare=False)

    @property
    def name(self) -> str:
        return DEFAULT_DATA if self.data is None else self.data.name

    @property
    def label(self) -> str:
        """What the figures and the report call the data (``MNIST`` or the user's file or name)."""
        if self.data is None:
            return "MNIST"
        path = getattr(self.data, "path", None)
        return Path(path).name if path else self.data.name

    def table(self, n_train: int, valid: int, seed: int, *, standardize: bool = False) -> DataConfig:
        """The ``[data]`` table a topic with this budget trains on (see the class docstring)."""
        if self.data is None:
            return DataConfig(name=DEFAULT_DATA, limit=n_train, valid_size=valid,
                              standardize=standardize, seed=seed)
        cap = n_train if self.data.limit is None else min(self.data.limit, n_train)
        return dataclasses.replace(self.data, limit=cap, seed=seed)

    def load(self, n_train: int, valid: int, seed: int, *, standardize: bool = False) -> Dataset:
        """The topic's examples; ``standardize`` is what the topic asks for, which the user's
        own table overrides (a note says so where the topic needs standardized inputs)."""
        table = self.table(n_train, valid, seed, standardize=standardize)
        if standardize and not table.standardize:     # only a need is worth a note: raw
            note = ("trained on your data.standardize = false; this experiment assumes "
                    "standardized inputs (set it to true to see it as meant)")
            if note not in self.notes:
                self.notes.append(note)
        self.loaded.append(table)
        return load_from_config(table, progress=False)


@dataclass(frozen=True)
class Answer:
    """What a topic's ``verdict`` returns: ``head``, the answer in one clause that names its
    outcome ("No", "Not settled", ...), ``verdicts``, the claims it judged, and ``detail``, the
    numbers a reader wants beside them (optional)."""
    head: str
    verdicts: tuple[Verdict, ...]
    detail: str = ""

    @property
    def text(self) -> str:
        body = "; ".join(v.sentence() for v in self.verdicts)
        return f"{self.head}. {body}." + (f" {self.detail}" if self.detail else "")

    @property
    def outcome(self) -> str:
        return headline(self.verdicts)


@dataclass(frozen=True)
class Topic:
    """One of the chapter's questions, as an experiment (see the module docstring).

    ``quick`` and ``full`` are the sizes ``measure`` receives (images, epochs, repeats, ...) and
    ``seeds``, how many seeds the runner measures (at least
    :data:`~dnnlab.analysis.verdict.MIN_SEEDS`, quick included): quick is a test-sized run
    (seconds a seed) that still shows the verdict's direction. What a topic
    cannot take from a user's data is said in ``dnnlab.studies.explain.FIXED_PART`` (the command's
    help reads it without importing the topics).
    """
    name: str
    question: str
    quick: dict[str, Any]
    full: dict[str, Any]
    measure: Callable[[DataSource, dict[str, Any], int], Measurement]
    verdict: Callable[[list[dict[str, Any]]], Answer]
    figure: Callable[[dict[str, Any], dict[str, Any]], Figure]

    @property
    def png(self) -> str:
        return self.name.replace("-", "_") + ".png"


@dataclass
class Finding:
    """A topic's answer, as the runner assembles it (and results.json keeps it)."""
    topic: str
    question: str                      # the chapter's question, as asked
    verdict: str                       # the answer's text: its head and each verdict's sentence
    verdicts: list[Verdict] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)   # the first seed's (the figure's)
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    figure: Path | None = None         # the saved plot (PNG)
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)      # the [data] table it trained on
    data_label: str = "MNIST"
    outcome: str = ""

    @property
    def confirms(self) -> list[str]:
        """Seed answers it confirms, e.g. "000 answer 1 (book)": its verdicts' (outcome alone)."""
        return sources(self.verdicts)[0]

    @property
    def refutes(self) -> list[str]:
        return sources(self.verdicts)[1]

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "verdict": self.verdict, "outcome": self.outcome,
                "verdicts": [v.to_json() for v in self.verdicts], "confirms": self.confirms,
                "refutes": self.refutes, "numbers": self.numbers, "per_seed": self.per_seed,
                "figure": str(self.figure) if self.figure else None, "seconds": self.seconds,
                "data": self.data, "data_label": self.data_label}


def topic_config(name: str, seed: int, epochs: int, **settings: Any) -> RunConfig:
    """A run config for a topic: He/ELU MLP 100 wide, Nadam at 1e-3, batch 64, no early
    stopping, no progress bar; ``settings`` are dotted keys that override any of it, e.g.
    ``topic_config("x", 0, 5, **{"model.depth": 3})``. One ``replace`` call, because a replace of
    a replace loses the ``None`` values (``train.patience``)."""
    return replace(RunConfig(), **{
        "name": name, "model.activation": "elu", "model.init": "he_normal", "model.width": 100,
        "optim.name": "nadam", "optim.lr": 1e-3, "train.epochs": epochs, "train.batch_size": 64,
        "train.patience": None, "train.seed": seed, "train.progress": False, "data.seed": seed,
        **settings})

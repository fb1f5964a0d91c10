"""The contract every explained question follows, and what the runner hands back.

A topic is a module of ``dnnlab.studies.explain`` that declares one :class:`Topic`, named
``TOPIC``: its name, the chapter's question, the sizes of a quick and a full run, and three
functions the runner (:func:`dnnlab.studies.explain.run_topic`) calls in turn:

* ``measure(source, sizes, seed) -> Measurement``: the experiment. It loads its examples through
  ``source`` (MNIST by default, the user's ``[data]`` table with ``--config``), trains and measures;
  it writes nothing and prints nothing.
* ``verdict(numbers) -> (verdict, confirms, refutes)``: a pure function of the measured numbers,
  so each verdict can be flipped in a test by moving the numbers (tests/test_explain_verdicts.py).
* ``figure(numbers, drawing) -> Figure``: the plot, from the numbers and what only the plot needs.

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

from dnnlab.config import DataConfig, RunConfig, replace
from dnnlab.data import Dataset, load_dataset, load_from_config

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

    The topic keeps its budget either way: ``n_train`` caps the training images (a smaller
    ``data.limit`` of the user's wins), and the topic says whether the inputs are standardized,
    because some questions need it (SELU's fixed point assumes standardized inputs). With the
    user's data the validation split is the config's ``data.valid_size``, since only the user
    knows how many examples their file holds.
    """
    data: DataConfig | None = None

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

    def load(self, n_train: int, valid: int, seed: int, *, standardize: bool = False) -> Dataset:
        if self.data is None:
            return load_dataset(DEFAULT_DATA, limit=n_train, valid_size=valid,
                                standardize=standardize, seed=seed, progress=False)
        cap = n_train if self.data.limit is None else min(self.data.limit, n_train)
        return load_from_config(dataclasses.replace(self.data, limit=cap, standardize=standardize,
                                                    seed=seed), progress=False)


@dataclass(frozen=True)
class Topic:
    """One of the chapter's questions, as an experiment (see the module docstring).

    ``quick`` and ``full`` are the sizes ``measure`` receives (images, epochs, repeats, ...):
    quick is a test-sized run (seconds) that still shows the verdict's direction. What a topic
    cannot take from a user's data is said in ``dnnlab.studies.explain.FIXED_PART`` (the command's
    help reads it without importing the topics).
    """
    name: str
    question: str
    quick: dict[str, Any]
    full: dict[str, Any]
    measure: Callable[[DataSource, dict[str, Any], int], Measurement]
    verdict: Callable[[dict[str, Any]], tuple[str, list[str], list[str]]]
    figure: Callable[[dict[str, Any], dict[str, Any]], Figure]

    @property
    def png(self) -> str:
        return self.name.replace("-", "_") + ".png"


@dataclass
class Finding:
    """A topic's answer, as the runner assembles it (and results.json keeps it)."""
    topic: str
    question: str                      # the chapter's question, as asked
    verdict: str                       # one sentence, with the numbers that back it
    confirms: list[str] = field(default_factory=list)   # seed answers it confirms, e.g. "000 answer 1 (book)"
    refutes: list[str] = field(default_factory=list)    # e.g. "002 answer 1: equal weights are fine"
    numbers: dict[str, Any] = field(default_factory=dict)
    figure: Path | None = None         # the saved plot (PNG)
    seconds: float = 0.0
    data: str = DEFAULT_DATA           # which data it ran on

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "verdict": self.verdict, "confirms": self.confirms,
                "refutes": self.refutes, "numbers": self.numbers,
                "figure": str(self.figure) if self.figure else None, "seconds": self.seconds,
                "data": self.data}


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

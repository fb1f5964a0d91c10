"""What every explained question returns, and the seed answers it is checked against.

Each topic is a module of its own under ``dnnlab.studies.explain`` exposing
``run(out_dir: Path, *, quick: bool = False, seed: int = 0, progress: bool = True) -> Finding``.
``quick`` shrinks it to a test-sized run (seconds) that still checks the verdict's direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnnlab.config import RunConfig, replace
from dnnlab.data import load_dataset


@dataclass
class Finding:
    topic: str
    question: str                      # the chapter's question, as asked
    verdict: str                       # one sentence, with the numbers that back it
    confirms: list[str] = field(default_factory=list)   # seed answers it confirms, e.g. "000 answer 1 (book)"
    refutes: list[str] = field(default_factory=list)    # e.g. "002 answer 1: equal weights are fine"
    numbers: dict[str, Any] = field(default_factory=dict)
    figure: Path | None = None         # the saved plot (PNG)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "verdict": self.verdict, "confirms": self.confirms,
                "refutes": self.refutes, "numbers": self.numbers,
                "figure": str(self.figure) if self.figure else None, "seconds": self.seconds}


def small_mnist(n_train: int, valid: int, seed: int, **kw: Any):
    """The MNIST that ships with dnnlab, cut to a topic's budget (first ``n_train`` images)."""
    return load_dataset("mnist", limit=n_train, valid_size=valid, seed=seed, progress=False, **kw)


def topic_config(name: str, seed: int, epochs: int, **settings: Any):
    """A run config for a topic: He/ELU MLP, batch 64, no early stopping, no progress bar.

    ``settings`` are dotted keys, e.g. ``topic_config("x", 0, 5, **{"model.depth": 3})``.
    """
    return replace(RunConfig(), **{
        "name": name, "model.activation": "elu", "model.init": "he_normal", "model.width": 100,
        "train.epochs": epochs, "train.batch_size": 64, "train.patience": None,
        "train.seed": seed, "train.progress": False, "data.seed": seed, **settings})

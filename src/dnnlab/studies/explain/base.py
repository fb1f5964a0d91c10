"""What every explained question returns, and the seed answers it is checked against.

Each topic is a module of its own under ``dnnlab.studies.explain`` exposing
``run(out_dir: Path, *, quick: bool = False, seed: int = 0, progress: bool = True) -> Finding``.
``quick`` shrinks it to a test-sized run (seconds) that still checks the verdict's direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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

"""What training produces: :class:`FitResult` per model, and :class:`Variant`, which model of
the K it is. Below the driver and the callbacks, so that both can name them (a callback's
``on_train_end`` gets the results) without the callbacks importing the driver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dnnlab.config import RunConfig


@dataclass
class Variant:
    """One model of the K: its seed (init, batch order) and its per-model config overrides."""
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """What training one model produced. ``model`` holds the restored-best weights (if asked)."""
    model: nn.Module
    history: dict[str, list[float]]
    best_epoch: int
    best: float
    monitor: str
    status: str                       # completed | stopped_early | diverged
    message: str = ""
    test: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None
    variant: Variant | None = None    # train_many: which variant this is
    config: RunConfig | None = None   # the model's own full config
    warnings: list[str] = field(default_factory=list)   # what makes its numbers weak (data.caveats)

    @property
    def epochs_run(self) -> int:
        return len(self.history["epoch"])

    @property
    def seconds_per_epoch(self) -> float:
        s = self.history["seconds"]
        return float(sorted(s)[len(s) // 2]) if s else float("nan")

    def summary(self) -> dict[str, Any]:
        h = self.history
        i = h["epoch"].index(self.best_epoch) if self.best_epoch in h["epoch"] else None
        out = {"status": self.status, "message": self.message, "monitor": self.monitor,
               "best_epoch": self.best_epoch, "best": self.best, "epochs_run": self.epochs_run,
               "best_val_loss": h["val_loss"][i] if i is not None else None,
               "best_val_accuracy": h["val_accuracy"][i] if i is not None else None,
               "seconds_per_epoch": self.seconds_per_epoch, "total_seconds": sum(h["seconds"]),
               "test_loss": None, "test_accuracy": None}
        out.update(self.test)
        # JSON has no NaN: a value not measured is null, and ``warnings`` says why
        out = {k: None if isinstance(v, float) and not math.isfinite(v) else v
               for k, v in out.items()}
        out["warnings"] = list(self.warnings)
        return out

"""What a run writes and shows while it trains: metrics.csv, checkpoints, summary, progress."""

from __future__ import annotations

import csv
import io as _io
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dnnlab import config as config_mod
from dnnlab import io
from dnnlab.train import checkpoint as ckpt
from dnnlab.train import state as run_state


class CsvLogger:
    """Rewrites metrics.csv atomically after each epoch (a kill never leaves a torn file)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, history: dict[str, list[float]]) -> None:
        buf = _io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = list(history)
        w.writerow(cols)
        for row in zip(*(history[c] for c in cols)):
            w.writerow([_fmt(v) for v in row])
        io.write_text(self.path, buf.getvalue())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


class Progress:
    """One tqdm bar over all steps of the run: the epoch, and the last epoch's metrics (one
    model) or how many models still train and the best so far (K models)."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool = True, models: int = 1,
                 total: int | None = None):
        self.epochs, self.spe, self.enabled, self.models = epochs, steps_per_epoch, enabled, models
        self.total = epochs * steps_per_epoch if total is None else total
        self.bar = None

    def open(self, start_epoch: int) -> None:
        if not self.enabled:
            return
        self.bar = tqdm(total=self.total, initial=(start_epoch - 1) * self.spe,
                        unit="step", dynamic_ncols=True, file=sys.stderr, leave=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}"
                                   "{postfix}]")
        self.bar.set_description(self._desc(start_epoch, self.models))

    def _desc(self, epoch: int, live: int) -> str:
        where = f"epoch {min(epoch, self.epochs)}/{self.epochs}"
        return where if self.models == 1 else f"{live} of {self.models} models training, {where}"

    def step(self, n: int) -> None:
        if self.bar is not None and n > 0:
            self.bar.update(n)

    def epoch_end(self, epoch: int, metrics: dict[int, dict[str, float]], live: int, total: int,
                  best: str) -> None:
        if self.bar is None:
            return
        self.bar.set_description(self._desc(epoch + 1, live))
        if self.models == 1 and metrics:
            m = next(iter(metrics.values()))
            post = f"loss {m['loss']:.4f} acc {m['accuracy']:.4f}"
            if not math.isnan(m.get("val_loss", math.nan)):
                post += f" val_loss {m['val_loss']:.4f} val_acc {m['val_accuracy']:.4f}"
            self.bar.set_postfix_str(post)
        elif best:
            self.bar.set_postfix_str(best)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunWriter:
    """Owns a run directory: resolved config, resume state, periodic/best/final checkpoints."""

    def __init__(self, run_dir: Path, cfg: config_mod.RunConfig):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.started = time.time()
        self.metrics = CsvLogger(self.run_dir / "metrics.csv")

    def start(self, trainer, resume: bool) -> None:
        """Create the directory (or resume from its last checkpoint into ``trainer``)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.rglob(".*.tmp"):   # left by a write that was killed midway
            stale.unlink(missing_ok=True)
        resumed = resume and run_state.restore(self.run_dir, trainer)
        io.write_text(self.run_dir / "config.toml", config_mod.to_toml(self.cfg))
        self._summary({"status": "running", "resumed": bool(resumed)})

    def epoch_end(self, epoch: int, trainer) -> None:
        """After the epoch's divergence check: metrics.csv, the resume state, checkpoints."""
        self.metrics.write(trainer.history[0])
        run_state.save(self.run_dir, epoch, trainer)
        every = self.cfg.train.checkpoint_every
        meta = {"epoch": epoch}
        if every and epoch % every == 0:
            ckpt.save_model(trainer.backend.model_at(0), self.run_dir / "checkpoints" /
                            f"epoch_{epoch:04d}.safetensors", meta)
        if trainer.best_epoch[0] == epoch:
            ckpt.save_model(trainer.backend.model_at(0, trainer.best_snap),
                            self.run_dir / "checkpoints" / "best.safetensors", meta)

    def finish(self, result) -> None:
        self.metrics.write(result.history)
        summary = result.summary()
        summary["name"] = self.cfg.name
        if result.status == "diverged":
            summary["status"] = "failed"
        ckpt.save_model(result.model, self.run_dir / "model.safetensors",
                        {"best_epoch": result.best_epoch, "status": summary["status"]})
        self._summary(summary)

    def _summary(self, data: dict[str, Any]) -> None:
        io.write_json(self.run_dir / "summary.json", {"name": self.cfg.name, **data})

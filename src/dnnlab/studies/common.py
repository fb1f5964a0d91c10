"""What every study shares: seeds, timing, mean +- std over seeds, the book-vs-ours table,
``results.json``.

A study repeats each experiment over several seeds and reports ``mean +- std`` (the sample
standard deviation, ddof=1: with 3 seeds the spread of the population is what is estimated), puts
the book's single-run figure beside it, and writes every number it shows into ``results.json``
so a later run, a test or another study can read them back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnnlab import io
from dnnlab.analysis.stats import mean_std, pm  # the lab's one mean ± std (studies import it from here)
from dnnlab.errors import DataError, DnnlabError


def seed_list(n: int, base: int = 0) -> list[int]:
    """``n`` seeds ``base, base+1, ...``: each one fixes a model's init, batches and data draw."""
    if n < 1:
        raise DnnlabError(f"--seeds {n}: a study needs at least 1 seed (3 or more for a spread)")
    return [base + i for i in range(n)]


def summarize(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """``{key}_mean``, ``{key}_std`` and ``{key}_values`` (per seed) for each of ``keys``."""
    out: dict[str, Any] = {"n_seeds": len(runs)}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[f"{key}_mean"], out[f"{key}_std"] = mean_std(values)
        out[f"{key}_values"] = values
    if runs and "seed" in runs[0]:
        out["seeds"] = [r["seed"] for r in runs]
    return out


@dataclass
class Stopwatch:
    """Wall-clock seconds of a block; synchronizes CUDA first, so queued work is counted."""
    device: Any = None
    seconds: float = math.nan

    def _sync(self) -> None:
        if self.device is not None and str(self.device).startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._t0


def train_seconds(history: dict[str, list[float]]) -> float:
    """Training time of a run: the sum of its epochs' seconds (steps + validation, no disk I/O)."""
    return float(sum(history.get("seconds", [])))


def book_rows(results: dict[str, dict[str, Any]], book: dict[str, float],
              labels: dict[str, str]) -> list[dict[str, Any]]:
    """One row per experiment: the book's figure (percent), ours as mean ± std, the difference.

    ``book`` maps a result key to the book's test accuracy in percent; ``labels`` to its name.
    """
    rows = []
    for key, label in labels.items():
        r = results.get(key, {})
        mean, std = r.get("test_accuracy_mean"), r.get("test_accuracy_std")
        ref = book.get(key)
        rows.append({
            "experiment": label,
            "book (%)": ref,
            "ours (%, mean ± std)": pm(mean, std),
            "ours − book (pts)": (mean * 100 - ref) if ref is not None and mean is not None else None,
            "seeds": r.get("n_seeds"),
            "train s (mean)": r.get("train_seconds"),
        })
    return rows


def book_verdict(results: dict[str, dict[str, Any]], book: dict[str, float],
                 labels: dict[str, str] | None = None) -> tuple[str, bool]:
    """How many of the book's figures our means beat, as a sentence, and whether all were."""
    compared = [(k, results[k]["test_accuracy_mean"] * 100 > v) for k, v in book.items()
                if k in results and results[k].get("test_accuracy_mean") is not None]
    wins = [k for k, ok in compared if ok]
    losses = [(labels or {}).get(k, k) for k, ok in compared if not ok]
    text = f"Our mean beats the book's figure in {len(wins)} of {len(compared)} experiments"
    text += f"; below it: {'; '.join(losses)}." if losses else "."
    return text, not losses


def write_results(out_dir: str | Path, results: dict[str, Any]) -> Path:
    """``results.json`` in ``out_dir`` (atomic)."""
    return io.write_json(Path(out_dir) / "results.json", results)


def draw_per_class(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` indices per label of ``y`` drawn without replacement with ``seed``, in order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < k:
            raise DataError(f"{k} images per class were asked for, but class {c} has only "
                            f"{len(members)}; ask for fewer")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))

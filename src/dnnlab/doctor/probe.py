"""A short training run with layer recording on: what ``dnnlab doctor CONFIG.toml`` diagnoses."""

from __future__ import annotations

from pathlib import Path

from dnnlab.config import RunConfig, replace
from dnnlab.data import Dataset, load_from_config
from dnnlab.doctor.record import callbacks_for
from dnnlab.train import FitResult, fit


def probe_run(cfg: RunConfig, run_dir: str | Path, *, data: Dataset | None = None,
              record_every: int = 1, tensorboard: bool = False) -> FitResult:
    """Train ``cfg`` into ``run_dir`` with layer records from initialization on.

    The recorder (``train.record_every``) records the net before the first step, so a net that
    diverges in its first epoch still leaves its epoch-0 record, which is where a bad
    initialization shows.
    """
    if data is None:
        data = load_from_config(cfg.data, progress=cfg.train.progress)
    cfg = replace(cfg, **{"train.record_every": record_every, "train.tensorboard": tensorboard})
    return fit(cfg, data, run_dir, callbacks=callbacks_for(cfg, data.train.tensors(), run_dir))

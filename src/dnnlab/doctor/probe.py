"""A short training run with layer recording on: what ``dnnlab doctor CONFIG.toml`` diagnoses."""

from __future__ import annotations

from pathlib import Path

from dnnlab.config import RunConfig
from dnnlab.data import load_from_config
from dnnlab.doctor.record import callbacks_for
from dnnlab.nn.mlp import build_mlp
from dnnlab.train import fit


def probe_run(cfg: RunConfig, run_dir: str | Path, *, data=None, record_every: int = 1,
              tensorboard: bool = False):
    """Train ``cfg`` into ``run_dir`` with layer records from initialization on.

    The model is built here (the same weights ``fit`` would build: same config, same seed) so that
    the recorder sees it before the first step: a net that diverges in its first epoch still
    leaves its epoch-0 record, which is where a bad initialization shows.
    """
    if data is None:
        data = load_from_config(cfg.data, progress=cfg.train.progress)
    model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=cfg.train.seed)
    callbacks = callbacks_for(cfg, data, run_dir, record_every=record_every,
                              tensorboard=tensorboard)
    for cb in callbacks:
        cb.on_train_begin(model)
    try:
        return fit(cfg, data, run_dir, model=model, callbacks=callbacks)
    finally:
        for cb in callbacks:
            close = getattr(cb, "close", None)
            if close is not None:
                close()

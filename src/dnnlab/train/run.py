"""A run from a config: load the data, train, write the run directory, print where it is."""

from __future__ import annotations

import time
from pathlib import Path

from dnnlab.config import RunConfig
from dnnlab.errors import DnnlabError


def default_run_dir(cfg: RunConfig, root: str | Path = "runs") -> Path:
    return Path(root) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_run(cfg: RunConfig, out: str | Path | None = None, *, resume: str | Path | None = None):
    """Train the model ``cfg`` describes; returns the :class:`FitResult`.

    ``resume`` is an existing run directory: its saved config is used (``cfg`` overrides only
    where given explicitly by the caller) and training continues from its last checkpoint.
    """
    from dnnlab.config import load_config
    from dnnlab.data import load_from_config
    from dnnlab.train.driver import fit

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.toml").is_file():
            raise DnnlabError(f"--resume {run_dir}: not a run directory (no config.toml); pass the "
                              "folder a previous 'dnnlab train' printed")
        cfg = load_config(run_dir / "config.toml")
    else:
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        if (run_dir / "checkpoints" / "last.safetensors").exists():
            raise DnnlabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                              "or choose another --out")
    data = load_from_config(cfg.data)
    return fit(cfg, data, run_dir, resume=resume is not None)

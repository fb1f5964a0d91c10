"""Runs from a config: the API's ``fit`` and ``train_many`` (the engine plus the doctor's records),
``train_run`` (a run directory with its lock, start record and checked resume) and sweeps.

Layers: ``dnnlab.train`` is the engine (the loop, backends, callbacks); ``dnnlab.doctor`` records
and judges; this package composes them into what a user runs and what the command line calls.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dnnlab.runs.recorded import fit, train_many
    from dnnlab.runs.single import default_run_dir, resume_config, train_run
    from dnnlab.runs.sweep import format_table, sweep

# name -> its module, loaded on first use (PEP 562): a training run never loads the sweep's
# storage (optuna, sqlalchemy) or its report (matplotlib) (dnnlab.cli: quick start)
_LAZY = {**dict.fromkeys(("fit", "train_many"), "dnnlab.runs.recorded"),
         **dict.fromkeys(("default_run_dir", "resume_config", "train_run"), "dnnlab.runs.single"),
         **dict.fromkeys(("format_table", "sweep"), "dnnlab.runs.sweep")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dnnlab.runs' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = ["fit", "train_many", "train_run", "resume_config", "default_run_dir", "sweep",
           "format_table"]

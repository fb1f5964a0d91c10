"""Runs from a config: the API's ``fit`` and ``train_many`` (the engine plus the doctor's records),
``train_run`` (a run directory with its lock, start record and checked resume) and sweeps.

Layers: ``dnnlab.train`` is the engine (the loop, backends, callbacks); ``dnnlab.doctor`` records
and judges; this package composes them into what a user runs and what the command line calls.
"""

from dnnlab.runs.recorded import fit, train_many
from dnnlab.runs.single import default_run_dir, resume_config, train_run
from dnnlab.runs.sweep import format_table, sweep

__all__ = ["fit", "train_many", "train_run", "resume_config", "default_run_dir", "sweep",
           "format_table"]

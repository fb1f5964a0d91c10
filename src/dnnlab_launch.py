"""The ``dnnlab`` command's entry point: quiet OpenMP before anything imports torch.

torch's CPU wheel runs its parallel regions on GNU OpenMP (libgomp), whose idle workers spin at
every barrier for a while before they sleep. On a machine where another process holds a core, a
spinning worker takes CPU time from the very thread it waits for. libgomp reads its settings from
the environment once, when torch loads it, so they must be in ``os.environ`` before the first
``import torch``; ``import dnnlab`` imports torch, which is why this module stands outside the
package (the console script ``dnnlab`` is :func:`main` here) and imports nothing heavy itself.

:data:`OPENMP_ENV` is what is set: ``GOMP_SPINCOUNT=10000``, a worker spins for some tens of
microseconds at a barrier, then sleeps (libgomp's default spins for 300,000 rounds; a value the
user set already is kept). Why not none at all (``OMP_WAIT_POLICY=PASSIVE``, a spin count of 0):
the parallel regions of one step follow each other microseconds apart, and a worker that sleeps
between them must be woken by the kernel each time, so two threads became slower than one even on
a quiet machine; a short spin keeps the workers awake within a step and lets them sleep between
steps and beside a busy process, where the thread policy (:mod:`dnnlab.train.threads`) gives
torch one thread anyway. The figures (quiet and busy, spin counts 0 to the default) are in
benchmarks/README.md (OpenMP wait policy).

A library user who wants the same does, before importing torch or dnnlab::

    import os; os.environ.setdefault("GOMP_SPINCOUNT", "10000")

Importing :mod:`dnnlab` itself changes no environment.
"""

from __future__ import annotations

import os

OPENMP_ENV = {"GOMP_SPINCOUNT": "10000"}


def quiet_openmp() -> None:
    """Put :data:`OPENMP_ENV` into the environment, keeping any value the user set."""
    for key, value in OPENMP_ENV.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    """``dnnlab``: the OpenMP settings first, then the command line (:func:`dnnlab.cli.main`)."""
    quiet_openmp()
    from dnnlab.cli import main as cli_main  # after quiet_openmp: a command loads torch
    return cli_main(argv)

"""The ``dnnlab`` command's entry point: quiet OpenMP before anything imports torch.

torch's CPU wheel runs its parallel regions on GNU OpenMP (libgomp), whose idle workers spin at
every barrier for a while before they sleep. On a machine where another process holds a core, a
spinning worker takes CPU time from the very thread it waits for. libgomp reads its settings from
the environment once, when torch loads it, so they must be in ``os.environ`` before the first
``import torch``; ``import dnnlab`` imports torch, which is why this module stands outside the
package (the console script ``dnnlab`` is :func:`main` here) and imports nothing heavy itself.

:data:`OPENMP_ENV` is what is set: ``OMP_WAIT_POLICY=PASSIVE`` (libgomp's spin count becomes 0: a
worker with nothing to do sleeps at once). A value the user set already is kept. Measured on the
2-core machine beside one busy process, see benchmarks/README.md (busy machine).

A library user who wants the same does, before importing torch or dnnlab::

    import os; os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

Importing :mod:`dnnlab` itself changes no environment.
"""

from __future__ import annotations

import os

OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def quiet_openmp() -> None:
    """Put :data:`OPENMP_ENV` into the environment, keeping any value the user set."""
    for key, value in OPENMP_ENV.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    """``dnnlab``: the OpenMP settings first, then the command line (:func:`dnnlab.cli.main`)."""
    quiet_openmp()
    from dnnlab.cli import main as cli_main  # after quiet_openmp: this import loads torch
    return cli_main(argv)

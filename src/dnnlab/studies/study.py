"""The study contract: what ``dnnlab study NAME`` and :func:`dnnlab.run_study` need of a study.

A study is a package under ``dnnlab/studies/`` whose ``__init__`` declares ``STUDY``, a
:class:`Study`: its name, its parts (the modules that hold its plan, its engine stages, its
answers and its report) and three entries, one signature each:

``run(*config, out, quick=, seeds=, data_dir=, device=, progress=, **options) -> results``
    the whole study into ``out`` (results.json, report.html); ``config`` (a TOML path or a
    :class:`~dnnlab.config.RunConfig`) comes first for a study that trains the user's network
    (``takes_config``), and no other takes one. ``options`` are the study's own (``resume``,
    ``threads``, ...).
``add_arguments(parser)``
    its own command-line options; ``dnnlab.studies.cli`` adds the ones every study has.
``main(args) -> exit code``
    the command.

``dnnlab.studies.cli.STUDIES`` is the registry (name -> package, imported when used), which the
command line and the Python API both read.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Study:
    """One study (module docstring); each study package's ``STUDY``."""

    name: str
    help: str                     # one line: --help prints it as it stands (docstrings are reST)
    plan: ModuleType              # the protocol: the book's figures, search spaces, work sizes
    stages: ModuleType            # the work, as engine stages (dnnlab.studies.engine)
    answers: ModuleType           # the exercise's questions, answered from the numbers
    report: ModuleType            # results.json, report.html, the terminal summary
    run: Callable[..., dict[str, Any]]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]
    takes_config: bool = False    # run's first argument is the user's config

"""The ``dnnlab study NAME`` command (registered into ``dnnlab.cli`` by ``register``).

``STUDIES`` is the registry of studies: a study's name -> its package, whose ``STUDY`` is a
:class:`~dnnlab.studies.study.Study` (the contract: its parts, ``run``, ``add_arguments``,
``main``); :func:`load` returns it. Every study gets ``--data-dir``, ``--out``, ``--quick``,
``--seeds``, ``--device`` and ``--threads`` (:func:`dnnlab.cli_common.with_threads`, which
``dnnlab.cli`` applies around ``main``). Adding a study is one line here (and the Python API's
``dnnlab.STUDIES`` and :func:`dnnlab.run_study` follow). Packages are imported by name when
the parser is built.
"""

from __future__ import annotations

import importlib
from typing import Any

from dnnlab import rundir
from dnnlab.cli_common import with_threads
from dnnlab.config import KEYS
from dnnlab.errors import DnnlabError
from dnnlab.studies.study import Study

STUDIES: dict[str, str] = {
    "transfer": "dnnlab.studies.transfer",
    "cifar10": "dnnlab.studies.cifar10",
    "ablation": "dnnlab.studies.ablation",
}


def load(name: str) -> Study:
    """The study registered as ``name`` (its package's ``STUDY``)."""
    if name not in STUDIES:
        raise DnnlabError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}")
    study = importlib.import_module(STUDIES[name]).STUDY
    if not isinstance(study, Study) or study.name != name:
        raise TypeError(f"{STUDIES[name]}.STUDY is not the Study {name!r} (dnnlab.studies.study)")
    return study


def register(sub: Any, with_config: Any) -> None:
    """Add ``study`` with one sub-command per entry of ``STUDIES``."""
    sp = sub.add_parser("study", help="run one of the chapter's exercises end to end: "
                        + ", ".join(STUDIES),
                        description="Run a study: every experiment over several seeds, the "
                        "book's figures beside ours, report.html and results.json in --out.")
    names = sp.add_subparsers(dest="study", metavar="STUDY", parser_class=type(sp))
    for name in STUDIES:
        study = load(name)
        p = names.add_parser(name, help=study.help, description=f"dnnlab study {name}: {study.help}.")
        p.add_argument("--data-dir", help=KEYS["data.data_dir"].help)
        p.add_argument("--out", type=rundir.out_arg, help=f"output folder (default runs/{name})")
        p.add_argument("--quick", action="store_true",
                       help="a shortened run of the whole pipeline (CI: a few minutes on 2 cores)")
        p.add_argument("--seeds", type=int, default=3, help="seeds per experiment (default 3)")
        p.add_argument("--device", choices=KEYS["train.device"].choices,
                       help=f"{KEYS['train.device'].help} (default auto)")
        study.add_arguments(p)
        with_threads(p)
        p.set_defaults(func=study.main)
    sp.set_defaults(func=lambda args: (sp.print_help(), 2)[1])

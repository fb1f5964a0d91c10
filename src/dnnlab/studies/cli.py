"""The ``dnnlab study NAME`` command (registered into ``dnnlab.cli`` by ``register``).

``STUDIES`` maps a study's name to its module; a module provides ``HELP`` (one line),
``add_arguments(parser)`` for its own options and ``main(args) -> int``; every study gets
``--threads`` (:func:`dnnlab.cli_common.with_threads`), which ``dnnlab.cli`` applies around ``main``.
Adding a study is one line here (and the Python API's ``dnnlab.STUDIES`` follows). Modules
are imported by name when the parser is built.
"""

from __future__ import annotations

import importlib

from dnnlab import rundir
from dnnlab.cli_common import with_threads
from dnnlab.config import KEYS

STUDIES: dict[str, str] = {
    "transfer": "dnnlab.studies.transfer",
    "cifar10": "dnnlab.studies.cifar10",
    "ablation": "dnnlab.studies.ablation",
}


def register(sub, with_config) -> None:
    """Add ``study`` with one sub-command per entry of ``STUDIES``."""
    sp = sub.add_parser("study", help="run one of the chapter's exercises end to end: "
                        + ", ".join(STUDIES),
                        description="Run a study: every experiment over several seeds, the "
                        "book's figures beside ours, report.html and results.json in --out.")
    names = sp.add_subparsers(dest="study", metavar="STUDY", parser_class=type(sp))
    for name, module_name in STUDIES.items():
        module = importlib.import_module(module_name)
        # HELP, not the docstring: help is printed as it stands, and docstrings are reST
        p = names.add_parser(name, help=module.HELP, description=f"dnnlab study {name}: {module.HELP}.")
        p.add_argument("--data-dir", help=KEYS["data.data_dir"].help)
        p.add_argument("--out", type=rundir.out_arg, help=f"output folder (default runs/{name})")
        p.add_argument("--quick", action="store_true",
                       help="a shortened run of the whole pipeline (CI: a few minutes on 2 cores)")
        p.add_argument("--seeds", type=int, default=3, help="seeds per experiment (default 3)")
        p.add_argument("--device", choices=KEYS["train.device"].choices,
                       help=f"{KEYS['train.device'].help} (default auto)")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
        with_threads(p)
        p.set_defaults(func=module.main)
    sp.set_defaults(func=lambda args: (sp.print_help(), 2)[1])

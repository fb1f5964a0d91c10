"""The command line: thin, it parses and calls the Python API.

Every user mistake ends in one line on stderr and exit code 2; a finished command ends by printing
where its results are.

Quick to start: this module imports neither torch nor any command's code. :data:`COMMANDS` names
each command, the module whose ``register(sub, with_config)`` adds its parser, and its one-line
help; ``dnnlab --version`` and ``dnnlab --help`` are answered from it alone, and a command loads
only its own module (by name, like the studies and the explain topics). The table's help lines
are the modules' own (``tests/test_first_hour.py`` compares them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import platform
import sys

from dnnlab import __version__, rundir
from dnnlab.cli_common import Parser, with_config
from dnnlab.errors import DnnlabError

DISTRIBUTION = "dnnlab-ch11"   # pyproject.toml's [project] name; the index's "dnnlab" is another project

# command -> (the module whose register() adds its parser, the help line of `dnnlab --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dnnlab.commands", "train one model from a config"),
    "datasets": ("dnnlab.commands", "which datasets are available, where, checksums"),
    "export": ("dnnlab.commands", "write a run's model for other runtimes (ONNX)"),
    "predict": ("dnnlab.commands", "predict the classes of a file's rows with a run's model"),
    "report": ("dnnlab.commands_plot", "compare runs: overlaid curves and a results table"),
    "lr-find": ("dnnlab.commands_plot", "learning-rate range test: plot and suggestion"),
    "sweep": ("dnnlab.commands_plot", "train many variants at once (the K-model engine)"),
    "tune": ("dnnlab.tune.cli", "Optuna search with k-fold cross-validation over the config's "
             "[tune] table"),
    "study": ("dnnlab.studies.cli", "run one of the chapter's exercises end to end: transfer, "
              "cifar10, ablation"),
    "explain": ("dnnlab.studies.explain.cli", "settle one of the chapter's questions by experiment"),
    "prune": ("dnnlab.analysis.prune_cli", "zero the smallest weights of a trained run, "
              "fine-tune, report"),
    "doctor": ("dnnlab.doctor.cli", "what is wrong with a run, and the chapter's remedy"),
}
THREADS = "dnnlab.train.threads"   # --threads N, applied around every command (loaded with it)


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def version() -> str:
    """The installed distribution's version, or ``dnnlab.__version__`` for a source tree run
    without installing (``PYTHONPATH=src``), where there is no distribution metadata."""
    return _installed(DISTRIBUTION) or __version__


def version_line() -> str:
    """What ``dnnlab --version`` prints; torch's version from its metadata, not by importing it."""
    return (f"dnnlab {version()} ({DISTRIBUTION}; torch {_installed('torch') or 'not installed'}, "
            f"Python {platform.python_version()})")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``dnnlab`` parser: every command's full parser (``only=None``), or only that
    command's (``only=NAME``; the others get their help line alone, nothing is imported)."""
    p = Parser(prog="dnnlab", description="Train deep MLPs and settle the questions of "
               "'Training Deep Neural Networks' by measurement.")
    p.add_argument("--version", action="version", version=version_line())
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    registered: set[str] = set()
    for name, (module, help_line) in COMMANDS.items():
        if only is None or name == only:
            if module not in registered:
                registered.add(module)
                importlib.import_module(module).register(sub, with_config)
        elif COMMANDS.get(only or "", ("",))[0] != module:
            sub.add_parser(name, help=help_line, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_in if not a.startswith("-")), "")
    parser = build_parser(only=command if command in COMMANDS else "")
    args = parser.parse_args(args_in)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        threads = importlib.import_module(THREADS)
        n = threads.check(getattr(args, "threads", None))   # --threads N: bounded before any work
        with rundir.interrupt_on_signals(), threads.fixed(n):  # SIGTERM, SIGHUP: the Ctrl-C path below
            return int(args.func(args) or 0)
    except DnnlabError as e:
        print(f"dnnlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        with contextlib.suppress(OSError):    # after SIGHUP the terminal may be gone
            print(f"dnnlab: interrupted ({str(e) or 'SIGINT'}); a run can be continued with --resume "
                  "RUN_DIR", file=sys.stderr)
        return rundir.exit_code(e)


if __name__ == "__main__":
    sys.exit(main())

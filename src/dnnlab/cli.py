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

from dnnlab import __version__, io, rundir
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


def continue_hint(args: argparse.Namespace) -> str:
    """What an interrupted command can do next, naming only that command's own flags (a sweep
    and a tune said "continue with --resume RUN_DIR", which neither has)."""
    out = getattr(args, "out", None) or "OUT"
    if args.command == "train":
        run = getattr(args, "resume", None) or getattr(args, "out", None)
        return f"continue it with dnnlab train --resume {run or 'RUN_DIR (under runs/)'}"
    if args.command == "study" and hasattr(args, "resume"):
        return (f"finished stages are kept; continue with dnnlab study {args.study} --resume "
                f"--out {out}")
    if args.command in ("sweep", "tune"):
        if getattr(args, "storage", None):
            return "finished work is kept in --storage; run the same command again to continue"
        return (f"a {args.command} without --storage cannot be continued; run it again (with "
                "--storage URL it can be resumed)")
    return "nothing was kept to continue from"


# the arguments that name a file or folder: a control character in any is refused (a newline in
# --data-dir split the error naming it in two); every --out is checked by rundir.out_arg
PATH_ARGS = {"config": "CONFIG", "run_dir": "RUN_DIR", "run_dirs": "RUN_DIR", "target": "TARGET",
             "resume": "--resume", "data_dir": "--data-dir", "storage": "--storage",
             "file": "FILE"}


def check_paths(args: argparse.Namespace) -> None:
    """Refuse a control character in any path argument, in one line, before any work."""
    for name, label in PATH_ARGS.items():
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                io.check_path(item, label)


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_in if not a.startswith("-")), "")
    parser = build_parser(only=command if command in COMMANDS else "")
    args = parser.parse_args(args_in)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_paths(args)
        threads = importlib.import_module(THREADS)
        n = threads.check(getattr(args, "threads", None))   # --threads N: bounded before any work
        with rundir.interrupt_on_signals(), threads.fixed(n):  # SIGTERM, SIGHUP: the Ctrl-C path below
            return int(args.func(args) or 0)
    except DnnlabError as e:
        print(f"dnnlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        with contextlib.suppress(OSError):    # after SIGHUP the terminal may be gone
            print(f"dnnlab: interrupted ({str(e) or 'SIGINT'}); {continue_hint(args)}",
                  file=sys.stderr)
        return rundir.exit_code(e)


if __name__ == "__main__":
    sys.exit(main())

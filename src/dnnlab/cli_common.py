"""What the command line shares with its subcommand modules: the parser, the config arguments, and
the run config read from them.

:mod:`dnnlab.cli` imports the subcommand modules (``dnnlab.tune.cli``, ``dnnlab.doctor.cli``, ...);
they import this module, never ``dnnlab.cli``, so no two modules import each other.
"""

from __future__ import annotations

import argparse

from dnnlab.config import load_config, replace


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def with_config(sp: argparse.ArgumentParser, required: bool = True) -> None:
    """Add CONFIG, ``--set``, ``--device``, ``--data-dir`` and ``--epochs`` to a subcommand."""
    sp.add_argument("config", nargs=None if required else "?", help="a TOML config (see examples/)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    sp.add_argument("--device", choices=("auto", "cpu", "cuda"),
                    help="where to train (default: the config's train.device; auto = CUDA "
                         "when present)")
    sp.add_argument("--data-dir", help="folder holding the dataset files (default: the "
                    "config's data.data_dir, then $DNNLAB_DATA_DIR, the cache, a download)")
    sp.add_argument("--epochs", type=int, help="override train.epochs (default: the config's)")


def dedicated_flags(args) -> dict:
    """The dedicated flags (--device, --data-dir, --epochs) as dotted config keys."""
    flags = {"train.device": getattr(args, "device", None),
             "data.data_dir": getattr(args, "data_dir", None),
             "train.epochs": getattr(args, "epochs", None)}
    return {k: v for k, v in flags.items() if v is not None}


def config_from_args(args):
    """The run config: the TOML file, then --set overrides, then the dedicated flags."""
    cfg = load_config(args.config, list(args.set or []))
    flags = dedicated_flags(args)
    return replace(cfg, **flags) if flags else cfg

"""What the command line shares with its subcommand modules: the parser, the config arguments, and
the run config read from them.

:mod:`dnnlab.cli` imports the subcommand modules (``dnnlab.tune.cli``, ``dnnlab.doctor.cli``, ...);
they import this module, never ``dnnlab.cli``, so no two modules import each other.
"""

from __future__ import annotations

import argparse

from dnnlab import rundir
from dnnlab.config import KEYS, describe_keys, load_config, replace

KEYS_DOC = "docs/config_keys.md"   # describe_keys(detail=True), kept equal by tests/test_config_keys.py


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def keys_epilog() -> str:
    """The ``--help`` epilog of a command that reads a config: the keys, from the config's table."""
    return ("config keys (--set KEY=VALUE; each with its default, bounds and meaning: "
            f"{KEYS_DOC}):\n" + describe_keys()
            + "\n\nmay differ between the models of one stack (a sweep over them trains in one "
              "run):\n" + describe_keys(lambda k: k.per_model)
            + "\n\nmay change on train --resume (the others are fingerprinted):\n"
            + describe_keys(lambda k: k.resume))


def with_config(sp: argparse.ArgumentParser, required: bool = True, epochs: bool = True) -> None:
    """Add CONFIG, ``--set``, ``--device``, ``--data-dir`` and (unless ``epochs=False``, for a
    command whose length is not in epochs, such as lr-find's steps) ``--epochs`` to a subcommand,
    and the config keys as its ``--help`` epilog."""
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp.epilog = keys_epilog()
    sp.add_argument("config", nargs=None if required else "?", help="a TOML config (see examples/)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config key, e.g. --set optim.lr=3e-4 (repeatable; the keys "
                         "are listed below)")
    with_flags(sp, epochs=epochs)


def with_flags(sp: argparse.ArgumentParser, epochs: bool | str = True) -> None:
    """Add the dedicated flags ``--device``, ``--data-dir`` and ``--epochs`` (their help from the
    key table; ``epochs`` False leaves ``--epochs`` out, a string is its help), each overriding
    its config key (:func:`dedicated_flags`). Every command that reads a config takes them here."""
    device = KEYS["train.device"]
    sp.add_argument("--device", choices=device.choices,
                    help=f"{device.help} (default: the config's {device.name})")
    data_dir = KEYS["data.data_dir"]
    sp.add_argument("--data-dir", help=f"{data_dir.help}; overrides {data_dir.name}")
    if epochs:
        key = KEYS["train.epochs"]
        sp.add_argument("--epochs", type=int, help=epochs if isinstance(epochs, str) else
                        f"{key.help} (default: the config's {key.name})")


def with_legacy(sp: argparse.ArgumentParser) -> None:
    """Add ``--accept-legacy`` to a command that reads a run folder: a folder from before run
    records (:func:`dnnlab.train.state.check_run`) is then read, unchecked, instead of refused."""
    sp.add_argument(rundir.LEGACY_FLAG, action="store_true",
                    help="read a run folder from before run records (no checkpoints/start.json, "
                         "or one without a run id): its config, data and model files are then "
                         "not checked against the run that made them (default: refused)")


def with_threads(sp: argparse.ArgumentParser) -> None:
    """Add ``--threads N`` to a subcommand that trains; :func:`dnnlab.cli.main` checks it before
    any work and runs the command under it (:func:`dnnlab.train.threads.fixed`)."""
    sp.add_argument("--threads", type=int, metavar="N",
                    help="exactly N torch CPU threads (default: as many as there are free cores, "
                         "re-decided while training; see dnnlab.train.threads)")


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

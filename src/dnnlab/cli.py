"""The command line: thin, it parses and calls the Python API.

Every user mistake ends in one line on stderr and exit code 2; a finished command ends by printing
where its results are.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import platform
import sys
from pathlib import Path

import torch

from dnnlab import __version__, io, rundir, runs
from dnnlab import data as datasets
from dnnlab import train as training
from dnnlab.analysis import prune_cli
from dnnlab.cli_common import (
    Parser,
    config_from_args,
    dedicated_flags,
    with_config,
    with_flags,
    with_legacy,
    with_threads,
)
from dnnlab.config import RESUME_KEYS, load_config, replace
from dnnlab.doctor import cli as doctor_cli
from dnnlab.errors import DnnlabError
from dnnlab.export import OPSET, OPSETS, export_run
from dnnlab.nn.mlp import build_mlp
from dnnlab.report.runs import report_runs, select_run_dirs
from dnnlab.runs import format_table, resume_config, sweep
from dnnlab.runs.sweep import all_failed
from dnnlab.studies import cli as study_cli
from dnnlab.studies.explain import cli as explain_cli
from dnnlab.train import threads
from dnnlab.train.lr_finder import check_steps, find_lr
from dnnlab.train.state import check_run
from dnnlab.tune import cli as tune_cli

DISTRIBUTION = "dnnlab-ch11"   # pyproject.toml's [project] name; the index's "dnnlab" is another project


def version() -> str:
    """The installed distribution's version, or ``dnnlab.__version__`` for a source tree run
    without installing (``PYTHONPATH=src``), where there is no distribution metadata."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return __version__


def cmd_train(args) -> int:
    if args.resume:   # CONFIG, --set and flags may change only what a resume allows (checked)
        cfg = resume_config(args.resume, args.config, list(args.set or []), dedicated_flags(args),
                            accept_legacy=args.accept_legacy)
        result = runs.train_run(cfg, args.out, resume=args.resume,   # via the package: patchable
                                accept_legacy=args.accept_legacy)
    else:
        if args.config is None:
            raise DnnlabError("dnnlab train needs a CONFIG.toml (e.g. examples/mnist_5x100.toml) "
                              "or --resume RUN_DIR")
        cfg = config_from_args(args)
        result = runs.train_run(cfg, args.out)
    s = result.summary()
    line = (f"{result.status}: best {result.monitor} {result.best:.4f} at epoch {result.best_epoch}"
            f" ({result.epochs_run} epochs, {s['seconds_per_epoch']:.2f} s/epoch)")
    if "test_accuracy" in s:
        line += f", test accuracy {s['test_accuracy']:.4f}"
    print(line)
    print(f"run directory: {result.run_dir}")
    if result.status == "diverged":
        print(f"dnnlab: error: {result.message}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    dirs, skipped = select_run_dirs(args.run_dirs)
    for d in dirs:                        # the one check of a run folder, before any is read
        check_run(d, accept_legacy=args.accept_legacy)
    for p, why in skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    path = report_runs(dirs, Path(args.out) if args.out else None)
    print(f"report: {path}")
    return 0


def cmd_datasets(args) -> int:
    print(datasets.format_status(datasets.dataset_status(args.data_dir)))
    return 0


def cmd_lr_find(args) -> int:
    cfg = config_from_args(args)
    # the plot's name is built from the config's name: kept inside the folder, checked before work
    check_steps(args.steps)
    out = rundir.check_free(rundir.named(args.out or "runs", cfg.name, "lr-find.png"))
    data = datasets.load_from_config(cfg.data)
    device = training.resolve_device(cfg.train.device)
    model = build_mlp(cfg.model, data.n_features, data.n_classes, seed=cfg.train.seed).to(device)
    x = torch.as_tensor(data.train.x).to(device)
    y = torch.as_tensor(data.train.y).to(device)
    res = find_lr(model, x, y, cfg.optim, batch_size=cfg.train.batch_size, steps=args.steps,
                  seed=cfg.train.seed, progress=cfg.train.progress)
    rundir.make_dir(out.parent)           # only now: a refused lr-find leaves no folder behind
    res.plot(out)
    print(f"suggested learning rate: {res.suggestion:.3g} (minimum of the smoothed loss / 10)")
    print(f"plot: {out}")
    return 0


def cmd_sweep(args) -> int:
    cfg = load_config(args.config)        # its --set are the sweep's values, not overrides
    flags = dedicated_flags(args)
    cfg = replace(cfg, **flags) if flags else cfg
    out = sweep(cfg, list(args.set or []), seeds=args.seeds, out=args.out,
                progress=cfg.train.progress, storage=args.storage, grace=args.grace)
    print(format_table(out))
    print(f"sweep directory: {out} (summary.csv: one row per variant over its seeds; runs.csv: one "
          "per model; report.html; one run directory per model)")
    if all_failed(out):
        print(f"dnnlab: error: every variant of the sweep failed; the reasons are in "
              f"{out / 'runs.csv'}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args) -> int:
    if args.out is not None:              # a file: an existing folder there is refused now
        io.check_target(args.out, "--out", file=True)
    done = export_run(args.run_dir, args.format, args.out, opset=args.opset,
                      accept_legacy=args.accept_legacy)
    print(f"exported {args.run_dir} to {done.path} (ONNX opset {args.opset}; input: float32 rows "
          f"prepared as the run's data, output: logits; on {done.rows} test rows onnxruntime "
          f"matches dnnlab within {done.diff:.1e}, tolerance {done.tolerance:.1e})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="dnnlab", description="Train deep MLPs and settle the questions of "
               "'Training Deep Neural Networks' by measurement.")
    p.add_argument("--version", action="version", version=f"dnnlab {version()} ({DISTRIBUTION}; "
                   f"torch {torch.__version__}, Python {platform.python_version()})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    sp = sub.add_parser("train", help="train one model from a config")
    with_config(sp, required=False)
    sp.add_argument("--out", type=rundir.out_arg, help="run directory (default runs/NAME-TIMESTAMP)")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or stopped run in its "
                    "own directory, on the same data; with CONFIG/--set only these keys may "
                    f"change: {', '.join(RESUME_KEYS)} (anything else is refused, naming the keys)")
    with_legacy(sp)
    with_threads(sp)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("report", help="compare runs: overlaid curves and a results table")
    sp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="run directories, e.g. runs/mnist04-5x100-* (paths that are not run "
                         "directories, such as lr-find's PNG, are skipped with a note)")
    sp.add_argument("--out", type=rundir.out_arg, help="output folder (default: the run directory "
                    "for one run, else report/ beside the first; a temporary folder while another "
                    "process still trains them)")
    with_legacy(sp)
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("datasets", help="which datasets are available, where, checksums")
    sp.add_argument("--data-dir", help="also look in this folder")
    sp.set_defaults(func=cmd_datasets)

    sp = sub.add_parser("lr-find", help="learning-rate range test: plot and suggestion")
    with_config(sp, epochs=False)                  # its length is --steps, not epochs
    sp.add_argument("--steps", type=int, default=200,
                    help="number of steps of the sweep, over as many epochs as they need "
                         "(default 200)")
    sp.add_argument("--out", type=rundir.out_arg, help="folder for the plot (default runs/)")
    with_threads(sp)
    sp.set_defaults(func=cmd_lr_find)

    sp = sub.add_parser("sweep", help="train many variants at once (the K-model engine)")
    sp.add_argument("config", help="a TOML config (see examples/)")
    sp.add_argument("--set", action="append", metavar="KEY=V1,V2,...",
                    help="values to sweep, e.g. --set optim.lr=1e-4,3e-4,1e-3 (repeatable: grid); "
                    "a single value (--set train.epochs=2) is a fixed setting for every variant")
    sp.add_argument("--seeds", type=int, default=1, help="seeds per variant (default 1)")
    with_flags(sp)
    sp.add_argument("--out", type=rundir.out_arg, help="sweep directory (default "
                    "runs/NAME-sweep-TIMESTAMP, or runs/NAME-sweep-HASH with --storage)")
    sp.add_argument("--storage", metavar="URL", help="share the sweep between workers (processes "
                    "or machines) through a database, e.g. sqlite:///sweep.db or "
                    "postgresql://user:pw@host/db; re-running resumes it (default: none, one process)")
    sp.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                    help="with --storage: a group whose worker sent no heartbeat for this long is "
                    "redone by another worker (at least 3; default 60.0)")
    with_threads(sp)
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("export", help="write a run's model for other runtimes (ONNX)",
                        description="Export the final model of a run directory (model.safetensors) "
                        "in inference mode: dropout off, batch norm on its moving statistics. The "
                        "file is checked and run with onnxruntime against dnnlab's own outputs "
                        "on the first test rows of the run's data before it is written. Needs the "
                        "export extra: pip install -e '.[export]' in the dnnlab checkout.")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'dnnlab train'")
    sp.add_argument("--format", default="onnx", choices=("onnx",), help="the format (default onnx)")
    sp.add_argument("--out", type=rundir.out_arg, metavar="PATH",
                    help="the output file (default RUN_DIR/model.onnx)")
    sp.add_argument("--opset", type=int, default=OPSET, help=f"ONNX operator-set version, "
                    f"{OPSETS.start} to {OPSETS.stop - 1} (default {OPSET})")
    with_legacy(sp)
    sp.set_defaults(func=cmd_export)

    for register in _extra_commands():
        register(sub, with_config)
    return p


def _extra_commands() -> list:
    """Commands that live beside the code they drive (each module has a ``register``)."""
    return [tune_cli.register, study_cli.register, explain_cli.register, prune_cli.register,
            doctor_cli.register]


def continue_hint(args) -> str:
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
             "resume": "--resume", "data_dir": "--data-dir", "storage": "--storage"}


def check_paths(args) -> None:
    """Refuse a control character in any path argument, in one line, before any work."""
    for name, label in PATH_ARGS.items():
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                io.check_path(item, label)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_paths(args)
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

"""The commands that draw: report, lr-find and sweep (its report.html). Loaded by
:mod:`dnnlab.cli` only when one of them is run: they import matplotlib (and the sweep optuna's
storage), which a training run does without.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dnnlab import data as datasets
from dnnlab import rundir
from dnnlab import train as training
from dnnlab.cli_common import config_from_args, dedicated_flags, with_flags, with_legacy, with_threads
from dnnlab.config import load_config, replace
from dnnlab.nn.mlp import build_mlp
from dnnlab.report.runs import report_runs, select_run_dirs
from dnnlab.runs.sweep import all_failed, format_table, sweep
from dnnlab.train.lr_finder import check_steps, find_lr
from dnnlab.train.state import check_run


def cmd_report(args) -> int:
    dirs, skipped = select_run_dirs(args.run_dirs)
    for d in dirs:                        # the one check of a run folder, before any is read
        check_run(d, accept_legacy=args.accept_legacy)
    for p, why in skipped:
        print(f"skipped {p}: {why}", file=sys.stderr)
    path = report_runs(dirs, Path(args.out) if args.out else None)
    print(f"report: {path}")
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


def register(sub, with_config) -> None:
    """Add this module's commands to the ``dnnlab`` parser's subcommands."""
    sp = sub.add_parser("report", help="compare runs: overlaid curves and a results table")
    sp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="run directories, e.g. runs/mnist04-5x100-* (paths that are not run "
                         "directories, such as lr-find's PNG, are skipped with a note)")
    sp.add_argument("--out", type=rundir.out_arg, help="output folder (default: the run directory "
                    "for one run, else report/ beside the first; a temporary folder while another "
                    "process still trains them)")
    with_legacy(sp)
    sp.set_defaults(func=cmd_report)

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

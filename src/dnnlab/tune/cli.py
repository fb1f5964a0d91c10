"""The ``dnnlab tune`` command (registered into ``dnnlab.cli`` by ``register``)."""

from __future__ import annotations

from dnnlab import rundir
from dnnlab.cli_common import config_from_args, with_threads
from dnnlab.tune.search import tune


def register(sub, with_config) -> None:
    """Add ``tune`` to the dnnlab sub-commands; ``with_config`` adds CONFIG, --set, --device..."""
    sp = sub.add_parser(
        "tune", help="Optuna search with k-fold cross-validation over the config's [tune] table",
        description="Search the space declared in the config's [tune] table: each trial is scored "
        "by stratified k-fold cross-validation on the training split (early stopping on the "
        "validation split), bad trials are pruned, and the best config is written as a TOML file "
        "that 'dnnlab train' accepts. The study lives in --storage (default: study.db in --out), "
        "so a stopped search resumes and several workers can share one search.")
    with_config(sp)
    sp.add_argument("--trials", type=int, default=20,
                    help="finished trials the study should hold (default 20); workers sharing a "
                    "study stop when it holds that many")
    sp.add_argument("--folds", type=int, default=3, help="cross-validation folds (default 3)")
    sp.add_argument("--storage", metavar="URL",
                    help="Optuna storage, e.g. postgresql://user:pw@host/db (default: SQLite "
                    "study.db in --out)")
    sp.add_argument("--study-name", help="the study's name in the storage (default: the config's name)")
    sp.add_argument("--seed", type=int, help="sampler seed (leave unset when several workers share "
                    "a study)")
    sp.add_argument("--out", type=rundir.out_arg, help="output folder: trials.csv, "
                    "best_config.toml, study.db (default runs/NAME-tune)")
    sp.add_argument("--heartbeat", type=int, default=20, metavar="SECONDS",
                    help="seconds between a running trial's heartbeats; a worker killed mid-trial "
                    "has its trial failed and retried after 3 missed heartbeats (default 20)")
    with_threads(sp)
    sp.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    result = tune(config_from_args(args), trials=args.trials, folds=args.folds, storage=args.storage,
                  out=args.out, study_name=args.study_name, seed=args.seed,
                  heartbeat=args.heartbeat)
    print(result.table())
    print(f"best cross-validated accuracy {result.best_value:.4f}; this worker ran "
          f"{len(result.trials_here)} trials: {result.trials_here}")
    print(f"trials: {result.paths['trials_csv']}")
    print(f"best config: {result.paths['best_config']} (dnnlab train {result.paths['best_config']})")
    return 0

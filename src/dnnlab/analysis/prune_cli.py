"""``dnnlab prune RUN_DIR --sparsity S [--epochs N]``: prune a trained run, fine-tune, report.

Registered by :mod:`dnnlab.cli` through ``_extra_commands``; the work is
:func:`dnnlab.analysis.sparsity.prune_run`. The run directory is held while pruning writes into it
(:func:`dnnlab.rundir.hold`: not while it trains), and its files are checked first
(:func:`check_run`), so a damaged or mismatched run is one line naming the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dnnlab import rundir
from dnnlab.analysis.sparsity import prune_run
from dnnlab.cli_common import with_flags, with_threads
from dnnlab.config import DATASET_SHAPES, FIXED_SHAPE_DATASETS, ModelConfig, load_config
from dnnlab.errors import DnnlabError
from dnnlab.train import checkpoint as ckpt


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _line(name: str, scores: dict[str, float]) -> str:
    parts = [f"{name:<10} sparsity {_pct(scores['sparsity']):>7}"]
    for split in ("valid", "test"):
        if f"{split}_accuracy" in scores:
            parts.append(f"{split} accuracy {scores[f'{split}_accuracy']:.4f}")
    return "  ".join(parts)


def check_run(run_dir: str | Path) -> None:
    """Check a finished run before pruning it: its config.toml is valid, model.safetensors is
    intact (checksum, shapes: :func:`ckpt.load_model`) and describes the model and the number of
    input features that the config does."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DnnlabError(f"run directory {run_dir} does not exist; pass a folder 'dnnlab train' "
                          "printed")
    for name in ("config.toml", "model.safetensors"):
        if not (run_dir / name).is_file():
            raise DnnlabError(f"{run_dir} has no {name}; pass a run directory that 'dnnlab train' "
                              "finished (it prints the folder at the end)")
    cfg = load_config(run_dir / "config.toml")
    path = run_dir / "model.safetensors"
    model = ckpt.load_model(path)
    if dataclasses.asdict(model.config) != dataclasses.asdict(ModelConfig(**dataclasses.asdict(cfg.model))):
        raise DnnlabError(f"{path} holds another model than {run_dir / 'config.toml'} describes; "
                          "one of them was edited or replaced")
    features = DATASET_SHAPES[cfg.data.name][0] if cfg.data.name in FIXED_SHAPE_DATASETS else None
    if features is not None and model.in_features != features:
        raise DnnlabError(f"{path} takes {model.in_features} input features but {cfg.data.name} "
                          f"has {features}; the run's files do not belong together")
    if cfg.data.classes and len(cfg.data.classes) != model.n_classes:
        raise DnnlabError(f"{path} has {model.n_classes} outputs but data.classes has "
                          f"{len(cfg.data.classes)} classes; the run's files do not belong together")


def cmd_prune(args) -> int:
    check_run(args.run_dir)
    with rundir.hold(args.run_dir, wait="prune it when its training has ended"):
        try:
            report = prune_run(args.run_dir, args.sparsity, args.epochs, data_dir=args.data_dir,
                               device=args.device, lr=args.lr, progress=not args.quiet)
        except RuntimeError as e:    # torch's shape errors: the model does not fit the data
            if "shape" not in str(e):
                raise
            raise DnnlabError(f"{args.run_dir}: model.safetensors does not fit the data its "
                              f"config.toml describes ({str(e)[:120]})") from None
    print(_line("before", report["before"]))
    print(_line("pruned", report["pruned"]))
    if "finetuned" in report:
        print(_line(f"+{report['finetune_epochs']} epochs", report["finetuned"]))
    print(f"pruned model: {report['model']}")
    return 0


def register(sub, with_config) -> None:
    """Add the ``prune`` subcommand (``with_config`` is unused: a run directory holds its config)."""
    sp = sub.add_parser(
        "prune", help="zero the smallest weights of a trained run, fine-tune, report",
        description="Prune a finished run to a target sparsity by global magnitude pruning "
                    "(torch.nn.utils.prune), fine-tune it with the pruned weights held at zero, and "
                    "write RUN_DIR/pruned-S/model.safetensors and report.json.")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'dnnlab train'")
    sp.add_argument("--sparsity", type=float, required=True, metavar="S",
                    help="fraction of kernel weights set to exactly zero, in [0, 1), e.g. 0.9 "
                         "(required)")
    sp.add_argument("--epochs", type=int, default=2,
                    help="fine-tuning epochs (0: prune only; default 2)")
    sp.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the run's)")
    with_flags(sp, epochs=False)                   # its --epochs are fine-tuning epochs
    sp.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    with_threads(sp)
    sp.set_defaults(func=cmd_prune)

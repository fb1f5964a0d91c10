"""``dnnlab prune RUN_DIR --sparsity S [--epochs N]``: prune a trained run, fine-tune, report.

Registered by :mod:`dnnlab.cli` through ``_extra_commands``; the work is
:func:`dnnlab.analysis.sparsity.prune_run`. The run directory is held while pruning writes into it
(:func:`dnnlab.rundir.hold`: not while it trains); ``prune_run`` checks its files first, so a
damaged or mismatched run is one line naming the file.
"""

from __future__ import annotations

from dnnlab import rundir
from dnnlab.analysis.sparsity import prune_run, run_files
from dnnlab.cli_common import with_flags, with_legacy, with_threads
from dnnlab.errors import DnnlabError


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _line(name: str, scores: dict[str, float]) -> str:
    parts = [f"{name:<10} sparsity {_pct(scores['sparsity']):>7}"]
    for split in ("valid", "test"):
        if f"{split}_accuracy" in scores:
            parts.append(f"{split} accuracy {scores[f'{split}_accuracy']:.4f}")
    return "  ".join(parts)


def cmd_prune(args) -> int:
    run_files(args.run_dir)          # before hold, which would create a missing folder
    with rundir.hold(args.run_dir, wait="prune it when its training has ended"):
        try:
            report = prune_run(args.run_dir, args.sparsity, args.epochs, data_dir=args.data_dir,
                               device=args.device, lr=args.lr, progress=not args.quiet,
                               accept_legacy=args.accept_legacy)
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
    with_legacy(sp)
    with_threads(sp)
    sp.set_defaults(func=cmd_prune)

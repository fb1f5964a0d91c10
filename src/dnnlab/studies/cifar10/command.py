"""``dnnlab study cifar10``: the chapter's CIFAR-10 exercise (8 a-e, plus 1cycle) end to end.

>>> from dnnlab.studies.cifar10 import run
>>> results = run(Path("runs/cifar10"), data_dir="/data", quick=True)     # doctest: +SKIP
>>> results["batchnorm"]["val_accuracy_mean"], results["answers"]["batchnorm"]["text"]

The ablation study (:mod:`dnnlab.studies.ablation`) with the book's network, data and protocol
(:mod:`.plan`), and the book's figures beside ours: for each variant the LR finder, the
learning-rate search, ``seeds`` final models trained at once; MC Dropout on the alpha-dropout
models, the SELU net's layer statistics, the doctor on each variant's first run, one epoch of
each timed; ``results.json`` and ``report.html`` in ``out``, the trained models in ``out/models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnnlab.studies import engine
from dnnlab.studies.ablation.command import add_common, check_options, run_study
from dnnlab.studies.ablation.stages import Setup
from dnnlab.studies.cifar10.plan import BOOK, base_config, protocol

HELP = "the CIFAR-10 exercise (a-e + 1cycle): searches, seeds, answers, report"
DEFAULT_OUT = Path("runs/cifar10")
TITLE = "CIFAR-10: training a deep MLP (chapter 11, exercise 8)"


def run(out: Path = DEFAULT_OUT, *, data_dir: str | Path | None = None, quick: bool = False,
        seeds: int = 3, device: str = "auto", progress: bool = True, resume: bool = False,
        max_epochs: int | None = None, patience: int | None = None,
        search_epochs: int | None = None, threads: int | None = None,
        workers: int | None = None, storage: str | None = None,
        heartbeat: int | None = None) -> dict[str, Any]:
    """Run the whole study; write ``out/results.json`` and ``out/report.html``; return the results.

    ``max_epochs``, ``patience`` and ``search_epochs`` change the protocol on purpose (the report
    and results.json then say the run was shortened). ``threads`` fixes torch's CPU threads per
    process (default: :mod:`dnnlab.train.threads` decides, the free cores shared out among the
    running stages); ``workers`` is how many stages train at once, in their own processes
    (default: the CPU's cores + 1, at most 4; 1 on CUDA); ``storage`` shares the stages out
    through an Optuna storage instead.
    """
    check_options(seeds, workers, max_epochs=max_epochs, patience=patience,
                  search_epochs=search_epochs)
    proto = protocol(quick, max_epochs=max_epochs, patience=patience, search_epochs=search_epochs)
    setup = Setup(base=base_config(None if data_dir is None else str(data_dir)), proto=proto,
                  seeds=seeds, device=device, out=Path(out), say=engine.Say("cifar10", progress))
    return run_study(setup, study="cifar10", title=TITLE, book=BOOK, resume=resume,
                     workers=workers, threads=threads, storage=storage, heartbeat=heartbeat)


def add_arguments(sp) -> None:
    """The options of ``dnnlab study cifar10`` beyond the ones every study has."""
    add_common(sp)


def main(args) -> int:
    run(Path(args.out or DEFAULT_OUT), data_dir=args.data_dir, quick=args.quick,
        seeds=args.seeds, device=args.device or "auto", resume=args.resume,
        max_epochs=args.max_epochs, patience=args.patience, search_epochs=args.search_epochs,
        threads=args.threads, workers=args.workers, storage=args.storage,
        heartbeat=args.heartbeat)
    return 0

"""dnnlab: train deep MLPs and settle the questions of "Training Deep Neural Networks" by measurement.

The Python API, for notebooks and scripts: everything the command line does, as functions.

>>> import dnnlab
>>> cfg = dnnlab.replace(dnnlab.RunConfig(), **{"train.epochs": 3, "data.classes": [0, 1, 2, 3, 4]})
>>> data = dnnlab.load_dataset("mnist", classes=[0, 1, 2, 3, 4], limit=2000)   # ships inside dnnlab
>>> result = dnnlab.fit(cfg, data)                          # doctest: +SKIP
>>> dnnlab.learning_curves({"5x100": result.history})       # a matplotlib Figure  # doctest: +SKIP

Importing dnnlab changes no global state: no matplotlib backend switch (figures are built as plain
``matplotlib.figure.Figure`` objects, and every plotting function returns one), no torch thread
or random-state change, no warning filters, no logging handlers.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnnlab import _notebook  # noqa: F401  (first: tqdm.auto stays quiet in a notebook)
from dnnlab.errors import DnnlabError

if TYPE_CHECKING:     # what the names below are, for type checkers; at run time they load lazily
    from dnnlab.analysis.mc_dropout import mc_dropout_eval, mc_predict, plain_eval
    from dnnlab.analysis.stats import layer_stats
    from dnnlab.analysis.transfer import cache_features, freeze, reuse_layers, unfreeze
    from dnnlab.config import (
        DataConfig,
        ModelConfig,
        OptimConfig,
        RunConfig,
        ScheduleConfig,
        TrainConfig,
        load_config,
        replace,
    )
    from dnnlab.data import Dataset, from_arrays, load_dataset, standardized
    from dnnlab.nn.mlp import MLP, build_mlp
    from dnnlab.predict import Classifier, load_model
    from dnnlab.report import learning_curves, line_plot, report_runs
    from dnnlab.runs import fit, train_many
    from dnnlab.studies.explain import TOPICS, Finding
    from dnnlab.train import Callback, Variant
    from dnnlab.train.checkpoint import save_model
    from dnnlab.train.lr_finder import LRFinderResult, find_lr

# Every exported name -> the module it lives in. ``import dnnlab`` loads none of them (so the
# command line starts without torch, and a script pays only for what it uses); the first access
# to ``dnnlab.fit`` imports dnnlab.runs and keeps the function here (PEP 562 __getattr__).
_LAZY = {
    **dict.fromkeys(("RunConfig", "DataConfig", "ModelConfig", "OptimConfig", "ScheduleConfig",
                     "TrainConfig", "load_config", "replace"), "dnnlab.config"),
    **dict.fromkeys(("Dataset", "load_dataset", "from_arrays", "standardized"), "dnnlab.data"),
    **dict.fromkeys(("MLP", "build_mlp"), "dnnlab.nn.mlp"),
    **dict.fromkeys(("fit", "train_many"), "dnnlab.runs"),
    **dict.fromkeys(("Variant", "Callback"), "dnnlab.train"),
    "save_model": "dnnlab.train.checkpoint",
    **dict.fromkeys(("load_model", "Classifier"), "dnnlab.predict"),
    **dict.fromkeys(("find_lr", "LRFinderResult"), "dnnlab.train.lr_finder"),
    "layer_stats": "dnnlab.analysis.stats",
    **dict.fromkeys(("mc_predict", "mc_dropout_eval", "plain_eval"), "dnnlab.analysis.mc_dropout"),
    **dict.fromkeys(("reuse_layers", "freeze", "unfreeze", "cache_features"),
                    "dnnlab.analysis.transfer"),
    **dict.fromkeys(("learning_curves", "line_plot", "report_runs"), "dnnlab.report"),
    **dict.fromkeys(("TOPICS", "Finding", "run_topics"), "dnnlab.studies.explain"),
}


def __getattr__(name: str) -> Any:
    """Load an exported name on first use (then it is an ordinary attribute of the package)."""
    if name == "STUDIES":
        value: Any = tuple(importlib.import_module("dnnlab.studies.cli").STUDIES)
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'dnnlab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

# STUDIES: the studies :func:`run_study` runs (``dnnlab study NAME``), loaded on first use


def run_study(name: str, out: str | Path | None = None, *, quick: bool = False, seeds: int = 3,
              data_dir: str | Path | None = None, device: str = "auto", progress: bool = True,
              config: str | Path | RunConfig | None = None, **options: Any) -> dict[str, Any]:
    """Run one of the chapter's exercises end to end and return its results (also in ``out``).

    Args:
        name: ``"cifar10"`` (the CIFAR-10 exercise: needs CIFAR-10 in ``data_dir``, the cache or
            a download), ``"transfer"`` (the MNIST transfer-learning exercise) or ``"ablation"``
            (the exercise's ladder of variants on the data and network of ``config``).
        out: the output folder for ``results.json``, ``report.html`` and the runs; default
            ``runs/NAME``.
        quick: a shortened run of the whole pipeline (minutes on a 2-core CPU) instead of the
            book's protocol.
        seeds: seeds per experiment (default 3; results are mean ± std over them).
        data_dir: a folder holding the dataset files (default: ``$DNNLAB_DATA_DIR``, the cache).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        progress: print progress lines (default True).
        config: ablation only: a TOML file (its ``[[variant]]`` tables add variants) or a
            :class:`RunConfig` (then ``variants=`` gives them).
        **options: the study's own options, e.g. ``threads=2`` or ``resume=True`` (both);
            ``max_epochs``, ``patience``, ``search_epochs`` (cifar10); ``pretrained`` (transfer).

    Returns the dict written to ``results.json``. Same as ``dnnlab study NAME``.
    """
    # the one registry, as `dnnlab study NAME` reads it
    study = importlib.import_module("dnnlab.studies.cli").load(name)
    if study.takes_config and config is None:
        raise DnnlabError(f"run_study({name!r}) needs config= (a TOML file or a RunConfig): "
                          "the network and data its ladder of variants trains")
    if not study.takes_config and config is not None:
        raise DnnlabError(f"run_study({name!r}) takes no config=: the study trains its own "
                          "networks; drop config=, or run the 'ablation' study on it")
    return study.run(*([config] if study.takes_config else []), out or f"runs/{name}",
                     quick=quick, seeds=seeds, data_dir=None if data_dir is None else str(data_dir),
                     device=device, progress=progress, **options)


def explain(topics: str | list[str], out: str | Path = "runs/explain", *, quick: bool = False,
            seed: int = 0, progress: bool = True, config: str | Path | RunConfig | None = None,
            data: DataConfig | None = None) -> dict[str, Finding]:
    """Settle one or more of the chapter's questions by experiment; return a Finding per topic.

    Args:
        topics: a topic name, a list of them, or ``"all"``; the names are in
            :data:`dnnlab.TOPICS` (``symmetry``, ``bias-init``, ``init-variance``, ``selu``,
            ``activations``, ``momentum``, ``sparsity``, ``dropout-cost``, ``mc-dropout``).
        out: the folder for each topic's figure, ``results.json`` and ``report.html``
            (default ``runs/explain``, which the progress lines name); earlier topics' results
            there are kept in the report.
        quick: small settings (seconds per topic, still at least 3 seeds per verdict).
        seed: the first random seed of the experiments (default 0).
        progress: print a line per step and each verdict as it lands (default True).
        config: run every topic on this config's ``[data]`` table as written (a TOML file or a
            :class:`RunConfig`), as ``dnnlab explain --config`` does; default the built-in MNIST.
        data: the ``[data]`` table itself (a :class:`DataConfig`); give ``config`` or ``data``,
            not both.

    Each :class:`Finding` holds the question, its verdicts (claim, per-seed evidence, test,
    outcome), the seed answers they confirm or refute and the path of its figure. A topic that
    fails does not stop the others; a ``DnnlabError`` names the failed ones at the end. Same as
    ``dnnlab explain``.
    """
    if config is not None and data is not None:
        raise DnnlabError("explain() takes config= or data=, not both: data= is a config's "
                          "[data] table")
    if config is not None:
        loaded = config if isinstance(config, __getattr__("RunConfig")) else \
            __getattr__("load_config")(config)
        data = loaded.data
    run_topics = __getattr__("run_topics")
    return run_topics(topics, Path(out), quick=quick, seed=seed, progress=progress, data=data)


__all__ = [
    # config
    "RunConfig", "DataConfig", "ModelConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
    "load_config", "replace",
    # data
    "Dataset", "load_dataset", "from_arrays", "standardized",
    # models and training
    "MLP", "build_mlp", "fit", "train_many", "Variant", "Callback",
    "save_model", "load_model", "Classifier",
    # analysis
    "find_lr", "LRFinderResult", "layer_stats", "mc_predict", "mc_dropout_eval", "plain_eval",
    "reuse_layers", "freeze", "unfreeze", "cache_features",
    # reports and plots
    "learning_curves", "line_plot", "report_runs",
    # studies and explained questions
    "STUDIES", "run_study", "TOPICS", "explain", "Finding",
    "DnnlabError", "__version__",
]

"""The API's training entry points: the training engine plus what a run directory records.

:func:`fit` and :func:`train_many` are :func:`dnnlab.train.fit` and :func:`dnnlab.train.train_many`
with the doctor's recording callbacks attached for every run directory (``train.record_every``:
``layers.csv``; ``train.tensorboard``: TensorBoard events), so that ``dnnlab doctor RUN_DIR`` can
judge any run the lab wrote. The engine itself (``dnnlab.train``) knows nothing of the doctor:
the recorder is a callback like any other, attached here, one layer up.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import nn

from dnnlab.config import RunConfig
from dnnlab.data import Dataset
from dnnlab.doctor.record import callbacks_for
from dnnlab.errors import DnnlabError
from dnnlab.train import driver
from dnnlab.train.callbacks import Callback
from dnnlab.train.driver import FitResult, Variant, variant_configs


def fit(cfg: RunConfig, data: Dataset, run_dir: str | Path | None = None, *,
        model: nn.Module | None = None, resume: bool = False,
        callbacks: Iterable[Callback] = (), evaluate_test: bool = True) -> FitResult:
    recorders = callbacks_for(cfg, data.train.tensors(), run_dir)
    return driver.fit(cfg, data, run_dir, model=model, resume=resume,
                      callbacks=[*callbacks, *recorders], evaluate_test=evaluate_test)


def train_many(cfg: RunConfig, data: Dataset, variants: list[Variant], *, device: str = "auto",
               progress: bool = True, callbacks: Iterable[Callback] = (),
               run_dirs: list[str | Path | None] | None = None) -> list[FitResult]:
    if run_dirs is not None and len(run_dirs) != len(variants):
        raise DnnlabError(f"train_many: {len(run_dirs)} run_dirs for {len(variants)} variants; "
                          "give one per variant (None where a variant records nothing)")
    recorders: list[Callback] = []
    if run_dirs is not None:
        train = data.train.tensors()
        for i, (c, d) in enumerate(zip(variant_configs(cfg, variants), run_dirs)):
            recorders += callbacks_for(c, train, d, model=i)
    return driver.train_many(cfg, data, variants, device=device, progress=progress,
                             callbacks=[*callbacks, *recorders])


# The engine's docstrings, whole (arguments, defaults, returns), and what this layer adds: help()
# on dnnlab.fit shows every argument, and the text is written once, in dnnlab.train.driver.
fit.__doc__ = (f"{driver.fit.__doc__}\n    Here the doctor's recorders are attached: with ``run_dir`` "
               "the run's layers are recorded\n    into it (``layers.csv``; TensorBoard events "
               "with ``train.tensorboard``).\n")
train_many.__doc__ = (f"{driver.train_many.__doc__}\n    ``run_dirs``: one folder per variant (None "
                      "where a variant records nothing);\n    each model then records its layers "
                      "into its own folder, as :func:`fit` does.\n")

"""Training: the engine. One driver (:func:`fit` for one model, :func:`train_many` for K at once,
both :class:`~dnnlab.train.driver.Trainer`) over the :class:`~dnnlab.train.backend.Backend`
protocol (the stacked MLP, any nn.Module), opened up by :class:`~dnnlab.train.callbacks.Callback`
objects; the learning-rate finder is a run of it (:mod:`dnnlab.train.lr_finder`).

Runs from a config, with their run directories, records and sweeps, are one layer up:
:mod:`dnnlab.runs`.
"""

from dnnlab.train.callbacks import Callback
from dnnlab.train.driver import evaluate, fit, predict_proba, resolve_device, train_many
from dnnlab.train.results import FitResult, Variant

__all__ = ["Callback", "FitResult", "Variant", "evaluate", "fit", "predict_proba",
           "resolve_device", "train_many"]

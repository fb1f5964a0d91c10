"""Training: one driver (:func:`fit` for one model, :func:`train_many` for K at once) over two
backends, runs from a config (:func:`train_run`), sweeps."""

from dnnlab.train.driver import (FitResult, Variant, evaluate, fit, predict_proba,
                                 resolve_device, train_many)
from dnnlab.train.run import default_run_dir, train_run

__all__ = ["FitResult", "Variant", "evaluate", "fit", "predict_proba", "resolve_device",
           "train_many", "train_run", "default_run_dir"]

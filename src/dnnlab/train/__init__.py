"""Training: the single-model loop (:func:`fit`), runs from a config (:func:`train_run`)."""

from dnnlab.train.loop import FitResult, evaluate, fit, predict_proba, resolve_device
from dnnlab.train.run import default_run_dir, train_run
from dnnlab.train.engine import Variant, train_many  # issue-13: the lead's driver exports these

__all__ = ["FitResult", "evaluate", "fit", "predict_proba", "resolve_device", "train_run",
           "default_run_dir", "Variant", "train_many"]

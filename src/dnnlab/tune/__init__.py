"""Hyperparameter search: Optuna with stratified k-fold cross-validation (``dnnlab tune``)."""

from dnnlab.tune.folds import stratified_kfold
from dnnlab.tune.search import TuneResult, format_table, tune
from dnnlab.tune.space import Param, apply, parse_space

__all__ = ["Param", "TuneResult", "apply", "format_table", "parse_space", "stratified_kfold", "tune"]

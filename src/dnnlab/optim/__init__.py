"""Optimizers (torch's with Keras' meanings, plus FTRL), schedules, gradient clipping, LR finder.

The LR finder lives in ``dnnlab.optim.lr_finder`` (``find_lr``, ``LRFinderResult``).
"""

from dnnlab.optim.factory import KERAS_NADAM_MOMENTUM_DECAY, clip_gradients_, make_optimizer
from dnnlab.optim.ftrl import FTRL
from dnnlab.optim.schedules import Schedule, make_schedule

__all__ = ["FTRL", "KERAS_NADAM_MOMENTUM_DECAY", "Schedule", "clip_gradients_", "make_optimizer",
           "make_schedule"]

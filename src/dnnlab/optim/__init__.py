"""Optimizers (each update rule written once, over flat buffers), schedules in closed form,
and gradient clipping (the learning-rate finder, a run of the trainer, is ``dnnlab.train.lr_finder``)."""

from dnnlab.optim.flat import (
    KERAS_NADAM_MOMENTUM_DECAY,
    OPTIMIZERS,
    FlatOptimizer,
    OptimInfo,
    clip_,
    register,
    update,
)
from dnnlab.optim.schedules import Plateau, check_schedule, rates

__all__ = ["KERAS_NADAM_MOMENTUM_DECAY", "OPTIMIZERS", "FlatOptimizer", "OptimInfo", "Plateau",
           "check_schedule", "clip_", "rates", "register", "update"]

"""What the ablation study trains: the exercise's ladder of variants on a base config, and the
protocol that trains them.

The ladder is chapter 11's exercise 8, applied to whatever network and data the base config names
(``dnnlab study ablation CONFIG.toml``; ``dnnlab study cifar10`` is the book's base and protocol,
:mod:`dnnlab.studies.cifar10.plan`):

=================  =========================================================================
``baseline``       the base config as given
``batchnorm``      the same with BN before each activation and on the input (as the book)
``selu``           SELU, LeCun normal, standardized inputs, dense layers only
``alpha_dropout``  the SELU net with alpha dropout, rate searched among 5/10/20/40 %
``mc_dropout``     the alpha-dropout models at inference with MC Dropout (no retraining)
``one_cycle``      1cycle: the alpha-dropout net with SGD, batch 128, 15 epochs, peak from the
                   LR finder (the book's last experiment on this exercise)
=================  =========================================================================

plus any user variant: a name and dotted overrides of the base (``[[variant]]`` tables), checked
by :func:`check_variant` as strictly as ``train --set``; the keys the study sets itself
(:data:`STUDY_SETS`) and the data keys that would change the rows every variant is measured on
are refused, with the reason. Every
trained variant's learning rate is searched (:data:`LR_GRID`, each candidate for
``search_epochs``). As in the book's solution, the alpha-dropout nets have a single
``AlphaDropout`` layer, after the last hidden layer (``model.dropout_layers = "last"``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnnlab.config import KEYS, ConfigError, RunConfig, replace

VARIANTS = ("baseline", "batchnorm", "selu", "alpha_dropout", "mc_dropout", "one_cycle")
TRAINED = ("baseline", "batchnorm", "selu", "alpha_dropout", "one_cycle")
TITLES = {"baseline": "(b) the base config", "batchnorm": "(c) + Batch Normalization",
          "selu": "(d) SELU, self-normalizing", "alpha_dropout": "(e) SELU + alpha dropout",
          "mc_dropout": "(e) MC Dropout", "one_cycle": "1cycle (SGD)"}
_SELU = {"model.activation": "selu", "model.init": "lecun_normal", "model.batch_norm": "none",
         "model.input_batch_norm": False, "model.dropout": 0.0, "data.standardize": True}
# Each rung of the ladder as overrides of the base config (the searched rates come on top).
LADDER: dict[str, dict[str, Any]] = {
    "baseline": {},
    "batchnorm": {"model.batch_norm": "before", "model.input_batch_norm": True},
    "selu": _SELU,
    "alpha_dropout": {**_SELU, "model.dropout_kind": "alpha", "model.dropout_layers": "last"},
    "one_cycle": {**_SELU, "model.dropout_kind": "alpha", "model.dropout_layers": "last",
                  "optim.name": "sgd", "optim.schedule.name": "1cycle"},
}
# The keys variant_config sets after a user variant's overrides, so a [[variant]] setting them
# would be silently overwritten: refused, with the reason.
STUDY_SETS = {"optim.lr": "the study searches each variant's learning rate (plan.LR_GRID)",
              "train.device": "--device sets it for every variant",
              "train.progress": "the study shows its own progress"}
# The data keys a variant may change. They choose or scale the training rows only (a subset of
# them, how they are drawn, standardization), so the variant is still measured on the baseline's
# validation and test rows and "vs baseline" compares like with like; the variant loads its own
# data (stages.data_for). Every other data key changes those rows.
VARIANT_DATA_KEYS = ("data.limit", "data.per_class", "data.seed", "data.standardize")
# Candidate learning rates of every search: 1e-5 ... 1e-2, log-spaced (half a decade apart).
LR_GRID = tuple(float(f"{v:.3g}") for v in np.logspace(-5, -2, 7))
DROPOUT_RATES = (0.05, 0.1, 0.2, 0.4)
# 1cycle's candidate peak rates, as multiples of the LR finder's minimum: / 10 (the rule for a
# constant rate) up to 3x. 1cycle only touches its peak briefly, after a warm-up from a tenth of
# it, so it tolerates rates past the minimum: on CIFAR-10 the largest of (0.1, 0.3, 1) won in
# both recorded runs (peaks 0.0919 and 0.0348, whose finders smoothed differently), a search at
# its edge, so the grid goes one step further. The finder's smoothed loss there is still below
# where it climbs (4x its best ends the sweep).
ONECYCLE_PEAKS = (0.1, 0.3, 1.0, 3.0)


@dataclass(frozen=True)
class Protocol:
    """Every knob of the study; the defaults are the book's protocol (exercise 8 of chapter 11)."""
    max_epochs: int = 100          # final runs: up to this many epochs ...
    patience: int = 20             # ... stopped after this many without a better val_loss
    batch_size: int = 32
    search_epochs: int = 3         # fixed budget of each learning-rate / dropout-rate search
    lr_grid: tuple[float, ...] = LR_GRID
    dropout_rates: tuple[float, ...] = DROPOUT_RATES
    onecycle_epochs: int = 15
    onecycle_batch: int = 128
    finder_steps: int = 300        # LR-finder sweep length (batches)
    mc_samples: int = 50           # MC Dropout forward passes (>= 10)
    stats_examples: int = 2000     # validation images the layer statistics are taken on
    timing_steps: int = 100        # batches per single-model timing measurement ...
    timing_repeats: int = 5        # ... taken this many times per variant, in alternation
    train_limit: int | None = None  # cap on training images (quick)
    eval_limit: int | None = None   # cap on validation and test images (quick)
    quick: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def shortened(self) -> bool:
        """True when the final runs were deliberately given less than the book's protocol."""
        return self.max_epochs < 100 or self.patience < 20 or self.onecycle_epochs < 15


FULL = Protocol()
QUICK = Protocol(max_epochs=3, patience=2, search_epochs=1, onecycle_epochs=2, finder_steps=100,
                 mc_samples=10, stats_examples=300, timing_steps=40, timing_repeats=5,
                 train_limit=1200, eval_limit=400, quick=True)


def protocol(quick: bool = False, **changes) -> Protocol:
    """The full or quick protocol with ``changes`` (None values are ignored)."""
    base = QUICK if quick else FULL
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(base, **changes)


def variant_config(base: RunConfig, variant: str, proto: Protocol, *, lr: float = 1e-3,
                   dropout: float = 0.1, max_lr: float | None = None, device: str = "auto",
                   overrides: dict[str, Any] | None = None) -> RunConfig:
    """The config one variant is trained with: ``base`` with the variant's rung (``LADDER``) or a
    user variant's ``overrides``, the protocol's training and the searched ``lr`` / ``dropout`` /
    ``max_lr``."""
    if overrides is None and variant not in TRAINED:
        raise ValueError(f"unknown variant {variant!r}; one of {TRAINED}")
    changes: dict[str, Any] = {
        "name": f"{base.name}-{variant}", "train.epochs": proto.max_epochs,
        "train.batch_size": proto.batch_size, "train.patience": proto.patience,
        "train.monitor": "val_loss", "train.restore_best": True,
        **(LADDER[variant] if overrides is None else overrides),      # a user's override wins
        "optim.lr": lr, "train.device": device, "train.progress": False}   # the searched rate
    if variant in ("alpha_dropout", "one_cycle") and overrides is None:
        changes["model.dropout"] = dropout
    if variant == "one_cycle" and overrides is None:
        peak = max_lr if max_lr is not None else lr
        # The book trains 1cycle for a fixed 15 epochs: patience = epochs never stops it early
        # (a None would not survive config.replace), and the best epoch is kept all the same.
        changes.update({"optim.lr": peak, "optim.schedule.max_lr": peak,
                        "train.epochs": proto.onecycle_epochs,
                        "train.batch_size": proto.onecycle_batch,
                        "train.patience": proto.onecycle_epochs})
    return replace(base, **changes)


def check_variant(base: RunConfig, name: str, overrides: dict[str, Any]) -> RunConfig:
    """A user variant's config, its overrides checked as ``--set`` checks them (bounds, choices,
    consistency), before the study's own settings could hide them; refused with the reason when
    an override would be overwritten or would change the rows the variants are compared on."""
    for k in overrides:
        spec = KEYS.get(k, KEYS.get(k.split(".")[0]))     # "tune.trials": a key of the tune table
        if k in STUDY_SETS:
            raise ConfigError(f"[[variant]] {name!r} sets {k}, which the study sets itself "
                              f"({STUDY_SETS[k]}); leave it out")
        if spec is not None and spec.data and k not in VARIANT_DATA_KEYS:
            raise ConfigError(f"[[variant]] {name!r} sets {k}, which would change the validation "
                              "and test rows every variant is compared on; study other data with "
                              "a config of its own (a variant may set "
                              f"{', '.join(VARIANT_DATA_KEYS)})")
        if spec is not None and not spec.trains:
            raise ConfigError(f"[[variant]] {name!r} sets {k}, which changes nothing the study "
                              "trains; leave it out")
    try:
        own = replace(base, **overrides)
        cfg = variant_config(base, name, FULL, overrides=overrides)
    except ConfigError as e:
        raise ConfigError(f"[[variant]] {name!r}: {e}") from None
    if own == base:
        raise ConfigError(f"[[variant]] {name!r} sets only what the base config already has; it "
                          "would train the baseline again")
    if "data.seed" in overrides and own.data.per_class is None:
        raise ConfigError(f"[[variant]] {name!r} sets data.seed, which only draws data.per_class "
                          "rows; without data.per_class it changes nothing")
    return cfg


def from_config(cfg: RunConfig, quick: bool = False, **changes) -> Protocol:
    """The protocol for a user's base config: its epochs, patience and batch size for the final
    runs (``--quick``: the quick protocol's sizes), the exercise's searches."""
    own = {} if quick else {"max_epochs": cfg.train.epochs, "patience": cfg.train.patience
                            if cfg.train.patience is not None else cfg.train.epochs,
                            "batch_size": cfg.train.batch_size}
    return protocol(quick, **{**own, **changes})

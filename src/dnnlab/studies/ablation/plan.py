"""What the CIFAR-10 study trains: the protocol and one config per variant of the exercise.

The protocol is the book's solution to exercise 8 of chapter 11: 45,000 training images (the
first 5,000 are the validation set), batch 32, up to 100 epochs, early stopping on the validation
loss with patience 20 and the best weights restored; raw pixels (scaled to [0, 1]) for the He/ELU
nets, standardized inputs for the SELU nets. ``--quick`` keeps every stage of the pipeline and
shrinks the data and the epochs so that CI can check the pipeline and the report in a minute.

The variants, in the exercise's order (the keys of results.json):

=================  =========================================================================
``baseline``       (a-b) 20 x 100 dense, He normal, ELU, Nadam
``batchnorm``      (c) the same with BN before each activation and on the input (as the book)
``selu``           (d) SELU, LeCun normal, standardized inputs, dense layers only
``alpha_dropout``  (e) the SELU net with alpha dropout, rate searched among 5/10/20/40 %
``mc_dropout``     (e) the alpha-dropout models at inference with MC Dropout (no retraining)
``one_cycle``      1cycle: the alpha-dropout net with SGD, batch 128, 15 epochs, peak from the
                   LR finder (the book's last experiment on this exercise)
=================  =========================================================================

As in the book's solution, the alpha-dropout nets have a single ``AlphaDropout`` layer, after the
last hidden layer (``model.dropout_layers = "last"``), not one after every hidden layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dnnlab.config import RunConfig, from_dict

VARIANTS = ("baseline", "batchnorm", "selu", "alpha_dropout", "mc_dropout", "one_cycle")
TRAINED = ("baseline", "batchnorm", "selu", "alpha_dropout", "one_cycle")
TITLES = {"baseline": "(b) He + ELU + Nadam", "batchnorm": "(c) + Batch Normalization",
          "selu": "(d) SELU, self-normalizing", "alpha_dropout": "(e) SELU + alpha dropout",
          "mc_dropout": "(e) MC Dropout", "one_cycle": "1cycle (SGD)"}
# The book's validation accuracy (its single runs), as (low, high).
BOOK = {"baseline": (0.476, 0.476), "batchnorm": (0.540, 0.540), "selu": (0.479, 0.514),
        "alpha_dropout": (0.489, 0.508), "mc_dropout": (0.489, 0.509),
        "one_cycle": (0.520, 0.528)}
# Candidate learning rates of every search: 1e-5 ... 1e-2, log-spaced (half a decade apart).
LR_GRID = tuple(float(f"{v:.3g}") for v in np.logspace(-5, -2, 7))
DROPOUT_RATES = (0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class Protocol:
    """Every knob of the study; the defaults are the book's protocol."""
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


# Protocol fields that only one stage reads: changing them redoes that stage alone on --resume;
# every other field shapes the training, so changing it redoes everything.
STAGE_ONLY = {"mc_dropout": ("mc_samples",), "selu_stats": ("stats_examples",),
              "timing": ("timing_steps", "timing_repeats")}


# Stages whose method changed since runs were first saved: a resumed run redoes them.
# one_cycle 2: the peak rate is searched (finder minimum / 10, / 3, / 1), not taken as min / 10.
# alpha_dropout 2, one_cycle 3 (and mc_dropout 2, timing 2, which use those models): one alpha
# dropout layer before the output, as in the book, instead of one after every hidden layer.
STAGE_VERSIONS = {"alpha_dropout": 2, "one_cycle": 3, "mc_dropout": 2, "timing": 2}


def stage_fingerprint(proto: Protocol, stage: str) -> dict:
    """The protocol fields that ``stage``'s result depends on."""
    own = set(STAGE_ONLY.get(stage, ()))
    skip = {k for keys in STAGE_ONLY.values() for k in keys} - own
    return {k: v for k, v in proto.to_dict().items() if k not in skip}


FULL = Protocol()
QUICK = Protocol(max_epochs=3, patience=2, search_epochs=1, onecycle_epochs=2, finder_steps=100,
                 mc_samples=10, stats_examples=300, timing_steps=10, timing_repeats=2,
                 train_limit=1200, eval_limit=400, quick=True)


def protocol(quick: bool = False, **changes) -> Protocol:
    """The full or quick protocol with ``changes`` (None values are ignored)."""
    base = QUICK if quick else FULL
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(base, **changes)


def _model(variant: str, dropout: float) -> dict:
    net = {"depth": 20, "width": 100}
    if variant == "baseline":
        return {**net, "activation": "elu", "init": "he_normal"}
    if variant == "batchnorm":
        return {**net, "activation": "elu", "init": "he_normal", "batch_norm": "before",
                "input_batch_norm": True}
    selu = {**net, "activation": "selu", "init": "lecun_normal"}
    if variant == "selu":
        return selu
    return {**selu, "dropout": dropout, "dropout_kind": "alpha", "dropout_layers": "last"}


def variant_config(variant: str, proto: Protocol, *, lr: float = 1e-3, dropout: float = 0.1,
                   max_lr: float | None = None, device: str = "auto",
                   data_dir: str | None = None) -> RunConfig:
    """The config one variant is trained with (``lr`` / ``dropout`` / ``max_lr`` once searched)."""
    if variant not in TRAINED:
        raise ValueError(f"unknown variant {variant!r}; one of {TRAINED}")
    standardize = variant in ("selu", "alpha_dropout", "one_cycle")
    raw = {
        "name": f"cifar10-{variant}",
        "data": {"name": "cifar10", "standardize": standardize},
        "model": _model(variant, dropout),
        "optim": {"name": "nadam", "lr": lr},
        "train": {"epochs": proto.max_epochs, "batch_size": proto.batch_size,
                  "patience": proto.patience, "monitor": "val_loss", "restore_best": True,
                  "device": device, "progress": False},
    }
    if data_dir is not None:
        raw["data"]["data_dir"] = str(data_dir)
    if variant == "one_cycle":
        peak = max_lr if max_lr is not None else lr
        raw["optim"] = {"name": "sgd", "lr": peak,
                        "schedule": {"name": "1cycle", "max_lr": peak}}
        # The book trains 1cycle for a fixed 15 epochs: patience = epochs never stops it early
        # (a None would not survive config.replace), and the best epoch is kept all the same.
        raw["train"].update(epochs=proto.onecycle_epochs, batch_size=proto.onecycle_batch,
                            patience=proto.onecycle_epochs)
    return from_dict(raw)

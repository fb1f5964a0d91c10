"""The transfer study's plan: the book's figures, the search spaces, the work sizes (``FULL``, ``QUICK``)
and the exercise's first network."""


from dataclasses import dataclass

from dnnlab.config import RunConfig, replace

DIGITS_04 = [0, 1, 2, 3, 4]
DIGITS_59 = [5, 6, 7, 8, 9]

# The book's results (1st edition, chapter 11 exercises 8-9, test accuracy in %, single runs).
BOOK = {"digits04_default": 97.26, "digits04_tuned": 98.91, "digits04_batchnorm": 99.42,
        "digits04_dropout": 98.62, "frozen5": 64.02, "frozen5_cached": 61.16, "frozen4": 69.10,
        "unfreeze2": 78.09, "unfreeze_all": 91.34, "scratch": 84.82}
BOOK_SECONDS = {"frozen5": 1.9, "frozen5_cached": 1.1}
LABELS = {"digits04_default": "0-4: 5x100 He/ELU, Adam, early stopping",
          "digits04_tuned": "0-4: tuned by cross-validation",
          "digits04_batchnorm": "0-4: tuned + batch norm",
          "digits04_dropout": "0-4: tuned + dropout",
          "frozen5": "5-9: 5 frozen layers + new head",
          "frozen5_cached": "5-9: same, frozen outputs cached",
          "frozen4": "5-9: 4 frozen layers + new head",
          "unfreeze2": "5-9: top two unfrozen",
          "unfreeze_all": "5-9: all unfrozen",
          "scratch": "5-9: same net from scratch"}
VARIANTS_04 = ("digits04_default", "digits04_tuned", "digits04_batchnorm", "digits04_dropout")
PRETRAINED = ("default", "tuned", "batchnorm", "dropout")

# What the cross-validated search explores (the book searched neurons, learning rate, batch size
# and activation; the optimizer is ours to add).
TUNE_SPACE = {"model.width": {"low": 50, "high": 300, "log": True},
              "model.activation": ["elu", "relu", "leaky_relu", "selu"],
              "optim.name": ["adam", "nadam"],
              "optim.lr": {"low": 2e-4, "high": 5e-3, "log": True},
              "train.batch_size": [32, 64, 128, 256]}
HEAD_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
HEAD_OPTIMIZERS = ("adam", "nadam")
SCRATCH_LRS = (3e-4, 1e-3, 3e-3)
FINETUNE_FACTORS = (0.03, 0.1, 0.3)   # unfrozen layers continue at a fraction of the head's rate
DROPOUT = 0.2


@dataclass(frozen=True)
class Plan:
    """How much work each step gets: ``FULL`` for the study, ``QUICK`` for CI (< 3 minutes)."""
    epochs04: int = 100
    patience04: int = 20
    limit04: int | None = None         # cap on the 0-4 training images
    checkpoint_every: int = 5
    trials: int = 20
    folds: int = 3
    tune_epochs: int = 30
    tune_patience: int = 4
    epochs59: int = 500
    patience59: int = 20
    per_class: int = 100
    valid_per_class: int = 30


FULL = Plan()
QUICK = Plan(epochs04=3, patience04=2, limit04=2000, checkpoint_every=2, trials=3, folds=2,
             tune_epochs=2, tune_patience=2, epochs59=20, patience59=5)


def default_config(plan: Plan, device: str = "auto", data_dir: str | None = None) -> RunConfig:
    """The exercise's first network: 5 x 100, He init, ELU, Adam, early stopping on val loss."""
    return replace(RunConfig(), **{
        "name": "digits04_default", "data.name": "mnist", "data.classes": DIGITS_04,
        "data.limit": plan.limit04, "data.data_dir": data_dir,
        "model.depth": 5, "model.width": 100, "model.init": "he_normal", "model.activation": "elu",
        "optim.name": "adam", "optim.lr": 1e-3,
        "train.epochs": plan.epochs04, "train.patience": plan.patience04, "train.batch_size": 32,
        "train.monitor": "val_loss", "train.restore_best": True,
        "train.checkpoint_every": plan.checkpoint_every, "train.device": device,
        "train.progress": False})


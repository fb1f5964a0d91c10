"""Run configuration: dataclasses loaded from TOML, validated before any work starts.

A run is described by one ``RunConfig`` with five sections, mirrored in the TOML file::

    [data]      which dataset, which classes, how many images, standardization
    [model]     the MLP: depth, width, activation, init, batch norm, dropout, penalties
    [optim]     optimizer, learning rate, schedule, gradient clipping
    [train]     epochs, batch size, seed, early stopping, checkpoints, device
    [tune]      the Optuna search space (only ``dnnlab tune`` reads it)

Unknown keys and values outside the allowed set fail with one line naming the key and the
allowed values. ``--set section.key=value`` overrides use TOML literal syntax for the value.

Every key is declared once, next to its dataclass field (:func:`key`): its type, default, bounds
or choices, help text, and whether it may differ between the K models of one stack, may change
on resume, or describes the data. :data:`KEYS` collects them; everything that names keys derives
from it: :data:`PER_MODEL_KEYS`, :data:`RESUME_KEYS`, :data:`DATA_KEYS`, :data:`OPTIM_HYPERS`,
:func:`shape_of`, :func:`stack_signature`/:func:`group_key`, the fingerprint, the range errors
and :func:`describe_keys` for the ``--help`` texts.

Validation happens when a config object is *built* (``__post_init__`` of every section), so a
config made in Python (``RunConfig(model=ModelConfig(depth=-3))``) is checked by the same rules
as one read from TOML: every float finite, every value within its key's bounds, every choice
allowed, the settings that break a run together refused (:func:`_check_consistency`), and the
model plus its data small enough for the machine's memory (:func:`check_memory`).

A run's *fingerprint* (:func:`fingerprint`) hashes every key a resume may not change.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.io import check_path, shown

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "rrelu", "elu", "selu", "gelu",
               "swish", "silu", "mish", "softplus", "linear")
INITIALIZERS = ("glorot_normal", "glorot_uniform", "glorot_truncated_normal",
                "he_normal", "he_uniform", "he_truncated_normal",
                "lecun_normal", "lecun_uniform", "lecun_truncated_normal",
                "normal", "constant", "torch_default")
# The names optim.name accepts: each is one record in dnnlab.optim.flat.OPTIMIZERS (the rule, its
# state, its flags), which this torch-free layer cannot import; tests/test_optim_flat.py checks
# that the two agree.
OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw", "ftrl")
SCHEDULES = ("none", "power", "exponential", "piecewise", "performance", "1cycle")
# The datasets by name, with the features and images of each, for the memory estimate and the
# checks of a run's files (synthetic: the generator's default; a file is unknown until read:
# counted as nothing, so only what is known is refused). The one list of dataset names: the data
# layer's registry holds how to find each (dnnlab.data.registry, checked against this at import).
FILE_DATASET = "file"   # data.name of the user's own .npz, .csv or .parquet (data.path)
DATASET_SHAPES: dict[str, tuple[int, int]] = {"mnist": (784, 70000), "fashion-mnist": (784, 70000),
                                              "cifar10": (3072, 60000), "synthetic": (20, 1400),
                                              FILE_DATASET: (1, 0)}
DATASETS = tuple(DATASET_SHAPES)
FIXED_SHAPE_DATASETS = ("mnist", "fashion-mnist", "cifar10")   # their features never change
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")

INT_LIMIT = 2**53            # no integer setting needs more; huge ones fail here, not deep in torch
MAX_NESTING = 16             # TOML / --set values nest no deeper (deeper is an attack or a typo)
# The highest learning rate (optim.lr, schedule values, 1cycle's max_lr): the lr-finder's own
# sweep ends at 10, and past it every rule here diverges on standardized inputs in a step or two.
MAX_LR = 10.0
# The heaviest penalty weight (model.l1/l2, optim.weight_decay): at 1 a penalty already outweighs
# the cross-entropy (about 2.3 at the start) for weights of unit size, and with a rate r an L2
# step scales a weight by (1 - 2 * r * l2), which flips its sign once r * l2 > 1: more never
# regularizes, it only zeroes or blows up the weights.
MAX_PENALTY = 1.0
# The largest initial weight std / constant / bias and activation slope: float32 overflows at
# 3.4e38, and a layer of width 100 multiplies a signal by about value * 10 (the chapter's own
# saturation demo uses std 1 and bias -5), so 100 overflows within ~20 layers already.
MAX_INIT = 100.0


@dataclass(frozen=True)
class Key:
    """One config key, as declared next to its dataclass field with :func:`key`.

    ``lo``/``hi`` bound a number (every item of a list), open or closed on each side; ``choices``
    lists the allowed strings. Flags: ``per_model`` (may differ between the K models of one
    stack; every other key shapes the stack), ``resume`` (a resume may change it), ``data``
    (describes the data: every ``data.*`` key), ``trains`` (False for ``name`` and ``tune``, which
    do not change what a run computes).
    """
    name: str = ""
    type: Any = None
    default: Any = None
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None
    per_model: bool = False
    resume: bool = False
    data: bool = False
    trains: bool = True

    def span(self) -> str:
        """The allowed values in words, e.g. ``> 0``, ``in [0, 1)``, ``one of: a, b``."""
        if self.choices is not None:
            return f"one of: {', '.join(self.choices)}"
        lo, hi = _number(self.lo), _number(self.hi)
        if self.lo is None and self.hi is None:
            return ""
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def check(self, value: Any) -> None:
        """Refuse a (coerced) value outside the choices or bounds, naming the key and the bound."""
        if value is None:
            return
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name} = {shown(value)} is not allowed; choose {self.span()}")
        if self.lo is None and self.hi is None:
            return
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            low = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
            high = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
            if low or high:
                name = f"{self.name}[{i}]" if isinstance(value, list) else self.name
                raise ConfigError(f"{name} = {v!r} is out of range; it must be {self.span()}")


def _number(x: float | None) -> str:
    """A bound as a user would write it: 1000000, 0.999, 1e-07."""
    if x is not None and float(x).is_integer() and abs(x) < 1e16:
        return str(int(x))
    return f"{x:g}" if x is not None else ""


def key(default: Any, *, help: str, lo: float | None = None, hi: float | None = None,
        lo_open: bool = False, hi_open: bool = False, choices: tuple[str, ...] | None = None,
        per_model: bool = False, resume: bool = False, trains: bool = True) -> Any:
    """A dataclass field declaring one config key (see :class:`Key`); name, type and the data
    flag are filled in when :data:`KEYS` is built from the dataclasses."""
    spec = Key(default=default, help=help, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open,
               choices=choices, per_model=per_model, resume=resume, trains=trains)
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(copy.deepcopy, default),
                     metadata={"key": spec})
    return field(default=default, metadata={"key": spec})


@dataclass
class DataConfig:
    """Which images, and how they are prepared (the data layer does the work)."""
    name: str = key("mnist", choices=DATASETS,
                    help="the dataset; 'file' reads data.path, 'synthetic' is generated")
    path: str | None = key(None, help="the data file for name = 'file' (.npz with x_train, "
                           "y_train[, x_test, y_test], .csv or .parquet with a label column)")
    label: str | None = key(None, help="the label column of a .csv or .parquet data.path "
                            "(default: the last column)")
    classes: list[int] | None = key(None, lo=0, hi=10**6, help="keep only these labels, "
                                    "relabelled 0..n-1 in order (default: all)")
    per_class: int | None = key(None, lo=1, hi=10**8, help="k training images per class, drawn "
                                "with data.seed (default: all)")
    valid_size: int | float | None = key(None, lo=0, hi=10**8, help="rows held out for "
                                         "validation, the first of the training split of the kept "
                                         "classes: a count, or a fraction in (0, 1) of them "
                                         "(default: the book's 5000 for the built-in datasets, "
                                         "0.2 for a file)")
    test_size: int | float | None = key(None, lo=0, hi=10**8, help="rows of a file without a "
                                        "test split of its own that become its test split: a "
                                        "count, or a fraction in (0, 1) (default 0.2)")
    standardize: bool = key(False, help="standardize features with the training split's statistics")
    limit: int | None = key(None, lo=1, hi=10**9, help="cap on training images, for quick runs "
                            "(default: no cap)")
    data_dir: str | None = key(None, resume=True, help="folder of the dataset files (default: "
                               "$DNNLAB_DATA_DIR, the cache, the package, a download)")
    seed: int = key(0, lo=0, hi=2**32 - 1, help="seed of data.per_class's draw")

    def __post_init__(self) -> None:
        _validate(self, "data")


@dataclass
class ModelConfig:
    """A deep MLP. ``hidden`` overrides ``depth`` x ``width`` when given."""
    depth: int = key(5, lo=0, hi=1000, help="hidden layers (unless model.hidden is given)")
    width: int = key(100, lo=1, hi=2**20, help="units of each hidden layer (unless model.hidden)")
    hidden: list[int] | None = key(None, lo=1, hi=2**20, help="the hidden layers' widths, "
                                   "overriding depth x width")
    activation: str = key("elu", choices=ACTIVATIONS, help="the hidden layers' activation")
    activation_param: float | None = key(None, lo=-MAX_INIT, hi=MAX_INIT, help="leaky_relu "
                                         "slope, elu alpha (both >= 0), prelu initial slope "
                                         "(default: Keras')")
    init: str = key("he_normal", choices=INITIALIZERS, per_model=True,
                    help="the kernels' initializer")
    init_value: float = key(0.0, lo=-MAX_INIT, hi=MAX_INIT, per_model=True, help="the constant "
                            "of init = 'constant'; the std of init = 'normal' (then > 0)")
    bias_init: str = key("zeros", choices=("zeros", "constant"), per_model=True,
                         help="the biases' initializer")
    bias_value: float = key(0.0, lo=-MAX_INIT, hi=MAX_INIT, per_model=True,
                            help="the biases' value for bias_init = 'constant'")
    batch_norm: str = key("none", choices=("none", "before", "after"),
                          help="batch norm on hidden layers, before or after the activation")
    input_batch_norm: bool = key(False, help="batch norm on the inputs")
    bn_momentum: float = key(0.99, lo=0, hi=1, hi_open=True, help="Keras meaning: running = "
                             "m * running + (1 - m) * batch (at 1 the statistics never move)")
    bn_epsilon: float = key(1e-3, lo=0, hi=1, help="added to the batch variance (Keras' 1e-3; "
                            "> 0 when batch norm is used)")
    dropout: float = key(0.0, lo=0, hi=0.999, per_model=True, help="dropout rate of hidden layers")
    dropout_kind: str = key("dropout", choices=("dropout", "alpha"),
                            help="plain or alpha dropout (for selu)")
    dropout_layers: str = key("all", choices=("all", "last"), help="dropout after every hidden "
                              "layer, or only before the output")
    input_dropout: float = key(0.0, lo=0, hi=0.999, per_model=True, help="dropout rate of the inputs")
    max_norm: float | None = key(None, lo=0, lo_open=True, per_model=True, help="max-norm "
                                 "constraint on each unit's incoming weights (default: off)")
    l1: float = key(0.0, lo=0, hi=MAX_PENALTY, per_model=True,
                    help="Keras L1: adds l1 * sum(|w|) to the loss")
    l2: float = key(0.0, lo=0, hi=MAX_PENALTY, per_model=True,
                    help="Keras L2: adds l2 * sum(w**2) to the loss")
    output_activation: str = key("softmax", choices=("softmax",),
                                 help="softmax (logits + cross-entropy): the classifier")

    def __post_init__(self) -> None:
        _validate(self, "model")


@dataclass
class ScheduleConfig:
    name: str = key("none", choices=SCHEDULES, per_model=True, help="the learning-rate schedule")
    decay_steps: int = key(10, lo=1, hi=10**9, per_model=True, help="power: lr0 / (1 + t/s)**c; "
                           "exponential: lr0 * 0.1**(t/s), t in epochs or steps (schedule.unit)")
    power: float = key(1.0, lo=0, hi=10, per_model=True, help="c of the power schedule "
                       "(past 10 the rate is gone within a few decay_steps)")
    boundaries: list[int] = key([], lo=0, hi=10**7, per_model=True,
                                help="piecewise: epochs where the rate changes")
    values: list[float] = key([], lo=0, lo_open=True, hi=MAX_LR, per_model=True,
                              help="piecewise: len(boundaries) + 1 rates")
    factor: float = key(0.5, lo=0, lo_open=True, hi=1, per_model=True,
                        help="performance: multiply the rate by this on a plateau")
    patience: int = key(5, lo=0, hi=10**7, per_model=True,
                        help="performance: epochs without improvement before a cut")
    max_lr: float | None = key(None, lo=0, lo_open=True, hi=MAX_LR, per_model=True,
                               help="1cycle peak rate (default: optim.lr)")
    pct_start: float = key(0.45, lo=0.01, hi=0.99, per_model=True,
                           help="1cycle: fraction of steps going up (the book's 0.45)")
    div_factor: float = key(10.0, lo=1, hi=1e6, per_model=True, help="1cycle: starts at "
                            "max_lr / div_factor (below 1 it would start above its peak)")
    final_div_factor: float = key(1000.0, lo=1, hi=1e9, per_model=True,
                                  help="1cycle: ends at start / final_div_factor")
    unit: str = key("epoch", choices=("epoch", "step"), per_model=True,
                    help="when power and exponential advance")

    def __post_init__(self) -> None:
        _validate(self, "optim.schedule")


@dataclass
class OptimConfig:
    name: str = key("nadam", choices=OPTIMIZERS, help="the optimizer")
    lr: float = key(1e-3, lo=0, lo_open=True, hi=MAX_LR, per_model=True,
                    help="the learning rate (the schedule's start)")
    momentum: float = key(0.0, lo=0, hi=1, hi_open=True, per_model=True,
                          help="sgd and rmsprop momentum")
    nesterov: bool = key(False, help="sgd: Nesterov momentum (needs momentum > 0)")
    beta1: float = key(0.9, lo=0, hi=1, hi_open=True, per_model=True,
                       help="adam family: decay of the first moment")
    beta2: float = key(0.999, lo=0, hi=1, hi_open=True, per_model=True,
                       help="adam family: decay of the second moment")
    rho: float = key(0.9, lo=0, hi=1, hi_open=True, per_model=True,
                     help="rmsprop: decay of the squared-gradient average")
    eps: float = key(1e-7, lo=0, lo_open=True, per_model=True, help="added to the divisor of "
                     "adagrad, rmsprop and the adam family (Keras' 1e-7)")
    weight_decay: float = key(0.0, lo=0, hi=MAX_PENALTY, per_model=True, help="adamw: decoupled "
                              "decay; other rules: added to the gradient as torch does")
    # ftrl's shrinkage is a threshold on the accumulated gradients and a term of the divisor: a
    # large one zeroes weights (the point of L1) but never divides by 0 or overflows
    l1: float = key(0.0, lo=0, per_model=True, help="ftrl: L1 shrinkage")
    l2: float = key(0.0, lo=0, per_model=True, help="ftrl: L2 shrinkage")
    # The ftrl update is specialized on one power for the whole stack (flat.FlatOptimizer), so
    # lr_power shapes a stack; -1 is already a 1/n decay of the per-coordinate rate.
    lr_power: float = key(-0.5, lo=-1, hi=0, help="ftrl: the accumulator's power (Keras' -0.5)")
    initial_accumulator: float = key(0.1, lo=0, hi=1e6, per_model=True,
                                     help="ftrl and adagrad: the accumulator's start (ftrl: > 0)")
    clip_value: float | None = key(None, lo=0, lo_open=True, per_model=True,
                                   help="Keras clipvalue: clip each gradient component (default: off)")
    clip_norm: float | None = key(None, lo=0, lo_open=True, per_model=True,
                                  help="Keras clipnorm: clip each parameter tensor's norm (default: off)")
    global_clip_norm: float | None = key(None, lo=0, lo_open=True, per_model=True,
                                         help="Keras global_clipnorm: clip all gradients' norm "
                                         "together (default: off)")
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        _validate(self, "optim")


@dataclass
class TrainConfig:
    epochs: int = key(20, lo=1, hi=10**6, resume=True, help="epochs to train")
    batch_size: int = key(32, lo=1, hi=10**8, help="training batch size (images)")
    seed: int = key(42, lo=0, hi=2**32 - 1, help="seed of the initial weights and batch order")
    device: str = key("auto", choices=("auto", "cpu", "cuda"), resume=True,
                      help="where to train; auto = CUDA when present")
    monitor: str = key("val_loss", choices=MONITORS, help="the metric early stopping and the "
                       "best checkpoint follow (val_* need data.valid_size > 0)")
    patience: int | None = key(10, lo=0, hi=10**6, per_model=True, resume=True,
                               help="early stopping after this many epochs without improvement; "
                               "'none' = off")
    min_delta: float = key(0.0, lo=0, per_model=True,
                           help="the least change of the monitor counted as an improvement")
    restore_best: bool = key(True, help="end with the best epoch's weights")
    checkpoint_every: int = key(5, lo=0, hi=10**6, resume=True,
                                help="epochs between checkpoints; 0 = only best and final")
    eval_batch_size: int = key(4096, lo=1, hi=10**8, resume=True, help="evaluation batch size")
    deterministic: bool = key(False, help="bit-identical reruns: torch's deterministic "
                              "algorithms, and the thread count fixed for the run (the adaptive "
                              "policy changes it with the machine's load, and a product's "
                              "rounding with it)")
    fast: bool = key(True, help="the stacked MLP's lean step when the model allows it")
    progress: bool = key(True, resume=True, help="print a progress line per epoch")
    record_every: int = key(1, lo=0, hi=10**6, resume=True,
                            help="epochs between layer records for the doctor; 0 = off")
    tensorboard: bool = key(False, resume=True, help="also write TensorBoard event files "
                            "(RUN_DIR/tensorboard)")
    histogram_every: int = key(1, lo=1, hi=10**6, resume=True,
                               help="epochs between TensorBoard's per-layer histograms")

    def __post_init__(self) -> None:
        _validate(self, "train")


@dataclass
class RunConfig:
    name: str = key("run", resume=True, trains=False, help="the run's name (its folder's prefix)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: dict[str, Any] = key({}, resume=True, trains=False,
                               help="the Optuna search space (only dnnlab tune reads it)")

    def __post_init__(self) -> None:
        _validate(self, "")
        _check_consistency(self)

    def to_dict(self) -> dict[str, Any]:
        """A TOML-ready dict: ``None`` is left out where it is the default, else written "none"."""
        return typing.cast(dict[str, Any], _to_raw(self))


def _walk(cls: type, prefix: str) -> dict[str, Key]:
    """The keys of section ``cls`` and its subsections, dotted name -> :class:`Key`."""
    out: dict[str, Key] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name, tp = f"{prefix}.{f.name}" if prefix else f.name, hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(_walk(tp, name))
            continue
        if "key" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with config.key()")
        out[name] = dataclasses.replace(f.metadata["key"], name=name, type=tp,
                                        data=name.startswith("data."))
    return out


KEYS: dict[str, Key] = _walk(RunConfig, "")
"""Every config key, dotted name -> :class:`Key`: the one table the rest is derived from."""
PER_MODEL_KEYS: frozenset[str] = frozenset(k for k, s in KEYS.items() if s.per_model)
"""Keys that may differ between the K models of one stack (plus each model's seed)."""
RESUME_KEYS: tuple[str, ...] = tuple(k for k, s in KEYS.items() if s.resume)
"""Keys a resume may change (applied and written to config.toml); the others are fingerprinted."""
DATA_KEYS: tuple[str, ...] = tuple(k for k, s in KEYS.items() if s.data)
# The flat optimizer's (K, 1) columns: OptimConfig's plain numbers. The clipping thresholds (optional)
# are applied by flat.clip_, not by the update rule.
OPTIM_HYPERS: tuple[str, ...] = tuple(k.split(".", 1)[1] for k, s in KEYS.items()
                                      if k.count(".") == 1 and k.startswith("optim.")
                                      and s.type is float)
# hidden_sizes folds model.depth, model.width and model.hidden into one list of widths
_FOLDED = ("model.depth", "model.width", "model.hidden")
# The model keys that shape a stacked model (see shape_of), "model." left off
SHAPE_KEYS: tuple[str, ...] = tuple(k.split(".", 1)[1] for k, s in KEYS.items()
                                    if k.startswith("model.") and not s.per_model
                                    and k not in _FOLDED)


def hidden_sizes(cfg: ModelConfig) -> list[int]:
    """The widths of the hidden layers: ``cfg.hidden`` if given, else ``depth`` x ``width``."""
    return list(cfg.hidden) if cfg.hidden is not None else [cfg.width] * cfg.depth


def shape_of(cfg: ModelConfig) -> dict[str, Any]:
    """What must be equal for two model configs to be stacked (the model keys that are not
    per-model; depth x width and an equal ``hidden`` list are one shape)."""
    return {"hidden": hidden_sizes(cfg), **{k: getattr(cfg, k) for k in SHAPE_KEYS}}


def get(cfg: RunConfig, dotted: str) -> Any:
    """The value of a dotted key, e.g. ``get(cfg, "optim.schedule.name")``."""
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def stack_signature(cfg: RunConfig) -> dict[str, Any]:
    """Every key that is not per-model (data keys included), as dotted key -> value: what two
    configs must share to train in one stack. depth x width and ``hidden`` count as one shape."""
    out = {k: get(cfg, k) for k, s in KEYS.items()
           if s.trains and not s.per_model and k not in _FOLDED}
    out["model.hidden"] = hidden_sizes(cfg.model)
    return out


def group_key(cfg: RunConfig) -> str:
    """A short hash of :func:`stack_signature`: configs with one group key train in one stack."""
    text = json.dumps(stack_signature(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def describe_keys(keep: typing.Callable[[Key], bool] = lambda k: True, detail: bool = False) -> str:
    """The keys ``keep`` selects, for help texts: their names grouped by section (one line each),
    or with ``detail`` one line per key: name, type, default, allowed values, what it does."""
    keys = [s for s in KEYS.values() if keep(s)]
    if detail:
        lines = []
        for s in keys:
            default = NONE if s.default is None else json.dumps(s.default)
            span = f"; {s.span()}" if s.span() else ""
            lines.append(f"  {s.name} = {default}{span}: {s.help}")
        return "\n".join(lines)
    sections: dict[str, list[str]] = {}
    for s in keys:
        head, _, tail = s.name.rpartition(".")
        sections.setdefault(head, []).append(tail)
    return "\n".join(textwrap.fill(f"{head or '(top)'}: {', '.join(names)}", width=100,
                                   initial_indent="  ", subsequent_indent="      ")
                     for head, names in sections.items())


NONE = "none"   # how an optional value that is switched off is written in TOML (which has no null)


def _to_raw(obj: Any) -> Any:
    if not dataclasses.is_dataclass(obj):
        return copy.deepcopy(obj)
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            if f.default is not None:          # e.g. train.patience = "none": early stopping off
                out[f.name] = NONE
            continue
        out[f.name] = _to_raw(value)
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == NONE and str not in args):
            return None
        errors = []
        for a in args:
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item)}, got {shown(value)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {shown(value)}")
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {shown(value)}: expected a finite number (nan and inf are not "
                              "allowed)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
        if abs(value) > INT_LIMIT:
            raise ConfigError(f"{key} = {value}: too large (at most {INT_LIMIT})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {shown(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {shown(value)}")
        return value
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# Top-level tables that one command reads beside the run config (and strips before building it);
# anywhere else they are unknown keys, and the error says which command they belong to.
VARIANT_TABLE = "variant"      # [[variant]]: the ablation study's user variants
COMMAND_TABLES = {VARIANT_TABLE: "dnnlab study ablation"}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build section ``cls`` from a raw TOML table: unknown keys fail here, values are checked
    by the section's ``__post_init__`` (:func:`_validate`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table like [{prefix}], got {shown(raw)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        owner = COMMAND_TABLES.get(unknown[0]) if not prefix else None
        hint = (f" ([[{unknown[0]}]] tables are read by {owner} only: run that, or take them "
                "out)" if owner else "")
        raise ConfigError(f"unknown key '{_join(prefix, unknown[0])}' in {where}; "
                          f"allowed: {', '.join(fields)}{hint}")
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        nested = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        kwargs[name] = _build(tp, value, _join(prefix, name)) if nested else value
    return cls(**kwargs)


def _validate(obj: Any, prefix: str) -> None:
    """Check (and coerce in place: ints where floats are expected) every field of a section.

    The one place the rules of :data:`KEYS` are applied, whether the section came
    from TOML, ``--set`` or Python code. A nested section given as a dict is built from it.
    """
    section: type = type(obj)              # a dataclass type (mypy reads type(obj) as Any)
    hints = _hints(section)
    for f in dataclasses.fields(obj):
        key = _join(prefix, f.name)
        tp = hints[f.name]
        value = getattr(obj, f.name)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if isinstance(value, dict):
                value = _build(tp, value, key)
            elif not isinstance(value, tp):
                raise ConfigError(f"{key}: expected a [{key}] table, got {shown(value)}")
        else:
            value = _coerce(value, tp, key)
            KEYS[key].check(value)
        object.__setattr__(obj, f.name, value)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


DATA_SUFFIXES = (".npz", ".csv", ".parquet")   # what data.name = "file" reads


def source_problem(name: str, path: str | Path | None, label: str | None) -> str | None:
    """What is wrong with where a ``[data]`` table reads from, or None: the one rule for the
    config, ``data.load_dataset`` and ``data.load_file``. A path is read exactly when the dataset
    is :data:`FILE_DATASET`, and must end in one of :data:`DATA_SUFFIXES`; ``label`` names a column of a
    .csv or .parquet file (a .npz holds its labels in y_train and y_test)."""
    if name == FILE_DATASET and path is None:
        return f"data.name = {FILE_DATASET!r} needs data.path, a .npz, .csv or .parquet file"
    if path is not None and name != FILE_DATASET:
        return (f"data.path is read only when data.name = {FILE_DATASET!r} (it is {name!r}); set "
                f"data.name = {FILE_DATASET!r} or leave data.path out")
    if path is not None and not str(path).lower().endswith(DATA_SUFFIXES):
        return f"data.path = {shown(str(path))}: expected a file ending in {', '.join(DATA_SUFFIXES)}"
    if label is not None and (path is None or str(path).lower().endswith(".npz")):
        where = "a .npz holds its labels in y_train and y_test" if path is not None else \
            f"dataset {name!r} has none"
        return (f"data.label = {shown(label)} names the label column of a .csv or .parquet data.path; "
                f"{where}")
    return None


def _check_consistency(cfg: RunConfig) -> None:
    """The rules that tie keys together (each key's own bounds are :meth:`Key.check`'s): settings
    that are each in range but together break a run, refused before any work starts."""
    d, m, o, s, t = cfg.data, cfg.model, cfg.optim, cfg.optim.schedule, cfg.train
    for key, path in (("data.path", d.path), ("data.data_dir", d.data_dir)):
        if path is not None:
            try:
                check_path(path, key)                 # a newline would split every message
            except DnnlabError as e:
                raise ConfigError(str(e)) from None
    if s.name == "piecewise" and len(s.values) != len(s.boundaries) + 1:
        raise ConfigError("optim.schedule: piecewise needs len(values) == len(boundaries) + 1, got "
                          f"{len(s.values)} values and {len(s.boundaries)} boundaries")
    depth = KEYS["model.depth"]
    if m.hidden is not None and len(m.hidden) > typing.cast(float, depth.hi):
        raise ConfigError(f"model.hidden has {len(m.hidden)} layers; at most {_number(depth.hi)} "
                          "(model.depth's bound)")
    if m.activation in ("leaky_relu", "elu") and m.activation_param is not None \
            and m.activation_param < 0:
        raise ConfigError(f"model.activation_param = {m.activation_param}: the {m.activation} "
                          f"{'slope' if m.activation == 'leaky_relu' else 'alpha'} must be >= 0")
    if m.init == "normal" and m.init_value <= 0:
        raise ConfigError(f"model.init_value = {m.init_value}: init = 'normal' takes it as the "
                          "std, which must be > 0 (e.g. 0.05)")
    if (m.batch_norm != "none" or m.input_batch_norm) and m.bn_epsilon <= 0:
        raise ConfigError(f"model.bn_epsilon = {m.bn_epsilon}: batch norm divides by "
                          "sqrt(var + bn_epsilon); it must be > 0 (Keras' 1e-3)")
    if o.name == "ftrl" and o.initial_accumulator <= 0:
        raise ConfigError(f"optim.initial_accumulator = {o.initial_accumulator}: ftrl divides by "
                          "its power (a weight whose gradient is 0 becomes 0/0); it must be > 0 "
                          "(Keras' 0.1)")
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise ConfigError("optim.nesterov = true needs optim.momentum > 0 (the book uses 0.9)")
    if o.name == "ftrl" and o.weight_decay != 0:
        raise ConfigError("ftrl has no weight_decay; use optim.l2 (and optim.l1) instead")
    if s.name == "piecewise" and list(s.boundaries) != sorted(s.boundaries):
        raise ConfigError(f"optim.schedule.boundaries = {s.boundaries} must be increasing")
    if s.name == "1cycle" and not s.pct_start < 0.5:
        raise ConfigError(f"optim.schedule.pct_start = {s.pct_start}: 1cycle goes up for "
                          "pct_start and down for as long, so it must be < 0.5 (the book: 0.45)")
    peak = max([o.lr, s.max_lr or 0.0, *s.values]) if s.name != "none" else o.lr
    if o.name == "adamw" and peak * o.weight_decay >= 1:
        raise ConfigError(f"optim.weight_decay = {o.weight_decay} with a rate of {peak}: adamw "
                          "scales each weight by (1 - lr * weight_decay) every step, which must "
                          "stay > 0: lower one of them")
    if d.valid_size == 0 and t.monitor.startswith("val_"):
        raise ConfigError(f"train.monitor = {t.monitor!r} needs a validation split but "
                          "data.valid_size = 0: set data.valid_size > 0 or train.monitor = "
                          f"{t.monitor[4:]!r}")
    if d.valid_size == 0 and s.name == "performance":
        raise ConfigError("optim.schedule.name = 'performance' watches val_loss but "
                          "data.valid_size = 0: set data.valid_size > 0 or another schedule")
    problem = source_problem(d.name, d.path, d.label)
    if problem:
        raise ConfigError(problem)
    if d.classes is not None and len(set(d.classes)) < 2:
        raise ConfigError(f"data.classes = {shown(d.classes)}: a classifier needs 2 or more classes")
    if not cfg.name or any(ord(c) < 32 for c in cfg.name) or len(cfg.name) > 200:
        raise ConfigError(f"name = {cfg.name[:40]!r}: give a name of 1 to 200 printable "
                          "characters")
    check_memory(cfg)


def _layer_sizes(cfg: RunConfig) -> list[int]:
    features, _ = DATASET_SHAPES[cfg.data.name]
    classes = len(cfg.data.classes) if cfg.data.classes else 10
    return [features, *hidden_sizes(cfg.model), classes]


def estimate_bytes(cfg: RunConfig) -> int:
    """A lower estimate of the memory a run needs: parameters with their gradients, optimizer
    state and best/last-good copies (x6), activations of a training and an evaluation batch, and
    the dataset as float32. Lower, so only a config that cannot fit is refused."""
    sizes = _layer_sizes(cfg)
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    t = cfg.train
    activations = 4 * sum(sizes[1:]) * t.batch_size + 4 * max(sizes) * min(t.eval_batch_size, 10**6)
    _, images = DATASET_SHAPES[cfg.data.name]
    if cfg.data.limit is not None:
        valid = cfg.data.valid_size if isinstance(cfg.data.valid_size, int) else 0   # a lower estimate
        images = min(images, cfg.data.limit + valid + 10000)
    return 4 * 6 * params + activations + 4 * sizes[0] * images


def available_bytes() -> int | None:
    """Memory available to a new allocation (``MemAvailable``), or None where it is unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: RunConfig) -> None:
    """Refuse a model and data that cannot fit in this machine's memory (before any allocation,
    which would otherwise fail deep in torch or get the process killed)."""
    need, have = estimate_bytes(cfg), available_bytes()
    if have is not None and need > have:
        gib = 2**30
        raise ConfigError(f"the model and data need at least {need / gib:.1f} GiB of memory but "
                          f"{have / gib:.1f} GiB are available; use a smaller model.width, "
                          "model.depth or model.hidden, or a smaller train.batch_size")


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and check a config from a raw (TOML-shaped) dict."""
    _check_depth(raw, "config")
    cfg = typing.cast(RunConfig, _build(RunConfig, raw, ""))
    _check_consistency(cfg)
    return cfg


def _depth(raw: Any) -> int:
    """How deep tables and lists nest in a parsed value, counted without recursion (so a value
    nested 10,000 deep is measured, not a RecursionError); stops once past MAX_NESTING."""
    deepest, stack = 0, [(raw, 1)]
    while stack and deepest <= MAX_NESTING:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((c, depth + 1) for c in children)
    return deepest


# A dotted key of MAX_NESTING dots nests deeper than MAX_NESTING; tomllib takes quadratic time
# over such a key (seconds at 10,000 parts), so one is refused in the text, before parsing
# (figures: benchmarks/README.md).
_STRINGS = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')
_DEEP_KEY = re.compile(rf"(?<![A-Za-z0-9_-])(?:[A-Za-z0-9_-]++[ \t]*+\.[ \t]*+){{{MAX_NESTING},}}")


def _check_text(text: str, where: str) -> None:
    if _DEEP_KEY.search(_STRINGS.sub("", text)):
        raise ConfigError(f"{where}: a dotted key nests deeper than {MAX_NESTING} levels; no "
                          "dnnlab setting needs that")


def _check_depth(raw: Any, where: str) -> None:
    if _depth(raw) > MAX_NESTING:
        raise ConfigError(f"{where}: tables or lists nest deeper than {MAX_NESTING} levels; no "
                          "dnnlab setting needs that (a dotted key or inline table gone wrong?)")


def parse_value(text: str) -> Any:
    """Parse the right side of ``--set key=value`` as a TOML value; bare words are strings."""
    _check_text(text, f"--set value {text[:40]!r}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"--set value {text[:40]!r}: nested too deeply (at most {MAX_NESTING} "
                          "levels)") from None
    _check_depth(value, f"--set value {text[:40]!r}")
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a raw config dict (a copy is returned)."""
    _check_depth(raw, "config")
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {shown(item)}: expected key=value, e.g. --set optim.lr=3e-4")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {shown(item)}: the key is empty; e.g. --set optim.lr=3e-4")
        parts = key.split(".")
        if len(parts) > 3:
            raise ConfigError(f"--set {key[:60]}: keys have at most 3 parts "
                              "(e.g. optim.schedule.name)")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{p}' is a value, not a section")
        node[parts[-1]] = parse_value(text.strip())
    return raw


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {shown(str(path))} not found; pass a TOML file such as "
                          "examples/mnist_5x100.toml")
    try:
        text = path.read_text(encoding="utf-8")
        _check_text(text, str(path))
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: values nested too deeply (at most {MAX_NESTING} levels)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    _check_depth(raw, str(path))
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a TOML config (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    ``overrides`` are ``"KEY=VALUE"`` strings, e.g. ``["optim.lr=3e-4"]`` (the keys:
    docs/config_keys.md); a bad key or value raises a ConfigError naming it.
    """
    raw = read_toml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    if path is None:
        return from_dict(raw)
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def replace(cfg: RunConfig, **dotted: Any) -> RunConfig:
    """A copy of ``cfg`` with dotted keys changed, e.g. ``replace(cfg, **{"optim.lr": 1e-3})``.

    The new values are checked as a config file's are; ``cfg`` itself is left unchanged.
    """
    raw = cfg.to_dict()
    for key, value in dotted.items():
        node = raw
        *head, last = key.split(".")
        for p in head:
            node = node.setdefault(p, {})
        node[last] = value
    return from_dict(raw)


def to_toml(cfg: RunConfig) -> str:
    return tomli_w.dumps(cfg.to_dict())


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"section.key": value}``."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = _join(prefix, k)
        if isinstance(v, dict) and key != "tune":
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def shaping(cfg: RunConfig) -> dict[str, Any]:
    """Every setting a resume may not change (all keys but :data:`RESUME_KEYS`), as dotted
    key -> value, in :meth:`RunConfig.to_dict`'s form (a None left at its default is absent)."""
    return {k: v for k, v in flatten(cfg.to_dict()).items() if not KEYS[k].resume}


def fingerprint(cfg: RunConfig) -> str:
    """A short hash of :func:`shaping`: two configs with one fingerprint train the same run."""
    text = json.dumps(shaping(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def changed_keys(a: RunConfig, b: RunConfig) -> list[str]:
    """The dotted keys whose values differ between ``a`` and ``b`` (sorted)."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))

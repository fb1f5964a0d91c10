"""Run configuration: dataclasses loaded from TOML, validated before any work starts.

A run is described by one ``RunConfig`` with five sections, mirrored in the TOML file::

    [data]      which dataset, which classes, how many images, standardization
    [model]     the MLP: depth, width, activation, init, batch norm, dropout, penalties
    [optim]     optimizer, learning rate, schedule, gradient clipping
    [train]     epochs, batch size, seed, early stopping, checkpoints, device
    [tune]      the Optuna search space (only ``dnnlab tune`` reads it)

Unknown keys and values outside the allowed set fail with one line naming the key and the
allowed values. ``--set section.key=value`` overrides use TOML literal syntax for the value.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnnlab.errors import ConfigError

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "prelu", "rrelu", "elu", "selu", "gelu",
               "swish", "silu", "mish", "softplus", "linear")
INITIALIZERS = ("glorot_normal", "glorot_uniform", "glorot_truncated_normal",
                "he_normal", "he_uniform", "he_truncated_normal",
                "lecun_normal", "lecun_uniform", "lecun_truncated_normal",
                "normal", "constant", "torch_default")
OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw", "ftrl")
SCHEDULES = ("none", "power", "exponential", "piecewise", "performance", "1cycle")
DATASETS = ("mnist", "fashion-mnist", "cifar10", "synthetic")


@dataclass
class DataConfig:
    """Which images, and how they are prepared (the data layer does the work)."""
    name: str = "mnist"
    classes: list[int] | None = None       # keep only these labels, relabelled 0..n-1 in order
    per_class: int | None = None           # k training images per class, drawn with ``seed``
    valid_size: int = 5000                 # the book: validation = first 5,000 training images
    standardize: bool = False              # statistics from the training split only
    limit: int | None = None               # cap on training images (quick runs)
    data_dir: str | None = None            # else $DNNLAB_DATA_DIR, the cache, the package, download
    seed: int = 0


@dataclass
class ModelConfig:
    """A deep MLP. ``hidden`` overrides ``depth`` x ``width`` when given."""
    depth: int = 5
    width: int = 100
    hidden: list[int] | None = None
    activation: str = "elu"
    activation_param: float | None = None  # leaky_relu slope, elu alpha, prelu initial slope
    init: str = "he_normal"
    init_value: float = 0.0                # for init = "constant"; "normal" uses it as the std
    bias_init: str = "zeros"               # zeros | constant
    bias_value: float = 0.0
    batch_norm: str = "none"               # none | before | after (the activation)
    input_batch_norm: bool = False
    bn_momentum: float = 0.99              # Keras meaning: running = m*running + (1-m)*batch
    bn_epsilon: float = 1e-3               # Keras default
    dropout: float = 0.0
    dropout_kind: str = "dropout"          # dropout | alpha
    dropout_layers: str = "all"            # all: after every hidden layer | last: before the output
    input_dropout: float = 0.0
    max_norm: float | None = None
    l1: float = 0.0
    l2: float = 0.0                        # Keras L2: adds l2 * sum(w**2) to the loss
    output_activation: str = "softmax"     # softmax (logits + cross-entropy) is the classifier


@dataclass
class ScheduleConfig:
    name: str = "none"
    decay_steps: int = 10                  # power: lr0 / (1 + step/s)**c ; exponential: lr0 * 0.1**(epoch/s)
    power: float = 1.0
    boundaries: list[int] = field(default_factory=list)   # piecewise: epochs where the lr changes
    values: list[float] = field(default_factory=list)     # piecewise: len(boundaries) + 1 rates
    factor: float = 0.5                    # performance: multiply by this on a plateau
    patience: int = 5
    max_lr: float | None = None            # 1cycle peak; defaults to optim.lr
    pct_start: float = 0.45                # 1cycle: fraction of steps going up (the book's 1cycle)
    div_factor: float = 10.0
    final_div_factor: float = 1000.0
    unit: str = "epoch"                    # epoch | step: when power/exponential advance


@dataclass
class OptimConfig:
    name: str = "nadam"
    lr: float = 1e-3
    momentum: float = 0.0                  # sgd
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    rho: float = 0.9                       # rmsprop
    eps: float = 1e-7                      # Keras default
    weight_decay: float = 0.0              # adamw
    l1: float = 0.0                        # ftrl
    l2: float = 0.0                        # ftrl
    lr_power: float = -0.5                 # ftrl
    initial_accumulator: float = 0.1       # ftrl, adagrad
    clip_value: float | None = None        # Keras clipvalue: each gradient component
    clip_norm: float | None = None         # Keras clipnorm: each parameter tensor's norm
    global_clip_norm: float | None = None  # Keras global_clipnorm: all gradients' norm together
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    seed: int = 42
    device: str = "auto"                   # auto | cpu | cuda
    monitor: str = "val_loss"              # any logged metric
    patience: int | None = 10              # early stopping; "none" in TOML (None in Python) = off
    min_delta: float = 0.0
    restore_best: bool = True
    checkpoint_every: int = 5              # epochs; 0 = only best and final
    eval_batch_size: int = 4096
    deterministic: bool = False
    fast: bool = True                      # CUDA graph / lean step when the model allows it
    progress: bool = True


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A TOML-ready dict: ``None`` is left out where it is the default, else written "none"."""
        return _to_raw(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": DATASETS,
    "model.activation": ACTIVATIONS,
    "model.init": INITIALIZERS,
    "model.bias_init": ("zeros", "constant"),
    "model.batch_norm": ("none", "before", "after"),
    "model.dropout_kind": ("dropout", "alpha"),
    "model.dropout_layers": ("all", "last"),
    "model.output_activation": ("softmax",),
    "optim.name": OPTIMIZERS,
    "optim.schedule.name": SCHEDULES,
    "optim.schedule.unit": ("epoch", "step"),
    "train.device": ("auto", "cpu", "cuda"),
}
RANGES: dict[str, tuple[float | None, float | None]] = {
    "model.depth": (0, None), "model.width": (1, None), "model.dropout": (0, 0.999),
    "model.input_dropout": (0, 0.999), "model.l1": (0, None), "model.l2": (0, None),
    "model.bn_momentum": (0, 1), "model.bn_epsilon": (0, None), "optim.lr": (0, None),
    "optim.momentum": (0, 1), "optim.beta1": (0, 1), "optim.beta2": (0, 1), "optim.rho": (0, 1),
    "train.epochs": (1, None), "train.batch_size": (1, None), "train.eval_batch_size": (1, None),
    "train.checkpoint_every": (0, None), "data.valid_size": (0, None),
    "data.per_class": (1, None), "data.limit": (1, None), "optim.schedule.pct_start": (0.01, 0.99),
}


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
            raise ConfigError(f"{key}: expected a list of {_type_name(item)}, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table like [{prefix}], got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(f"unknown key '{_join(prefix, unknown[0])}' in {where}; "
                          f"allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        key = _join(prefix, name)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
            continue
        value = _coerce(value, tp, key)
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"{key} = {value!r} is not allowed; choose one of: "
                              f"{', '.join(CHOICES[key])}")
        if key in RANGES and isinstance(value, (int, float)):
            lo, hi = RANGES[key]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise ConfigError(f"{key} = {value!r} is out of range; it must lie in {span}")
        kwargs[name] = value
    return cls(**kwargs)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_consistency(cfg: RunConfig) -> None:
    m, o, s = cfg.model, cfg.optim, cfg.optim.schedule
    if s.name == "piecewise" and len(s.values) != len(s.boundaries) + 1:
        raise ConfigError("optim.schedule: piecewise needs len(values) == len(boundaries) + 1, got "
                          f"{len(s.values)} values and {len(s.boundaries)} boundaries")
    if m.hidden is not None and any(h < 1 for h in m.hidden):
        raise ConfigError(f"model.hidden = {m.hidden}: every layer needs at least 1 unit")
    if m.activation == "leaky_relu" and m.activation_param is not None and m.activation_param < 0:
        raise ConfigError("model.activation_param: the leaky_relu slope must be >= 0")
    if cfg.data.classes is not None and len(set(cfg.data.classes)) < 2:
        raise ConfigError(f"data.classes = {cfg.data.classes}: a classifier needs 2 or more classes")
    if o.clip_value is not None and o.clip_value <= 0:
        raise ConfigError("optim.clip_value must be > 0 (or left out)")
    if o.clip_norm is not None and o.clip_norm <= 0:
        raise ConfigError("optim.clip_norm must be > 0 (or left out)")
    if o.global_clip_norm is not None and o.global_clip_norm <= 0:
        raise ConfigError("optim.global_clip_norm must be > 0 (or left out)")


def from_dict(raw: dict[str, Any]) -> RunConfig:
    cfg = _build(RunConfig, raw, "")
    _check_consistency(cfg)
    return cfg


def parse_value(text: str) -> Any:
    """Parse the right side of ``--set key=value`` as a TOML value; bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a raw config dict (a copy is returned)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set optim.lr=3e-4")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: the key is empty; e.g. --set optim.lr=3e-4")
        parts = key.split(".")
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
        raise ConfigError(f"config file {str(path)!r} not found; pass a TOML file such as "
                          "examples/mnist_5x100.toml")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a TOML config (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw = read_toml(path) if path is not None else {}
    return from_dict(apply_overrides(raw, overrides or []))


def replace(cfg: RunConfig, **dotted: Any) -> RunConfig:
    """A copy of ``cfg`` with dotted keys changed, e.g. ``replace(cfg, **{"optim.lr": 1e-3})``."""
    raw = cfg.to_dict()
    for key, value in dotted.items():
        node = raw
        *head, last = key.split(".")
        for p in head:
            node = node.setdefault(p, {})
        node[last] = value
    return from_dict(raw)


def to_toml(cfg: RunConfig) -> str:
    import tomli_w
    return tomli_w.dumps(cfg.to_dict())

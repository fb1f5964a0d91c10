"""Run configuration: dataclasses loaded from TOML, validated before any work starts.

A run is described by one ``RunConfig`` with five sections, mirrored in the TOML file::

    [data]      which dataset, which classes, how many images, standardization
    [model]     the MLP: depth, width, activation, init, batch norm, dropout, penalties
    [optim]     optimizer, learning rate, schedule, gradient clipping
    [train]     epochs, batch size, seed, early stopping, checkpoints, device
    [tune]      the Optuna search space (only ``dnnlab tune`` reads it)

Unknown keys and values outside the allowed set fail with one line naming the key and the
allowed values. ``--set section.key=value`` overrides use TOML literal syntax for the value.

Validation happens when a config object is *built* (``__post_init__`` of every section), so a
config made in Python (``RunConfig(model=ModelConfig(depth=-3))``) is checked by the same rules
(the ``CHOICES`` and ``RANGES`` tables) as one read from TOML: every float finite, every size
positive and bounded, every choice allowed, and the model plus its data small enough for the
machine's memory (:func:`check_memory`).

A run's *fingerprint* (:func:`fingerprint`) hashes every key that shapes the run (data, model,
optimizer, schedule, seed); ``RESUME_ALLOWED`` lists the keys a resume may change.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

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

    def __post_init__(self):
        _validate(self, "data")


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

    def __post_init__(self):
        _validate(self, "model")


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

    def __post_init__(self):
        _validate(self, "optim.schedule")


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

    def __post_init__(self):
        _validate(self, "optim")


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
    fast: bool = True                      # the stacked MLP's lean step when the model allows it
    progress: bool = True
    record_every: int = 1                  # epochs between layer records for the doctor; 0 = off
    tensorboard: bool = False              # also write TensorBoard event files (RUN_DIR/tensorboard)
    histogram_every: int = 1               # epochs between TensorBoard's per-layer histograms

    def __post_init__(self):
        _validate(self, "train")


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _validate(self, "")
        _check_consistency(self)

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
# Inclusive [low, high] bounds (None: unbounded on that side); for a list, every item. Every float
# must also be finite, and every integer lies within INT_LIMIT, so no value is left unchecked.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.valid_size": (0, 10**8), "data.per_class": (1, 10**8), "data.limit": (1, 10**9),
    "data.seed": (0, 2**32 - 1), "data.classes": (0, 10**6),
    "model.depth": (0, 1000), "model.width": (1, 2**20), "model.hidden": (1, 2**20),
    "model.dropout": (0, 0.999), "model.input_dropout": (0, 0.999), "model.l1": (0, None),
    "model.l2": (0, None), "model.bn_momentum": (0, 1), "model.bn_epsilon": (0, None),
    "model.max_norm": (0, None),
    "optim.lr": (0, None), "optim.momentum": (0, 1), "optim.beta1": (0, 1), "optim.beta2": (0, 1),
    "optim.rho": (0, 1), "optim.eps": (0, None), "optim.weight_decay": (0, None),
    "optim.l1": (0, None), "optim.l2": (0, None), "optim.lr_power": (None, 0),
    "optim.initial_accumulator": (0, None), "optim.clip_value": (0, None),
    "optim.clip_norm": (0, None), "optim.global_clip_norm": (0, None),
    "optim.schedule.decay_steps": (1, 10**9), "optim.schedule.boundaries": (0, 10**7),
    "optim.schedule.values": (0, None), "optim.schedule.factor": (0, 1),
    "optim.schedule.patience": (0, 10**7), "optim.schedule.max_lr": (0, None),
    "optim.schedule.pct_start": (0.01, 0.99), "optim.schedule.div_factor": (0, None),
    "optim.schedule.final_div_factor": (0, None),
    "train.epochs": (1, 10**6), "train.batch_size": (1, 10**8), "train.seed": (0, 2**32 - 1),
    "train.patience": (0, 10**6), "train.min_delta": (0, None), "train.checkpoint_every": (0, 10**6),
    "train.record_every": (0, 10**6), "train.histogram_every": (1, 10**6),
    "train.eval_batch_size": (1, 10**8),
}
# Keys whose low bound is exclusive: the value must be > low (0 would break the run).
EXCLUSIVE_LOW = {"model.max_norm", "optim.clip_value", "optim.clip_norm", "optim.global_clip_norm", "optim.schedule.factor",
                 "optim.schedule.div_factor", "optim.schedule.final_div_factor"}
INT_LIMIT = 2**53            # no integer setting needs more; huge ones fail here, not deep in torch
MAX_NESTING = 16             # TOML / --set values nest no deeper (deeper is an attack or a typo)

# What a resume may change (applied and written to config.toml); every other key shapes the run
# and is part of its fingerprint. ``name`` and ``tune`` do not shape a training run.
RESUME_ALLOWED = ("train.epochs", "train.patience", "train.progress", "train.device",
                  "train.checkpoint_every", "train.eval_batch_size", "train.record_every",
                  "train.tensorboard", "train.histogram_every", "data.data_dir", "name")
NOT_SHAPING = RESUME_ALLOWED + ("tune",)

# For the memory estimate: features and images of each dataset (synthetic: the generator's default).
DATASET_SHAPES: dict[str, tuple[int, int]] = {"mnist": (784, 70000), "fashion-mnist": (784, 70000),
                                              "cifar10": (3072, 60000), "synthetic": (20, 1400)}


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
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: expected a finite number (nan and inf are not "
                              "allowed)")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if abs(value) > INT_LIMIT:
            raise ConfigError(f"{key} = {value}: too large (at most {INT_LIMIT})")
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


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build section ``cls`` from a raw TOML table: unknown keys fail here, values are checked
    by the section's ``__post_init__`` (:func:`_validate`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table like [{prefix}], got {raw!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(f"unknown key '{_join(prefix, unknown[0])}' in {where}; "
                          f"allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        kwargs[name] = _build(tp, value, _join(prefix, name)) if dataclasses.is_dataclass(tp) else value
    return cls(**kwargs)


def _validate(obj: Any, prefix: str) -> None:
    """Check (and coerce in place: ints where floats are expected) every field of a section.

    The one place the rules of ``CHOICES`` and ``RANGES`` are applied, whether the section came
    from TOML, ``--set`` or Python code. A nested section given as a dict is built from it.
    """
    for f in dataclasses.fields(obj):
        key = _join(prefix, f.name)
        tp = _hints(type(obj))[f.name]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(tp):
            if isinstance(value, dict):
                value = _build(tp, value, key)
            elif not isinstance(value, tp):
                raise ConfigError(f"{key}: expected a [{key}] table, got {value!r}")
        else:
            value = _coerce(value, tp, key)
            _check_value(key, value)
        object.__setattr__(obj, f.name, value)


def _check_value(key: str, value: Any) -> None:
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key} = {value!r} is not allowed; choose one of: "
                          f"{', '.join(CHOICES[key])}")
    if key not in RANGES or value is None:
        return
    lo, hi = RANGES[key]
    for i, v in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        name = f"{key}[{i}]" if isinstance(value, list) else key
        if key in EXCLUSIVE_LOW and lo is not None and v <= lo:
            raise ConfigError(f"{name} = {v!r} is out of range; it must be > {lo} (or left out)")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise ConfigError(f"{name} = {v!r} is out of range; it must lie in {span}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_consistency(cfg: RunConfig) -> None:
    m, s = cfg.model, cfg.optim.schedule
    if s.name == "piecewise" and len(s.values) != len(s.boundaries) + 1:
        raise ConfigError("optim.schedule: piecewise needs len(values) == len(boundaries) + 1, got "
                          f"{len(s.values)} values and {len(s.boundaries)} boundaries")
    if m.hidden is not None and len(m.hidden) > RANGES["model.depth"][1]:
        raise ConfigError(f"model.hidden has {len(m.hidden)} layers; at most "
                          f"{RANGES['model.depth'][1]}")
    if m.activation == "leaky_relu" and m.activation_param is not None and m.activation_param < 0:
        raise ConfigError("model.activation_param: the leaky_relu slope must be >= 0")
    if cfg.data.classes is not None and len(set(cfg.data.classes)) < 2:
        raise ConfigError(f"data.classes = {cfg.data.classes}: a classifier needs 2 or more classes")
    if not cfg.name or any(ord(c) < 32 for c in cfg.name) or len(cfg.name) > 200:
        raise ConfigError(f"name = {cfg.name[:40]!r}: give a name of 1 to 200 printable "
                          "characters")
    check_memory(cfg)


def _layer_sizes(cfg: RunConfig) -> list[int]:
    m = cfg.model
    features, _ = DATASET_SHAPES.get(cfg.data.name, (784, 70000))
    classes = len(cfg.data.classes) if cfg.data.classes else 10
    return [features, *(m.hidden if m.hidden is not None else [m.width] * m.depth), classes]


def estimate_bytes(cfg: RunConfig) -> int:
    """A lower estimate of the memory a run needs: parameters with their gradients, optimizer
    state and best/last-good copies (x6), activations of a training and an evaluation batch, and
    the dataset as float32. Lower, so only a config that cannot fit is refused."""
    sizes = _layer_sizes(cfg)
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    t = cfg.train
    activations = 4 * sum(sizes[1:]) * t.batch_size + 4 * max(sizes) * min(t.eval_batch_size, 10**6)
    _, images = DATASET_SHAPES.get(cfg.data.name, (784, 70000))
    if cfg.data.limit is not None:
        images = min(images, cfg.data.limit + cfg.data.valid_size + 10000)
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
    cfg = _build(RunConfig, raw, "")
    _check_consistency(cfg)
    return cfg


def _nesting(text: str) -> int:
    """How deep brackets and braces nest in ``text`` (an upper bound: quotes are not parsed)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _check_nesting(text: str, where: str) -> None:
    if _nesting(text) > MAX_NESTING:
        raise ConfigError(f"{where}: values nest deeper than {MAX_NESTING} levels of [ ] or {{ }}; "
                          "no dnnlab setting needs that")


def parse_value(text: str) -> Any:
    """Parse the right side of ``--set key=value`` as a TOML value; bare words are strings."""
    _check_nesting(text, f"--set value {text[:40]!r}")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"--set value {text[:40]!r}: nested too deeply") from None


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
        raise ConfigError(f"config file {str(path)!r} not found; pass a TOML file such as "
                          "examples/mnist_5x100.toml")
    try:
        text = path.read_text(encoding="utf-8")
        _check_nesting(text, str(path))
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: values nested too deeply") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a TOML config (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw = read_toml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    if path is None:
        return from_dict(raw)
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


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
    """Every setting that shapes a run (all but ``NOT_SHAPING``), as dotted key -> value."""
    return {k: v for k, v in flatten(cfg.to_dict()).items()
            if not any(k == n or k.startswith(n + ".") for n in NOT_SHAPING)}


def fingerprint(cfg: RunConfig) -> str:
    """A short hash of :func:`shaping`: two configs with one fingerprint train the same run."""
    text = json.dumps(shaping(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def changed_keys(a: RunConfig, b: RunConfig) -> list[str]:
    """The dotted keys whose values differ between ``a`` and ``b`` (sorted)."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))

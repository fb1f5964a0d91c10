"""The search space of ``dnnlab tune``, declared in the config's ``[tune]`` table.

Each entry names a config key (dotted) and what to draw for it::

    [tune]
    "model.width" = {low = 32, high = 256, log = true}        # integers (both bounds are ints)
    "optim.lr" = {low = 1e-4, high = 1e-2, log = true}         # floats
    "train.batch_size" = {low = 16, high = 256, log = true, type = "int"}
    "model.activation" = ["elu", "relu", "selu"]               # a choice
    "model.dropout" = {low = 0.0, high = 0.5, step = 0.1}

Unquoted dotted keys (``model.width = ...``) are nested tables in TOML; both spellings work.
Every bound and choice is checked against the config's own validation before any trial runs, so
a typo or an out-of-range bound fails at once with the message ``dnnlab train`` would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnnlab.config import RunConfig, replace
from dnnlab.errors import ConfigError
from dnnlab.io import shown

_RANGE_KEYS = {"low", "high", "log", "step", "type"}


@dataclass(frozen=True)
class Param:
    """One searched config key: a range (``low``..``high``) or a list of ``choices``."""
    key: str
    kind: str                         # int | float | choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        """Draw this parameter from an Optuna trial (the trial's parameter name is the key)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high),
                                   step=self.step, log=self.log)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key} in {list(self.choices)}"
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step else ""
        return f"{self.key} in [{self.low}, {self.high}] ({self.kind}{scale}{step})"


def _is_spec(value: Any) -> bool:
    return isinstance(value, list) or (isinstance(value, dict) and
                                        ({"low", "high", "choices"} & set(value)))


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        if _is_spec(value):
            out[key] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, key))
        else:
            raise ConfigError(f"[tune] {key} = {value!r}: give a range like {{low = 1e-4, high = "
                              "1e-2, log = true}} or a list of choices like [\"elu\", \"relu\"]")
    return out


def _param(key: str, spec: Any) -> Param:
    if isinstance(spec, dict) and "choices" in spec:
        spec = spec["choices"]
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"[tune] {key}: the list of choices is empty")
        bad = [c for c in spec if not isinstance(c, (str, int, float, bool))]
        if bad:
            raise ConfigError(f"[tune] {key}: choice {bad[0]!r} is not a string, number or "
                              "boolean; Optuna can only choose among those")
        return Param(key, "choice", choices=tuple(spec))
    unknown = set(spec) - _RANGE_KEYS
    if unknown or "low" not in spec or "high" not in spec:
        raise ConfigError(f"[tune] {key}: a range needs low and high (and optionally log, step, "
                          f"type); got {sorted(spec)}")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"[tune] {key}: low and high must be numbers, got {low!r} and {high!r}")
    kind = spec.get("type") or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise ConfigError(f"[tune] {key}: type = {kind!r}; choose \"int\" or \"float\"")
    log = bool(spec.get("log", False))
    if not low < high:
        raise ConfigError(f"[tune] {key}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"[tune] {key}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and log:
        raise ConfigError(f"[tune] {key}: step and log cannot be combined (Optuna's rule)")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                             or not 0 < step <= high - low
                             or (kind == "int" and step != int(step))):
        raise ConfigError(f"[tune] {key}: step = {shown(step)}; give a "
                          f"{'whole ' if kind == 'int' else ''}number above 0 and at most high - "
                          f"low ({high - low:g})")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def parse_space(cfg: RunConfig) -> list[Param]:
    """The parameters of ``cfg.tune``, each bound and choice checked against the config rules."""
    if not cfg.tune:
        raise ConfigError("the config has no [tune] table; declare the search space, e.g. "
                          "[tune] \"optim.lr\" = {low = 1e-4, high = 1e-2, log = true} "
                          "(see examples/tune_mnist.toml)")
    params = [_param(key, spec) for key, spec in _flatten(cfg.tune).items()]
    for p in params:
        for value in (p.choices if p.kind == "choice" else (p.low, p.high)):
            if p.kind == "int":
                value = int(value)
            try:
                replace(cfg, **{p.key: value})
            except ConfigError as e:
                raise ConfigError(f"[tune] {p.key}: {e}") from None
    return params


def apply(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``cfg`` with the drawn values set (and the [tune] table dropped: the result is a plain run)."""
    out = replace(cfg, **values)
    out.tune = {}
    return out

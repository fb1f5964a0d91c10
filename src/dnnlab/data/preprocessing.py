"""What a model needs done to a raw row before it sees it, recorded so that it travels with the model.

A model trains on prepared rows: uint8 pixels divided by 255, then (with ``data.standardize``)
each feature shifted by the training split's mean and divided by its std. A user who takes the
model away holds raw rows, so a run records the steps and the names around them as one
:class:`Preprocessing`: in the run directory (``preprocessing.json``), in the metadata of
``model.safetensors`` (key ``"preprocessing"`` of the JSON under ``"dnnlab"``), and in an ONNX
export (the steps as graph nodes, the names in ``metadata_props``). :meth:`Preprocessing.apply`
is the one implementation of the steps in NumPy, in the order and float32 arithmetic the loader
used, so a raw row predicted later gives the logits its prepared twin gave while training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnnlab.errors import DataError

FORMAT = 1                  # the record's layout version, written with it
FILE = "preprocessing.json"  # its name in a run directory
_SHOWN = 6                  # column names listed in a mismatch message


@dataclass(frozen=True)
class Preprocessing:
    """The steps from a raw row to the model's input, and the names around them.

    ``scale``: raw values are divided by it first (255.0 for uint8 images, else 1.0);
    ``mean`` / ``std``: then each feature is standardized (None when the run did not standardize);
    ``feature_names``: a table's feature columns in the model's order (None for arrays and images);
    ``label``: a table's label column (left out of a table given to predict);
    ``class_names``: what output k means.
    """
    n_features: int
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] | None = None
    label: str | None = None
    scale: float = 1.0
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what :meth:`from_json` reads back)."""
        return {"format": FORMAT, "n_features": self.n_features,
                "class_names": list(self.class_names),
                "feature_names": None if self.feature_names is None else list(self.feature_names),
                "label": self.label, "scale": self.scale,
                "mean": None if self.mean is None else [float(v) for v in self.mean],
                "std": None if self.std is None else [float(v) for v in self.std]}

    @classmethod
    def from_json(cls, raw: Any, what: str) -> Preprocessing:
        """Read a record back, checking every field; a bad one is a DataError naming ``what``."""
        def bad(why: str) -> DataError:
            return DataError(f"{what}: its preprocessing record is damaged ({why}); re-create the "
                             "run with dnnlab")
        if not isinstance(raw, Mapping) or raw.get("format") != FORMAT:
            raise bad(f"expected a table with format = {FORMAT}")
        n = raw.get("n_features")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise bad("n_features is not a positive integer")
        names = raw.get("class_names")
        if not isinstance(names, list) or len(names) < 2 or not all(isinstance(c, str) for c in names):
            raise bad("class_names is not a list of 2 or more strings")
        features = raw.get("feature_names")
        if features is not None and (not isinstance(features, list) or len(features) != n
                                     or not all(isinstance(c, str) for c in features)):
            raise bad(f"feature_names is not a list of {n} strings")
        label = raw.get("label")
        if label is not None and not isinstance(label, str):
            raise bad("label is not a string")
        scale = raw.get("scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise bad("scale is not a positive number")
        stats = []
        for key in ("mean", "std"):
            v = raw.get(key)
            if v is not None:
                try:
                    v = np.asarray(v, dtype=np.float32)
                except (TypeError, ValueError):
                    raise bad(f"{key} is not a list of numbers") from None
                if v.shape != (n,) or not np.all(np.isfinite(v)):
                    raise bad(f"{key} is not {n} finite numbers")
            stats.append(v)
        if (stats[0] is None) != (stats[1] is None) or (stats[1] is not None and np.any(stats[1] <= 0)):
            raise bad("mean and std must both be given, std positive")
        return cls(n, tuple(names), None if features is None else tuple(features), label,
                   float(scale), stats[0], stats[1])

    def dumps(self) -> str:
        return json.dumps(self.to_json())

    def apply(self, x: Any, what: str = "the input") -> np.ndarray:
        """Raw rows (N, n_features) or images (N, ...) -> the model's float32 input.

        The loader's arithmetic, step for step: divide by ``scale``, subtract ``mean``, divide by
        ``std``, each in float32. A width that is not ``n_features`` is refused naming both.
        """
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise DataError(f"{what} has dtype {x.dtype}; features must be numbers")
        if x.ndim == 1:
            x = x[None, :]
        rows = x.reshape(len(x), -1)
        if rows.shape[1] != self.n_features:
            raise DataError(f"{what} has {rows.shape[1]} features per row but the model takes "
                            f"{self.n_features}{self._columns_hint()}")
        out: np.ndarray = np.divide(rows, np.float32(self.scale), dtype=np.float32)
        if self.mean is not None and self.std is not None:
            out -= self.mean
            out /= self.std
        return out

    def columns(self, names: Sequence[str], what: str) -> list[int]:
        """Where each of the model's feature columns is among a table's ``names`` (matched by
        name, so any order works). The run's label column may be there and is ignored; a missing
        or an unknown column is refused in one line naming them."""
        names = [str(c).strip() for c in names]
        if self.feature_names is None:
            keep = [i for i, c in enumerate(names) if c != self.label]
            if len(keep) != self.n_features:
                raise DataError(f"{what} has {len(keep)} feature columns but the model takes "
                                f"{self.n_features} (it was trained on unnamed features: give "
                                "them in the training order)")
            return keep
        where = {c: i for i, c in enumerate(names)}
        missing = [c for c in self.feature_names if c not in where]
        extra = [c for c in names if c not in self.feature_names and c != self.label]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks the column{'s' if len(missing) > 1 else ''} {_listed(missing)}")
            if extra:
                parts.append(f"has the column{'s' if len(extra) > 1 else ''} {_listed(extra)} "
                             "the model was not trained on")
            raise DataError(f"{what} {' and '.join(parts)}; give the {self.n_features} feature "
                            f"columns the run trained on ({_listed(list(self.feature_names))})")
        return [where[c] for c in self.feature_names]

    def _columns_hint(self) -> str:
        if self.feature_names is None:
            return ""
        return f" (the columns {_listed(list(self.feature_names))})"


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(c) for c in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def identity(n_features: int, n_classes: int) -> Preprocessing:
    """The record of a model saved without one: rows taken as given, classes named 0..n-1."""
    return Preprocessing(n_features, tuple(str(i) for i in range(n_classes)))

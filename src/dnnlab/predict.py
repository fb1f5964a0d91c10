"""A trained model on raw data: ``dnnlab predict RUN_DIR FILE`` and :func:`load_model`.

A run directory's model takes prepared rows; a user holds raw ones (a CSV's columns, an image's
pixels). :func:`load_model` gives a :class:`Classifier`: the model with the preprocessing record
the run saved beside it (:mod:`dnnlab.data.preprocessing`: feature names, pixel scale,
standardization statistics from the run's training split, class names), used as scikit-learn's
estimators are: ``predict(X)`` gives class names, ``predict_proba(X)`` one column per class, on
raw rows as NumPy arrays or pandas DataFrames (columns matched by name).

:func:`predict_file` does the same for a file: a ``.csv`` or ``.parquet`` table (the run's
feature columns, matched by name in any order; the run's label column, if there, is ignored for
the prediction and gives the accuracy), an ``.npz`` (``x``, else ``x_test``, else ``x_train``,
with ``y``/``y_test``/``y_train`` beside it for the accuracy), or the name of a built-in dataset
(its test split, prepared by the run's own ``[data]`` table). It writes a CSV: the true label
when known, the predicted class name, then ``p_<class>`` per class.

A run trained before the record existed has none in its model file; its record is then derived
again from the data its ``config.toml`` names (the same statistics, recomputed).
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from dnnlab import io, rundir
from dnnlab.config import DATASETS, FILE_DATASET, load_config
from dnnlab.data import load_from_config
from dnnlab.data.preprocessing import Preprocessing, identity
from dnnlab.errors import DataError, DnnlabError
from dnnlab.train.checkpoint import MODEL_FILE, load_model_meta, model_file
from dnnlab.train.state import check_run

BATCH = 8192                 # rows per forward pass
SUFFIXES = (".csv", ".parquet", ".npz")
NPZ_ROWS = (("x", "y"), ("x_test", "y_test"), ("x_train", "y_train"))   # first present wins


class Classifier:
    """A trained model with its preprocessing: scikit-learn's ``predict`` / ``predict_proba``.

    Attributes:
        module: the torch model (prepared rows in, logits out), in inference mode.
        preprocessing: the :class:`~dnnlab.data.preprocessing.Preprocessing` it applies.
        classes_: the class names (``predict`` returns these).
        n_features_in_: the width of a raw row.
        feature_names_in_: a table's feature columns in the model's order (None for arrays).
    """

    def __init__(self, module: torch.nn.Module, preprocessing: Preprocessing):
        if preprocessing.n_features != getattr(module, "in_features", preprocessing.n_features):
            raise DnnlabError(f"the preprocessing record describes {preprocessing.n_features} "
                              f"features but the model takes {module.in_features}")
        self.module = module.eval()
        self.preprocessing = preprocessing
        self.classes_ = np.array(preprocessing.class_names)
        self.n_features_in_ = preprocessing.n_features
        self.feature_names_in_ = (None if preprocessing.feature_names is None
                                  else np.array(preprocessing.feature_names))

    def __repr__(self) -> str:
        return (f"Classifier({self.n_features_in_} features -> {len(self.classes_)} classes: "
                f"{', '.join(map(str, self.classes_[:5]))}{' ...' if len(self.classes_) > 5 else ''})")

    def transform(self, X: Any) -> np.ndarray:
        """Raw rows (NumPy, or a pandas DataFrame whose columns are matched by name) -> the
        model's prepared float32 rows."""
        if hasattr(X, "columns") and hasattr(X, "iloc"):          # a pandas DataFrame
            idx = self.preprocessing.columns(list(X.columns), "the DataFrame")
            X = X.iloc[:, idx].to_numpy()
        return self.preprocessing.apply(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """The logits (N, n_classes) on raw rows ``X``."""
        return logits_of(self.module, self.transform(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in the order of ``classes_``."""
        return softmax(self.decision_function(X))

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class name of each raw row."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def logits_of(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """``module``'s logits on prepared rows, in inference mode, in batches (mode restored)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            parts = [module(torch.as_tensor(x[i:i + BATCH])).numpy() for i in range(0, len(x), BATCH)]
    finally:
        module.train(was_training)
    n_out = int(getattr(module, "n_classes", 0))
    return np.concatenate(parts) if parts else np.zeros((0, n_out), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load_model(path: str | Path, device: str = "cpu") -> Classifier:
    """The model of a run directory (or a model file) with its preprocessing, on raw rows.

    Args:
        path: a run directory written by ``dnnlab train`` (or a sweep variant's), or a
            ``.safetensors`` model file.
        device: where the torch model goes (default the CPU; predictions come back as NumPy).

    Returns a :class:`Classifier`: ``predict(X)`` (class names), ``predict_proba(X)``,
    ``decision_function(X)`` (logits), ``transform(X)`` (the prepared rows), ``.module`` (the
    torch model). A model saved without a record (``save_model`` on a bare module) takes its
    rows as given and names its classes 0..n-1.
    """
    path = Path(path)
    module, meta = load_model_meta(path, device)
    return Classifier(module, preprocessing_of(path, meta, module))


def preprocessing_of(path: Path, meta: dict[str, Any], module: torch.nn.Module) -> Preprocessing:
    """The record saved in the model's metadata; for an older run directory, the one its
    config's data gives; for a bare model file, rows as given (:func:`identity`)."""
    where = model_file(path)
    if "preprocessing" in meta:
        return Preprocessing.from_json(meta["preprocessing"], str(where))
    config = where.parent / "config.toml"
    if config.is_file():
        return load_from_config(load_config(config).data, progress=False).preprocessing()
    return identity(module.in_features, module.n_classes)


class Rows(NamedTuple):
    """Rows to predict: raw (``prepared=False``) or already the model's input, and their labels
    (class names, when the input has them)."""
    x: np.ndarray
    labels: np.ndarray | None
    prepared: bool


def read_rows(source: str | Path, run_dir: Path, pre: Preprocessing) -> Rows:
    """The rows of ``source``: a .csv/.parquet/.npz file, or a built-in dataset's test split."""
    name = str(source)
    if name in DATASETS and name != FILE_DATASET and not Path(name).exists():
        data_cfg = load_config(rundir.run_file(run_dir, "config.toml")).data
        ds = load_from_config(replace_data(data_cfg, name), progress=False)
        return Rows(ds.test.x, np.array(ds.class_names)[ds.test.y], True)
    p = Path(source)
    if p.suffix.lower() not in SUFFIXES:
        raise DataError(f"{p}: predict reads {', '.join(SUFFIXES)} files or a built-in dataset's "
                        f"test split ({', '.join(d for d in DATASETS if d != FILE_DATASET)})")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.suffix.lower() == ".npz":
        return _read_npz(p)
    columns, table = _read_table(p)
    idx = pre.columns(columns, str(p))
    for i in idx:
        if table[i].dtype.kind not in "fiub":
            bad = next(v for v in table[i] if not _is_number(v))
            raise DataError(f"{p}: column {columns[i]!r} holds {str(bad)[:40]!r}, not a number; "
                            "every feature must be a number")
    x = np.stack([table[i].astype(np.float32) for i in idx], axis=1)
    labels = None
    if pre.label is not None and pre.label in columns:
        labels = _label_names(table[columns.index(pre.label)], pre.class_names)
    return Rows(x, labels, False)


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _label_names(values: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """A label column as class names: strings as written; integral numbers (``1.0``, read as
    ``1`` by the training loader) as the integer's text."""
    text = np.char.strip(np.asarray(values).astype(str))
    if set(text.tolist()) <= set(class_names):
        return text
    try:
        numbers = np.asarray(values, dtype=np.float64)
    except ValueError:
        return text
    if np.all(numbers == np.round(numbers)):
        return numbers.astype(np.int64).astype(str)
    return text


def replace_data(data_cfg, name: str):
    """The run's ``[data]`` table on another built-in dataset (same options, e.g. classes)."""
    return dataclasses.replace(data_cfg, name=name, path=None, label=None, test_size=None)


def _read_npz(p: Path) -> Rows:
    try:
        with np.load(p, allow_pickle=False) as z:
            for xk, yk in NPZ_ROWS:
                if xk in z.files:
                    x = z[xk]
                    y = z[yk].reshape(len(z[yk]), -1)[:, 0].astype(str) if yk in z.files else None
                    return Rows(x, y, False)
            raise DataError(f"{p} holds none of {', '.join(k for k, _ in NPZ_ROWS)}; put the rows "
                            "to predict under x")
    except (OSError, ValueError) as e:
        raise DataError(f"{p} is not a readable .npz file ({e})") from None


def _read_table(p: Path) -> tuple[list[str], list[np.ndarray]]:
    """A table's column names and columns (numbers as float32 where every value parses, as the
    training loader parses them; else the text)."""
    if p.suffix.lower() == ".parquet":
        try:
            # optional dependency: pyarrow (pip install -e '.[files]'), imported only here
            import pyarrow.parquet as pq  # type: ignore[import-untyped]
        except ImportError:
            raise DataError(f"{p}: reading .parquet needs pyarrow: pip install -e '.[files]'") from None
        table = pq.read_table(p)
        return list(table.column_names), [_column(table.column(i).to_numpy(zero_copy_only=False))
                                          for i in range(table.num_columns)]
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{p} is not a readable UTF-8 CSV file ({e})") from None
    if not rows:
        raise DataError(f"{p} is empty; the first line must name the columns")
    header, body = [c.strip() for c in rows[0]], [r for r in rows[1:] if r]
    for lineno, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{p}: line {lineno} has {len(r)} fields but the header names "
                            f"{len(header)} columns")
    return header, [_column(np.array([r[j].strip() for r in body], dtype=str))
                    for j in range(len(header))]


def _column(values: np.ndarray) -> np.ndarray:
    """float32 when every value is a number (parsed as the training loader parses), else as is."""
    if values.dtype.kind in "fiub":
        return values.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return values.astype(np.float64).astype(np.float32)
        except ValueError:
            return values.astype(str)


class Predicted(NamedTuple):
    path: Path                 # the CSV written
    rows: int
    accuracy: float | None     # when the input had labels
    counts: dict[str, int]     # predicted rows per class


def predict_file(run_dir: str | Path, source: str | Path, out: str | Path | None = None, *,
                 accept_legacy: bool = False) -> Predicted:
    """Predict every row of ``source`` with the model of ``run_dir``; write a CSV.

    Args:
        run_dir: a run directory written by ``dnnlab train`` (or a sweep variant's).
        source: a ``.csv``/``.parquet`` table, an ``.npz``, or a built-in dataset's name.
        out: the CSV to write (default ``RUN_DIR/predictions-<name>.csv``).

    The CSV has a ``label`` column when the input has labels, then ``prediction`` (the class
    name) and ``p_<class>`` for each class. A table whose columns, or an array whose width, do
    not match the run's is refused in one line naming what differs; nothing is written then.
    """
    run_dir = Path(run_dir)
    check_run(run_dir, accept_legacy=accept_legacy)   # the folder is the run it says it is
    model = load_model(rundir.run_file(run_dir, MODEL_FILE).parent)
    rows = read_rows(source, run_dir, model.preprocessing)
    if rows.prepared:
        if rows.x.shape[1] != model.n_features_in_:
            raise DataError(f"{source}: its rows have {rows.x.shape[1]} features but the model "
                            f"takes {model.n_features_in_}")
        logits = logits_of(model.module, rows.x)
    else:
        if rows.x.dtype.kind not in "fiub":
            raise DataError(f"{source}: a feature column holds text; every feature must be a number")
        logits = logits_of(model.module, model.preprocessing.apply(rows.x, str(source)))
    proba = softmax(logits)
    predicted = model.classes_[proba.argmax(axis=1)]
    target = Path(out) if out is not None else run_dir / f"predictions-{Path(str(source)).stem}.csv"
    rundir.check_free(target)
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*(["label"] if rows.labels is not None else []), "prediction",
                *(f"p_{c}" for c in model.classes_)])
    for i in range(len(predicted)):
        w.writerow([*([rows.labels[i]] if rows.labels is not None else []), predicted[i],
                    *(f"{v:.6g}" for v in proba[i])])
    io.write_text(target, buf.getvalue())
    accuracy = None if rows.labels is None else float(np.mean(rows.labels == predicted))
    names, counts = np.unique(predicted, return_counts=True)
    return Predicted(target, len(predicted), accuracy, dict(zip(names.tolist(), counts.tolist())))


__all__ = ["Classifier", "Predicted", "load_model", "logits_of", "predict_file", "read_rows", "softmax"]

"""Your own data from one file: ``[data] name = "file"`` with ``path = "..."``.

Three formats, each read into the arrays the built-in datasets have, then split, selected and
standardized by the same :func:`dnnlab.data.splits.build`, so ``valid_size``, ``classes``,
``per_class``, ``limit``, ``standardize`` and the data checks mean exactly what they mean for MNIST:

- ``.npz`` in the Keras layout: ``x_train``, ``y_train`` and, for a test split of your own,
  ``x_test`` and ``y_test``. ``x`` is (N, features) or images (N, H, W[, C]) of any numeric
  dtype; uint8 is scaled to [0, 1] like the built-in images, other dtypes are kept as given.
  Read with ``allow_pickle=False``: a file holding Python objects is refused, never unpickled.
- ``.csv``: a header row naming the columns, then one row per example; ``label`` names the label
  column (default: the last one), every other column is a feature and must hold numbers. Read by
  numpy (no extra package); a malformed file is re-read line by line to name the first bad line.
- ``.parquet``: the same table layout; needs pyarrow (``pip install -e '.[files]'`` in the checkout).

Splits. A ``.npz`` with a test split keeps its order: validation is the first ``valid_size``
rows of ``x_train`` (a count, or a fraction: default 0.2), as the book splits MNIST. A table
(csv, parquet) or a ``.npz`` without ``x_test`` has no test split: its rows are shuffled once with
a fixed seed (:data:`SPLIT_SEED`, the same for every run and every ``data.seed``, so runs and
resumes see the same split), the first ``data.test_size`` shuffled rows (default 0.2 of them)
become the test split and the rest the training split, whose first ``valid_size`` rows are the
validation split. The shuffle is stratified when every class has :data:`MIN_STRATIFY` rows or
more (:func:`split_order`): every prefix holds the classes in the file's proportions, so the
test and validation splits do too. The shuffle matters: tables are often sorted by class, and the
first rows would then hold a single class. A file whose order matters (time series) should bring
its own split as a ``.npz``. A file without a test split needs :data:`MIN_ROWS` rows or more.

Labels are integers 0..n-1 (every class present somewhere in the file; integral floats such as
``1.0`` count as integers) or strings. Strings are mapped to 0..n-1 in sorted order, and the
strings become the class names: ``classes = [0, 2]`` keeps the first and the third name in
sorted order. A label column mixing numbers and words is read as strings; fractional numbers
(a measurement, not a class) are refused. Labels of shape (N, 1), as Keras saves CIFAR-10's,
are taken as (N,).

Paths are relative to the current directory, not to the config file, like ``--out`` and
``data.data_dir``: a run directory's copy of the config, a ``--set data.path=...`` and a sweep
variant then all mean the same file. (The data fingerprint recorded with each run catches a
resume that finds other data under the same name.)

Every problem raises :class:`DataError` in one line naming the file and what is wrong with it.
Decoded files are cached per (path, label, mtime, size), so a sweep reads each file once.
"""

from __future__ import annotations

import csv
import functools
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dnnlab.config import FILE_DATASET, source_problem
from dnnlab.data.formats import NPZ_KEYS, npz_array
from dnnlab.data.splits import Dataset, build, row_count
from dnnlab.errors import DataError

SPLIT_SEED = 0          # the fixed shuffle of a file without a test split
TEST_SIZE = 0.2         # ... whose first fifth becomes the test split (data.test_size)
MIN_STRATIFY = 5        # rows every class needs for the shuffle to be stratified
MIN_ROWS = 5            # rows a file without a test split needs (test, train and valid come from it)
TRAIN_KEYS, TEST_KEYS = NPZ_KEYS[:2], NPZ_KEYS[2:]   # the Keras layout of formats.read_npz
_SHOWN_COLUMNS = 8      # columns listed in a "no such column" message


def load_file(path: str | Path, *, label: str | None = None,
              test_size: int | float | None = None, **options: Any) -> Dataset:
    """The Dataset in ``path`` (.npz, .csv or .parquet) with the data-layer ``options`` applied;
    ``test_size`` (rows or a fraction, default 0.2) for a file without a test split of its own."""
    if not str(path).isprintable():     # every message below starts with the path, on one line
        raise DataError(f"data.path = {str(path)!r} holds control characters; name a file")
    p = Path(path).expanduser().absolute()
    problem = source_problem(FILE_DATASET, p, label)
    if problem:
        raise DataError(problem)
    try:
        st = p.stat()
    except OSError as e:
        raise DataError(f"{p}: cannot read it ({e.strerror or e}); a relative data.path is taken "
                        "from the current directory") from None
    if not p.is_file():
        raise DataError(f"{p} is not a file; data.path must name a .npz, .csv or .parquet file")
    if st.st_size == 0:
        raise DataError(f"{p} is empty (0 bytes)")
    arrays, names, columns = _read(str(p), label, st.st_mtime_ns, st.st_size,
                                   TEST_SIZE if test_size is None else test_size)
    features, label_column = (columns[:-1], columns[-1]) if columns else (None, None)
    return build(p.name, *arrays, class_names=list(names), source=str(p), feature_names=features,
                 label=label_column, **options)


@functools.lru_cache(maxsize=2)
def _read(path: str, label: str | None, mtime_ns: int, size: int, test_size: int | float
          ) -> tuple[tuple[np.ndarray, ...], tuple[str, ...], tuple[str, ...] | None]:
    """(x_train, y_train, x_test, y_test) read-only, the class names, and a table's feature
    columns followed by its label column (None for a .npz); cached per file stamp."""
    p = Path(path)
    suffix = p.suffix.lower()
    columns = None
    if suffix == ".npz":
        x_train, y_train, test = _read_npz(p)
    else:
        x_train, y_train, columns = (_read_csv(p, label) if suffix == ".csv"
                                     else _read_parquet(p, label))
        test = None
    y_train = _check_shapes(p, "train", x_train, y_train)
    if test is not None:
        x_test, y_test = test
        y_test = _check_shapes(p, "test", x_test, y_test)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DataError(f"{p}: x_train rows have shape {x_train.shape[1:]} but x_test rows "
                            f"{x_test.shape[1:]}; both splits need the same features")
        where = _npz_row
    else:
        x_test, y_test = x_train[:0], y_train[:0]
        where = functools.partial(_csv_line, p) if suffix == ".csv" else _table_row
    y_train, y_test, names = encode_labels(y_train, y_test, str(p), where=where)
    if test is None:
        if len(x_train) < MIN_ROWS:
            raise DataError(f"{p} has {len(x_train)} rows; a file without a test split of its own "
                            f"needs at least {MIN_ROWS} (its test, training and validation splits "
                            "come from them): add rows, or bring x_test and y_test in a .npz")
        order = split_order(y_train)
        cut = row_count(test_size, len(order), "data.test_size")
        if not 0 < cut < len(order) - 1:
            raise DataError(f"{p}: data.test_size = {test_size} gives {cut} test rows of "
                            f"{len(order)}; leave rows for training and testing, e.g. "
                            f"data.test_size = {TEST_SIZE}")
        x_test, y_test = x_train[order[:cut]], y_train[order[:cut]]
        x_train, y_train = x_train[order[cut:]], y_train[order[cut:]]
    arrays = (x_train, y_train, x_test, y_test)
    for a in arrays:
        a.flags.writeable = False
    return arrays, tuple(names), columns


def split_order(y: np.ndarray, seed: int = SPLIT_SEED) -> np.ndarray:
    """A fixed shuffle of the rows; stratified when every class has ``MIN_STRATIFY`` rows.

    Stratified: the rows of each class keep their shuffled order and are spread evenly through
    the result (row k of a class of n sorts at (k + 0.5) / n), so every prefix, the test split
    and then the validation split, holds each class in its share of the file.
    """
    order = np.random.default_rng(seed).permutation(len(y))
    _, inverse, counts = np.unique(y[order], return_inverse=True, return_counts=True)
    if counts.min() < MIN_STRATIFY:
        return order
    rank = np.empty(len(order))
    for c in range(len(counts)):
        members = inverse == c
        rank[members] = np.arange(counts[c])
    return order[np.argsort((rank + 0.5) / counts[inverse], kind="stable")]


def _check_shapes(p: Path, split: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Refuse what cannot be a split; return the labels as a 1-D array."""
    if x.dtype.kind not in "fiub":
        raise DataError(f"{p}: x_{split} has dtype {x.dtype}; features must be numbers")
    if x.ndim < 2:
        raise DataError(f"{p}: x_{split} has shape {x.shape}; expected (N, features) or images "
                        "(N, H, W[, C])")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{p}: y_{split} has shape {y.shape}; labels must be one per row (N,)")
    if len(x) != len(y):
        raise DataError(f"{p}: x_{split} has {len(x)} rows but y_{split} has {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{p}: x_{split} has no rows" if p.suffix.lower() == ".npz"
                        else f"{p} has a header but no rows")
    if x[0].size == 0:
        raise DataError(f"{p}: x_{split} has no features (shape {x.shape})")
    return y


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    try:
        with np.load(p, allow_pickle=False) as z:
            present = set(z.files)
            missing = [k for k in TRAIN_KEYS if k not in present]
            half = [k for k in TEST_KEYS if k not in present]
            if missing or len(half) == 1:
                raise DataError(f"{p} lacks {', '.join(missing or half)}; a data .npz holds x_train, "
                                "y_train and, for a test split of its own, x_test and y_test (the "
                                "Keras layout)")
            arrays = {k: npz_array(z, k, str(p)) for k in NPZ_KEYS if k in present}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p} is not a readable .npz file ({e}); it is truncated, damaged or holds "
                        "pickled objects (never loaded)") from None
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return arrays["x_train"], arrays["y_train"], test


def _label_index(p: Path, columns: list[str], label: str | None) -> int:
    """The label column's position: ``label``, or the last column when it is not given."""
    if len(columns) < 2:
        raise DataError(f"{p} has {len(columns)} column; it needs a label column and at least one "
                        "feature column")
    if label is None:
        return len(columns) - 1
    hits = [i for i, c in enumerate(columns) if c == label]
    if not hits:
        shown = ", ".join(repr(c) for c in columns[:_SHOWN_COLUMNS])
        more = f" and {len(columns) - _SHOWN_COLUMNS} more" if len(columns) > _SHOWN_COLUMNS else ""
        raise DataError(f"{p} has no column {label!r} (data.label); its columns are {shown}{more}")
    if len(hits) > 1:
        raise DataError(f"{p} has {len(hits)} columns named {label!r}; rename all but one")
    return hits[0]


def _read_csv(p: Path, label: str | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features (float32), raw label strings and the column names (features, then the label)
    of a CSV with a header row."""
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise DataError(f"{p}: {_not_utf8(p)}") from None
    except (OSError, csv.Error) as e:
        raise DataError(f"{p} is not a readable UTF-8 CSV file ({e})") from None
    if not header:
        raise DataError(f"{p} has no header row; the first line must name the columns")
    columns = [c.strip() for c in header]
    li = _label_index(p, columns, label)
    codes: dict[str, int] = {}

    def code(cell: str) -> int:     # label strings -> their order of first appearance
        cell = cell.strip()
        if not cell:
            raise ValueError("empty label")
        return codes.setdefault(cell, len(codes))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # "input contained no data": checked below
            table = np.loadtxt(p, delimiter=",", skiprows=1, quotechar='"', comments=None,
                               dtype=np.float32, converters={li: code}, ndmin=2, encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{p}: {_not_utf8(p)}") from None
    except ValueError as e:
        raise DataError(f"{p}: {_csv_problem(p, columns, li) or _loadtxt_problem(p, columns, e)}"
                        ) from None
    named = (*columns[:li], *columns[li + 1:], columns[li])
    if len(table) == 0:
        return np.zeros((0, len(columns) - 1), np.float32), np.zeros(0, str), named
    if table.shape[1] != len(columns):   # loadtxt reads the first data row's width as the table's
        raise DataError(f"{p}: {_csv_problem(p, columns, li) or 'rows and header differ in width'}")
    names = np.array(list(codes), dtype=str)
    y = names[table[:, li].astype(np.int64)]
    return np.ascontiguousarray(np.delete(table, li, axis=1)), y, named


def _csv_problem(p: Path, columns: list[str], li: int) -> str | None:
    """The first line ``np.loadtxt`` refused, in words (read again with the csv module)."""
    with open(p, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        for row in reader:
            lineno = reader.line_num      # the line the record ends on (a quoted field may span)
            if lineno == 1 or not row:
                continue
            if len(row) != len(columns):
                return (f"line {lineno} has {len(row)} fields but the header names {len(columns)} "
                        "columns (ragged rows)")
            for j, cell in enumerate(row):
                if not cell.strip():
                    what = "the label" if j == li else "a missing value"
                    return f"line {lineno}, column {columns[j]!r} is empty ({what}); fill or drop it"
                if j != li:
                    try:
                        float(cell)
                    except ValueError:
                        return (f"line {lineno}, column {columns[j]!r}: {cell.strip()[:40]!r} is "
                                "not a number (every column but the label is a feature)")
    return None


def _not_utf8(p: Path) -> str:
    """The first line of ``p`` that is not UTF-8, in words (the decoder counts bytes, not lines)."""
    with open(p, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"line {lineno} is not UTF-8 text (byte {line[e.start]:#04x} at column "
                        f"{e.start + 1}); save the file as UTF-8")
    return "it is not UTF-8 text; save the file as UTF-8"


def _loadtxt_problem(p: Path, columns: list[str], e: Exception) -> str:
    """``np.loadtxt``'s message with its row (0-based, blank lines skipped) as the file's line."""
    m = re.fullmatch(r"(.*) at row (\d+), column (\d+)\.?", str(e), re.DOTALL)
    if not m or not 1 <= int(m[3]) <= len(columns):
        return str(e)
    return f"{_csv_line(p, '', int(m[2]))}, column {columns[int(m[3]) - 1]!r}: {m[1]}"


def _read_parquet(p: Path, label: str | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features (float32), raw labels and the column names (features, then the label) of a
    parquet table."""
    try:
        # optional dependency: pyarrow (pip install -e '.[files]'), imported only here
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise DataError(f"{p}: reading .parquet needs pyarrow: pip install -e '.[files]' in "
                        "the dnnlab checkout (or save the table as .csv)") from None
    try:
        table = pq.read_table(p)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(f"{p} is not a readable parquet file ({e})") from None
    columns = list(table.column_names)
    li = _label_index(p, columns, label)
    features = []
    for j, name in enumerate(columns):
        col = table.column(j)
        if col.null_count:
            what = "labels" if j == li else "values"
            raise DataError(f"{p}: column {name!r} has {col.null_count} missing {what} (null); "
                            "fill or drop them")
        if j == li:
            continue
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                or pa.types.is_boolean(col.type)):
            raise DataError(f"{p}: column {name!r} has type {col.type}; every column but the label "
                            "is a feature and must hold numbers")
        features.append(col.to_numpy().astype(np.float32))
    y = table.column(li)
    if pa.types.is_dictionary(y.type):
        y = y.cast(y.type.value_type)
    named = (*columns[:li], *columns[li + 1:], columns[li])
    return np.stack(features, axis=1), np.asarray(y.to_numpy(zero_copy_only=False)), named


def _npz_row(split: str, row: int) -> str:
    return f"y_{split} row {row}"


def _table_row(split: str, row: int) -> str:
    return f"row {row + 1}"


def _csv_line(p: Path, split: str, row: int) -> str:
    """The file's line holding data row ``row`` (counted as ``np.loadtxt`` counts: blank lines
    skipped), read again with the csv module, which knows the lines a quoted field spans."""
    with open(p, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        next(reader, None)
        seen = 0
        for record in reader:
            if any(cell.strip() for cell in record):
                if seen == row:
                    return f"line {reader.line_num}"
                seen += 1
    return f"data row {row + 1}"


def encode_labels(y_train: np.ndarray, y_test: np.ndarray, what: str,
                  where: Callable[[str, int], str] = _npz_row
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels as int64 0..n-1 and the class names: integers as they are, strings in sorted order.

    ``where(split, row)`` names a row in a message (a line of a CSV, a row of y_train ...). The
    classes are counted with ``np.unique``, never ``bincount``: a label of 1e11 is one wrong
    value, not a count of classes to allocate.
    """
    both = np.concatenate([y_train, y_test])
    kind = both.dtype.kind
    if kind in "OUS":
        text = both.astype(str)
        values = np.unique(text)
        if np.any(np.char.str_len(np.char.strip(values)) == 0):
            raise DataError(f"{what}: a label is empty; every row needs a label")
        numbers = _as_integers(values, what)
        if numbers is None:                         # words: sorted, and they name the classes
            codes = np.searchsorted(values, text)
            return codes[:len(y_train)], codes[len(y_train):], [str(v) for v in values]
        both = numbers[np.searchsorted(values, text)]
    elif kind == "f":
        _check_integral(both, what)
    elif kind not in "iub":
        raise DataError(f"{what}: the labels have dtype {both.dtype}; labels must be integers "
                        "0..n-1 or strings")
    both = both.astype(np.int64)
    negative = both < 0
    if negative.any():
        i = int(np.argmax(negative))
        split, row = ("train", i) if i < len(y_train) else ("test", i - len(y_train))
        count = int(np.count_nonzero(negative))
        raise DataError(f"{what}: {count} label{'s' if count > 1 else ''} below 0 (the first, "
                        f"{int(both[i])}, at {where(split, row)}); integer labels run 0..n-1")
    present = np.unique(both)
    hi = int(present[-1])
    if len(present) != hi + 1:
        gap = int(np.argmax(present != np.arange(len(present))))
        raise DataError(f"{what}: the labels run {int(present[0])}..{hi} but class {gap} has no "
                        f"example ({hi + 1 - len(present)} of those {hi + 1} classes have none); "
                        "integer labels must run 0..n-1 with every class present (renumber "
                        "them, or use strings: they are mapped in sorted order)")
    return both[:len(y_train)], both[len(y_train):], [str(i) for i in range(hi + 1)]


def _as_integers(values: np.ndarray, what: str) -> np.ndarray | None:
    """``values`` (strings) as int64 when every one is a number, None when some are words."""
    try:
        numbers = np.array([float(v) for v in values])
    except ValueError:
        return None
    _check_integral(numbers, what)
    return numbers.astype(np.int64)


def _check_integral(numbers: np.ndarray, what: str) -> None:
    """Refuse fractional labels: a column of measurements is a regression target, not classes."""
    bad = numbers[~np.isfinite(numbers) | (numbers != np.round(numbers))]
    if len(bad):
        raise DataError(f"{what}: the labels hold {float(bad[0])!r}; labels must be integers 0..n-1 "
                        "or strings (is data.label a measurement rather than a class?)")

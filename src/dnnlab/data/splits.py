"""Datasets as the models see them: float32 feature matrices and int64 labels, split three ways.

``build`` turns released arrays into the book's splits: it keeps a class subset (relabelled in
the order given) first, then takes validation = the first ``valid_size`` training images of those
classes (a row count, or a fraction in (0, 1) of them), test = the official test set, draws
``per_class`` training images per class, caps the training set at ``limit`` and standardizes
with training-split statistics. Rows are chosen on the uint8 images first and
converted to float once, so a full CIFAR-10 load allocates each float split exactly once.

Every way in (``build`` for the built-in datasets and your files, ``from_arrays``) ends in the
same two checks before anything trains: no NaN or infinity in any split (counted per split, so
the message says where to look), and a training split holding at least two classes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from numpy.typing import ArrayLike

from dnnlab.data.preprocessing import Preprocessing
from dnnlab.errors import DataError

STD_FLOOR = 1e-8
SPLITS = ("train", "valid", "test")
FINGERPRINT_HEX = 16   # 64 bits of sha256: no accidental collision between two datasets
BOOK_VALID = 5000      # data.valid_size of the built-in datasets: the book's 5,000 images
FILE_VALID = 0.2       # ... and of a file (data.name = "file"): a fifth of its training rows


@dataclass
class Split:
    x: np.ndarray   # float32 (N, D)
    y: np.ndarray   # int64 (N,)

    def __len__(self) -> int:
        return len(self.y)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` as torch tensors on ``device`` (sharing memory with the arrays on the CPU)."""
        return torch.as_tensor(self.x).to(device), torch.as_tensor(self.y).to(device)


@dataclass
class Dataset:
    name: str
    train: Split
    valid: Split
    test: Split
    class_names: list[str]
    image_shape: tuple[int, ...]
    source: str                      # the file or folder it came from, or "generated"
    mean: np.ndarray | None = None   # per-feature statistics of the training split, when standardized
    std: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None   # a table's feature columns, in order
    label: str | None = None                       # ... and its label column
    scale: float = 1.0                             # raw values were divided by it (255: uint8)
    # fingerprint() once computed; init=False so dataclasses.replace (new arrays) starts afresh
    _fingerprint: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        """One line for logs: sizes, shape and where the data came from."""
        std = ", standardized" if self.mean is not None else ""
        return (f"{self.name}: {len(self.train)} train / {len(self.valid)} valid / "
                f"{len(self.test)} test, {self.n_features} features, {self.n_classes} classes"
                f"{std} (from {self.source})")

    def preprocessing(self) -> Preprocessing:
        """The steps from a raw row to this dataset's rows, with the feature and class names:
        what a run records so that its model can be used on raw data (:mod:`dnnlab.data.preprocessing`)."""
        return Preprocessing(self.n_features, tuple(self.class_names), self.feature_names,
                             self.label, self.scale, self.mean, self.std)

    def fingerprint(self) -> dict[str, str]:
        """Split name -> 16 hex digits of sha256 over the prepared x and y (dtype, shape, bytes).

        It identifies the arrays a run trained on whatever their path, options or origin: a run
        records it and a resume on other data is refused. Computed once and cached on this
        object, so the splits are treated as final once it is asked for (``standardized``
        in place clears it). sha256 rather than blake2b by measurement: on CPUs with SHA-NI
        instructions sha256 is the faster of the two, and hashing CIFAR-10's three splits
        costs a fraction of loading them (figures: benchmarks/README.md).
        """
        if self._fingerprint is None:
            self._fingerprint = {name: split_fingerprint(getattr(self, name)) for name in SPLITS}
        return dict(self._fingerprint)


def split_fingerprint(split: Split) -> str:
    """16 hex digits of sha256 over one split's x and y (dtype, shape, bytes)."""
    h = hashlib.sha256()
    for a in (split.x, split.y):
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)   # a view: no copy
    return h.hexdigest()[:FINGERPRINT_HEX]


def check_finite(splits: dict[str, Split], what: str) -> None:
    """Refuse NaN and infinities, with their count in each split and the place of the first."""
    sums = {name: s.x.sum(dtype=np.float64) for name, s in splits.items()}
    if all(np.isfinite(v) for v in sums.values()):   # exact: float32 cannot overflow a float64 sum
        return
    counts = {name: int(np.count_nonzero(~np.isfinite(s.x))) for name, s in splits.items()}
    first = next(name for name, c in counts.items() if c)
    row, col = np.argwhere(~np.isfinite(splits[first].x))[0]
    per_split = ", ".join(f"{c} in {name}" for name, c in counts.items())
    raise DataError(f"{what}: {sum(counts.values())} non-finite values (NaN or inf): {per_split} "
                    f"(the first at {first} row {row}, column {col}); clean or impute them first")


def check_classes(train: Split, class_names: list[str], what: str) -> None:
    """Refuse a training split with fewer than two classes: there would be nothing to learn."""
    present = np.unique(train.y)
    if len(present) < 2:
        only = f"class {class_names[int(present[0])]!r}" if len(present) else "no class"
        raise DataError(f"{what}: the training split holds {only} only; a classifier needs examples "
                        "of 2 or more classes (check the labels, classes, limit and per_class)")


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A contiguous increasing index array as a slice, so taking rows is a view, not a copy."""
    if len(idx) == 0:
        return slice(0, 0)
    if idx[-1] - idx[0] + 1 == len(idx) and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _take(x: np.ndarray, y: np.ndarray, idx: np.ndarray, lut: np.ndarray | None) -> Split:
    """Rows ``idx`` as float32 (uint8 pixels scaled to [0, 1]) and int64 labels (relabelled)."""
    rows = x.reshape(len(x), -1)[_as_slice(idx)]
    if rows.dtype == np.uint8:
        xf = np.divide(rows, np.float32(255), dtype=np.float32)
    else:
        with np.errstate(over="ignore"):   # beyond float32's range becomes inf: check_finite counts it
            xf = np.array(rows, dtype=np.float32, order="C")
    labels = y[idx].astype(np.int64)
    return Split(xf, lut[labels] if lut is not None else labels)


def _class_table(classes: list[int] | None, n_classes: int) -> np.ndarray | None:
    """old label -> new label (-1 = dropped), or None when every class is kept as is."""
    if classes is None:
        return None
    classes = [int(c) for c in classes]
    if len(set(classes)) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"classes = {classes}: give 2 or more distinct labels, e.g. [0, 1, 2, 3, 4]")
    bad = [c for c in classes if not 0 <= c < n_classes]
    if bad:
        raise DataError(f"classes = {classes}: label {bad[0]} does not exist; labels run "
                        f"0..{n_classes - 1}")
    lut = np.full(n_classes, -1, dtype=np.int64)
    lut[classes] = np.arange(len(classes))
    return lut


def row_count(value: int | float, n: int, key: str) -> int:
    """A row count given as a count or as a fraction in (0, 1) of ``n`` rows (rounded)."""
    if isinstance(value, float) and not value.is_integer():
        if not 0 < value < 1:
            raise DataError(f"{key} = {value}: a fraction must lie in (0, 1), e.g. {key} = 0.2 "
                            "(or give a row count)")
        return int(round(value * n))
    return int(value)


def build(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
          y_test: np.ndarray, *, class_names: list[str], source: str, classes=None,
          per_class: int | None = None, valid_size: int | float = BOOK_VALID,
          limit: int | None = None, standardize: bool = False, seed: int = 0,
          feature_names: tuple[str, ...] | None = None, label: str | None = None) -> Dataset:
    """The book's splits of a released dataset, with the data-layer options applied.

    ``classes`` is applied first: validation is the first ``valid_size`` training rows of the
    kept classes, so ``classes=[0..4], valid_size=2000`` gives 2000 validation rows of 0-4.
    """
    unit = "images" if x_train.ndim > 2 else "rows"
    if per_class is not None and per_class < 1:
        raise DataError(f"per_class = {per_class} must be at least 1 (or left out)")
    if limit is not None and limit < 1:
        raise DataError(f"limit = {limit} must be at least 1 (or left out)")
    lut = _class_table(classes, len(class_names))
    names = list(class_names) if lut is None else [class_names[c] for c in classes]

    def keep(idx: np.ndarray, y: np.ndarray) -> np.ndarray:
        return idx if lut is None else idx[lut[y[idx]] >= 0]

    kept = keep(np.arange(len(x_train)), y_train)
    n = len(kept)
    n_valid = row_count(valid_size, n, "data.valid_size")
    if n_valid < 0 or n_valid >= n:
        which = " of the kept classes" if lut is not None else ""
        raise DataError(f"data.valid_size = {valid_size} asks for {n_valid} validation {unit} but the "
                        f"{name} training set has {n} {unit}{which}, and some must be left for "
                        f"training; set data.valid_size = {FILE_VALID} (a fraction) or a count "
                        f"below {n}")
    valid_idx, train_idx = kept[:n_valid], kept[n_valid:]
    test_idx = keep(np.arange(len(x_test)), y_test)
    if per_class is not None:
        train_idx = _draw_per_class(train_idx, y_train, lut, len(names), per_class, seed, names)
    if limit is not None:
        train_idx = train_idx[:limit]
    if len(train_idx) == 0:
        raise DataError(f"{name}: no training {unit} are left after the split and class selection; "
                        "check data.valid_size and data.classes")
    ds = Dataset(name, _take(x_train, y_train, train_idx, lut), _take(x_train, y_train, valid_idx, lut),
                 _take(x_test, y_test, test_idx, lut), names, tuple(x_train.shape[1:]), source,
                 feature_names=feature_names, label=label,
                 scale=255.0 if x_train.dtype == np.uint8 else 1.0)
    check_finite({k: getattr(ds, k) for k in SPLITS}, source)
    check_classes(ds.train, names, source)
    return standardized(ds, inplace=True) if standardize else ds


def _draw_per_class(idx: np.ndarray, y: np.ndarray, lut, n_classes: int, k: int, seed: int,
                    names: list[str]) -> np.ndarray:
    """``k`` indices per class drawn without replacement with ``seed``, kept in dataset order."""
    rng = np.random.default_rng(seed)
    labels = y[idx] if lut is None else lut[y[idx]]
    chosen = []
    for c in range(n_classes):
        members = idx[labels == c]
        if len(members) < k:
            raise DataError(f"per_class = {k}, but class {names[c]!r} has only {len(members)} "
                            "training images; lower per_class")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def _train_stats(x: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std: float64 sums, float32 deviations in row chunks (no big temporary)."""
    n = len(x)
    mean = x.sum(axis=0, dtype=np.float64) / n
    mean32 = mean.astype(np.float32)
    sq = np.zeros(x.shape[1])
    for s in range(0, n, chunk):
        d = x[s:s + chunk] - mean32
        d *= d
        sq += d.sum(axis=0, dtype=np.float64)
    return mean, np.sqrt(sq / n)


def standardized(ds: Dataset, *, inplace: bool = False) -> Dataset:
    """``ds`` with every split scaled by the training split's per-feature mean and std.

    Features whose training std is below 1e-8 (constant pixels, e.g. MNIST's borders) are
    divided by 1 instead, so they become 0 rather than inf. ``inplace=True`` rewrites the
    arrays of ``ds`` (what the loader does with the arrays it just made: no second copy);
    otherwise a new Dataset with new arrays is returned and ``ds`` is left alone.
    """
    if ds.mean is not None:
        raise DataError(f"{ds.name} is already standardized; standardize once")
    mean, std = _train_stats(ds.train.x)
    std[std < STD_FLOOR] = 1.0
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    if inplace:
        for split in (ds.train, ds.valid, ds.test):
            split.x -= mean32
            split.x /= std32
        ds.mean, ds.std, ds._fingerprint = mean32, std32, None
        return ds
    scale = [Split((s.x - mean32) / std32, s.y) for s in (ds.train, ds.valid, ds.test)]
    return replace(ds, train=scale[0], valid=scale[1], test=scale[2], mean=mean32, std=std32)


def check_features(x: ArrayLike, what: str) -> np.ndarray:
    """``x`` as a float32 matrix (N, D) (non-finite values are counted by ``check_finite``)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{what} has dtype {x.dtype}; features must be numbers")
    if x.ndim < 2:
        raise DataError(f"{what} has shape {x.shape}; expected (N, features) or (N, H, W[, C])")
    with np.errstate(over="ignore"):   # beyond float32's range becomes inf: check_finite counts it
        return np.ascontiguousarray(x.reshape(len(x), int(np.prod(x.shape[1:]))), dtype=np.float32)


def check_labels(y: ArrayLike, n: int, what: str) -> np.ndarray:
    """``y`` as int64 labels, one per row of the matching features."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{what} has shape {y.shape}; labels must be a 1-D array of class indices")
    if len(y) != n:
        raise DataError(f"{what} has {len(y)} labels but its features have {n} rows")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{what} has dtype {y.dtype}; labels must be integers 0..n_classes-1")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{what} holds the negative label {int(y.min())}; labels run 0..n_classes-1")
    return y


def from_arrays(x_train: ArrayLike, y_train: ArrayLike, x_valid: ArrayLike, y_valid: ArrayLike,
                x_test: ArrayLike | None = None, y_test: ArrayLike | None = None, *,
                name: str = "arrays", class_names: list[str] | None = None) -> Dataset:
    """A Dataset from your own arrays, validated (images are flattened, values kept as given).

    ``x_train``/``y_train`` train, ``x_valid``/``y_valid`` drive early stopping, and
    ``x_test``/``y_test`` (optional) are evaluated on the final model; ``x`` is (N, features) or
    images (N, H, W[, C]) of numbers, ``y`` integer labels.

    Labels must be integers 0..n_classes-1 where n_classes is ``len(class_names)`` or else the
    largest label + 1. Without a test set the test split is empty. Errors name ``from_arrays``.
    """
    if (x_test is None) != (y_test is None):
        raise DataError("give both x_test and y_test, or neither")
    shape = tuple(np.shape(x_train)[1:])
    xs: dict[str, ArrayLike] = {"x_train": x_train, "x_valid": x_valid}
    ys: dict[str, ArrayLike] = {"y_train": y_train, "y_valid": y_valid}
    if x_test is not None and y_test is not None:
        xs["x_test"], ys["y_test"] = x_test, y_test
    splits = {}
    for (xk, x), (yk, y) in zip(xs.items(), ys.items()):
        xf = check_features(x, xk)
        if xf.shape[1] != int(np.prod(shape, dtype=np.int64)):
            raise DataError(f"{xk} has {xf.shape[1]} features per row but x_train has "
                            f"{int(np.prod(shape))}; all splits need the same features")
        splits[xk[2:]] = Split(xf, check_labels(y, len(xf), yk))
    for key in ("train", "valid"):
        if len(splits[key]) == 0:
            raise DataError(f"x_{key} is empty; a dataset needs training and validation examples")
    top = max(int(s.y.max()) for s in splits.values() if len(s))
    rows = sum(len(s) for s in splits.values())
    if class_names is None and top >= rows:     # a count no data can back: refused, not allocated
        raise DataError(f"the labels reach {top} but there are {rows} of them: at least "
                        f"{top + 1 - rows} of those {top + 1} classes have no example; renumber "
                        "the labels 0..n-1 or give class_names")
    if class_names is None:
        class_names = [str(i) for i in range(top + 1)]
    class_names = list(class_names)
    for key, s in splits.items():
        if len(s) and int(s.y.max()) >= len(class_names):
            raise DataError(f"y_{key} holds label {int(s.y.max())} but class_names lists "
                            f"{len(class_names)} classes (labels 0..{len(class_names) - 1})")
    if "test" not in splits:
        splits["test"] = Split(np.zeros((0, splits["train"].x.shape[1]), np.float32),
                               np.zeros(0, np.int64))
    check_finite(splits, "from_arrays")
    check_classes(splits["train"], class_names, "from_arrays")
    return Dataset(name, splits["train"], splits["valid"], splits["test"], class_names, shape,
                   source="arrays")

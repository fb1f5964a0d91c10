"""The data layer: real and generated datasets as float32 matrices split the way the book splits them.

>>> from dnnlab.data import load_dataset
>>> ds = load_dataset("mnist", classes=[0, 1, 2, 3, 4])     # digits 0-4, relabelled 0..4
>>> ds.train.x.shape, ds.valid.x.shape
((25596, 784), (5000, 784))
>>> b = load_dataset("mnist", classes=[5, 6, 7, 8, 9], per_class=100, seed=1)   # 100 per digit
>>> c = load_dataset("cifar10", standardize=True)   # needs the files or a network  # doctest: +SKIP

>>> own = load_dataset("file", path="iris.csv", label="species", valid_size=20)  # doctest: +SKIP

Datasets: ``mnist``, ``fashion-mnist``, ``cifar10``, ``synthetic`` (generated, no files) and
``file`` (your own .npz, .csv or .parquet: :mod:`dnnlab.data.files`). Where files are looked for
and how they are verified: :mod:`dnnlab.data.locate`. Formats: :mod:`dnnlab.data.formats`.
Downloads: :mod:`dnnlab.data.download`. Splits, options and the fingerprint:
:mod:`dnnlab.data.splits`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from dnnlab.config import DataConfig, source_problem
from dnnlab.data.files import load_file
from dnnlab.data.locate import decode, obtain
from dnnlab.data.registry import GENERATED, NAMES, get_spec
from dnnlab.data.splits import BOOK_VALID, FILE_VALID, Dataset, Split, build, from_arrays, standardized
from dnnlab.data.status import dataset_status, format_status
from dnnlab.data.synthetic import load_synthetic, synthetic
from dnnlab.errors import DataError

__all__ = ["Dataset", "Split", "NAMES", "load_dataset", "load_from_config", "ConfigLoader", "from_arrays",
           "synthetic", "standardized", "dataset_status", "format_status"]


def load_dataset(name: str, *, data_dir: str | Path | None = None, classes: list[int] | None = None,
                 per_class: int | None = None, valid_size: int | float | None = None,
                 standardize: bool = False, limit: int | None = None, seed: int = 0,
                 download: bool = True, progress: bool = True, path: str | Path | None = None,
                 label: str | None = None, test_size: int | float | None = None) -> Dataset:
    """Load ``name`` split as the book does: valid = first ``valid_size`` training images.

    ``classes`` keeps those labels in every split, relabelled 0..n-1 in the order given, before
    the validation rows are taken; ``valid_size`` is a row count or a fraction in (0, 1) of the
    kept training rows (default: the book's 5000 for the built-in datasets, 0.2 for a file);
    ``per_class`` draws that many training images per class with ``seed``; ``limit`` keeps the
    first ``limit`` training images; ``standardize`` scales every split by the training split's
    per-feature mean and std (kept as ``ds.mean`` / ``ds.std``). Pixels are scaled to [0, 1].
    ``data_dir`` is a folder holding the dataset's files (default: ``$DNNLAB_DATA_DIR``, the
    cache, the package's MNIST); ``download`` allows fetching a missing built-in dataset (with a
    progress bar unless ``progress=False``).
    ``name = "file"`` reads ``path`` (relative to the current directory) with ``label`` naming
    the label column of a table, and ``test_size`` (rows or a fraction, default 0.2) the test
    split of a file that has none of its own: :mod:`dnnlab.data.files`.
    """
    if valid_size is None:
        valid_size = FILE_VALID if path is not None else BOOK_VALID
    options: dict[str, Any] = dict(classes=classes, per_class=per_class, valid_size=valid_size,
                                   limit=limit, standardize=standardize, seed=seed)
    problem = source_problem(name, path, label)
    if problem:
        raise DataError(problem)
    if path is not None:     # name is FILE_DATASET (source_problem checked it)
        return load_file(path, label=label, test_size=test_size, **options)
    if test_size is not None:
        raise DataError(f"data.test_size = {test_size} applies only to a file without a test split "
                        f"of its own; {name} has its own test set: leave data.test_size out")
    if name == GENERATED:
        return load_synthetic(**options)
    spec = get_spec(name)
    found = obtain(spec, data_dir, download=download, progress=progress)
    raw = decode(found)
    return build(name, raw.x_train, raw.y_train, raw.x_test, raw.y_test,
                 class_names=list(spec.class_names), source=str(found.path), **options)


def load_from_config(cfg: DataConfig, *, download: bool = True, progress: bool = True) -> Dataset:
    """``load_dataset`` driven by a :class:`dnnlab.config.DataConfig` (the ``[data]`` table)."""
    return load_dataset(cfg.name, data_dir=cfg.data_dir, classes=cfg.classes,
                        per_class=cfg.per_class, valid_size=cfg.valid_size,
                        standardize=cfg.standardize, limit=cfg.limit, seed=cfg.seed,
                        download=download, progress=progress, path=cfg.path, label=cfg.label,
                        test_size=cfg.test_size)


class ConfigLoader:
    """:func:`load_from_config` that loads each distinct ``[data]`` table once (sweep groups and
    tune trials that share their data share one Dataset; those that differ get their own)."""

    def __init__(self, progress: bool = True):
        self.progress = progress
        self.loaded: dict[str, Dataset] = {}

    @staticmethod
    def key(cfg: DataConfig) -> str:
        return json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)

    def __call__(self, cfg: DataConfig) -> Dataset:
        key = self.key(cfg)
        if key not in self.loaded:
            self.loaded[key] = load_from_config(cfg, progress=self.progress)
        return self.loaded[key]

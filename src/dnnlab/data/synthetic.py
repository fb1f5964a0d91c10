"""Generated data that a small MLP learns in a few epochs: for unit tests and quick demos.

Gaussian blobs: each class has a random centre, each example is its class centre plus unit
Gaussian noise. Centres are scaled so two classes lie about 4 noise-stds apart whatever the
number of features: a linear model reaches about 90% with the defaults (98% with 2 classes,
84% with 10), never 100%, so a model that learns is told apart from one that memorises.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dnnlab.data.splits import Dataset, build, from_arrays
from dnnlab.errors import DataError

SEPARATION = 4.0
# load_dataset("synthetic"): one fixed dataset, split like the real ones (first valid_size of
# the training set for validation), so configs and studies can run without any files.
POOL_TRAIN, POOL_TEST, POOL_FEATURES, POOL_CLASSES = 10_000, 2_000, 20, 3


def blobs(n: int, n_features: int, n_classes: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples (float32) with balanced labels (int64) in random order."""
    centres = rng.normal(size=(n_classes, n_features)) * (SEPARATION / np.sqrt(2 * n_features))
    y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    x = centres[y] + rng.normal(size=(n, n_features))
    return x.astype(np.float32), y


def synthetic(n_train: int = 1000, n_valid: int = 200, n_test: int = 200, n_features: int = 20,
              n_classes: int = 3, seed: int = 0) -> Dataset:
    """A learnable generated Dataset; the same ``seed`` gives the same arrays."""
    if min(n_train, n_valid, n_features) < 1 or n_test < 0 or n_classes < 2:
        raise DataError(f"synthetic(n_train={n_train}, n_valid={n_valid}, n_test={n_test}, "
                        f"n_features={n_features}, n_classes={n_classes}): sizes must be >= 1 "
                        "(n_test >= 0) and n_classes >= 2")
    x, y = blobs(n_train + n_valid + n_test, n_features, n_classes, np.random.default_rng(seed))
    a, b = n_train, n_train + n_valid
    ds = from_arrays(x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], name="synthetic",
                     class_names=[f"class {i}" for i in range(n_classes)])
    ds.source = "generated"
    return ds


def load_synthetic(**options: Any) -> Dataset:
    """The fixed ``synthetic`` dataset through the same split/select/standardize path as real data."""
    rng = np.random.default_rng(0)
    x, y = blobs(POOL_TRAIN + POOL_TEST, POOL_FEATURES, POOL_CLASSES, rng)
    return build("synthetic", x[:POOL_TRAIN], y[:POOL_TRAIN], x[POOL_TRAIN:], y[POOL_TRAIN:],
                 class_names=[f"class {i}" for i in range(POOL_CLASSES)], source="generated",
                 **options)

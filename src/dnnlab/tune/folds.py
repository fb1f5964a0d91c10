"""Stratified k-fold splits in numpy (scikit-learn's StratifiedKFold, without the dependency).

Every class is shuffled with ``seed`` and dealt round-robin to the folds, continuing the deal
where the previous class stopped, so each fold gets each class's share to within one image and
the fold sizes differ by at most one.
"""

from __future__ import annotations

import numpy as np

from dnnlab.errors import ConfigError

MAX_FOLDS = 20      # each fold is a training per trial: more is a typo, not a tighter estimate


def stratified_kfold(y: np.ndarray, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train_idx, held_out_idx) pairs; the held-out parts partition ``range(len(y))``."""
    y = np.asarray(y)
    if not 2 <= k <= MAX_FOLDS:
        raise ConfigError(f"--folds {k}: cross-validation takes 2 to {MAX_FOLDS} folds (each is "
                          "one training per trial; 3 to 5 is usual)")
    classes, counts = np.unique(y, return_counts=True)
    if len(y) == 0 or counts.min() < k:
        small = classes[counts.argmin()] if len(y) else None
        raise ConfigError(f"--folds {k}: class {small} has only {counts.min() if len(y) else 0} "
                          f"training images, fewer than the folds; use fewer folds or more data")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    dealt = 0
    for c in classes:
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold_of[idx] = (dealt + np.arange(len(idx))) % k
        dealt += len(idx)
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]

"""What makes a run's measured numbers weak, said in sentences: the split checks, declared once.

A test split of one class reports that class's recall as "accuracy"; an accuracy on a handful of
rows is a coin toss; a class the model never saw in training counts as errors in test; a
validation split of one class (a class-sorted file) steers early stopping and restore-best by
that one class; an empty split leaves its metrics unmeasured. None of these is a reason to refuse
the run (the data layer refuses what cannot be trained at all: :func:`dnnlab.data.splits.check_classes`),
but every number the run reports must say so. :func:`split_warnings` is the one place they are
decided; the trainer attaches its sentences to every result (``FitResult.warnings``), so
``summary.json`` (``warnings``), ``dnnlab train``'s last lines and ``dnnlab report`` all carry them,
for every command that trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# An accuracy measured on fewer rows is uncertain by more than +-0.1 (95%, at accuracy 0.5).
TINY_SPLIT = 100
_SHOWN = 5      # classes named in one sentence
_NAME_CHARS = 40   # of each name (a file's label may be any string)


def _names(classes: Sequence[int] | np.ndarray, class_names: Sequence[str] | None) -> str:
    def one(c: int) -> str:
        if class_names is None or not 0 <= c < len(class_names):
            return str(c)
        return repr(class_names[c][:_NAME_CHARS])
    shown = ", ".join(one(int(c)) for c in classes[:_SHOWN])
    more = f" and {len(classes) - _SHOWN} more" if len(classes) > _SHOWN else ""
    return f"class {shown}" if len(classes) == 1 else f"classes {shown}{more}"


def half_width(n: int) -> float:
    """The 95% interval's half-width of an accuracy measured on ``n`` rows, at its widest
    (accuracy 0.5; normal approximation): 1.96 * sqrt(0.25 / n)."""
    return 1.96 * math.sqrt(0.25 / n)


def split_warnings(train: np.ndarray, valid: np.ndarray | None, test: np.ndarray | None,
                   class_names: Sequence[str] | None = None) -> list[str]:
    """Sentences naming what makes the validation and test numbers of these labels weak.

    ``train``, ``valid`` and ``test`` are the splits' labels; an empty array is a split that
    holds no rows (its metrics are null), None one that is not measured at all (no sentence).
    """
    out: list[str] = []
    seen = np.unique(train)
    for labels, split, why, metrics in (
            (valid, "validation", "data.valid_size = 0", "best_val_loss and best_val_accuracy"),
            (test, "test", "the data has none", "test_loss and test_accuracy")):
        if labels is None:
            continue
        n = len(labels)
        if n == 0:
            out.append(f"the {split} split is empty ({why}, or data.classes kept none of its "
                       f"rows): {metrics} are null, not measured")
            continue
        classes = np.unique(labels)
        if len(classes) == 1:
            steer = (", and early stopping and restore-best judge the model on that class alone"
                     " (a class-sorted file? shuffle its rows)" if split == "validation" else "")
            out.append(f"the {split} split holds {_names(classes, class_names)} only ({n} "
                       f"row{'s' if n > 1 else ''}): "
                       f"its accuracy is that class's recall, not the classifier's accuracy{steer}")
        if n < TINY_SPLIT:
            out.append(f"the {split} split has {n} row{'s' if n > 1 else ''}: an accuracy measured "
                       f"on it is uncertain by up to ±{half_width(n):.2f} (95%)")
        unseen = np.setdiff1d(classes, seen)
        if len(unseen):
            rows = int(np.isin(labels, unseen).sum())
            out.append(f"{_names(unseen, class_names)} {'has' if len(unseen) == 1 else 'have'} "
                       f"{rows} {split} row{'s' if rows > 1 else ''} but none in training: the "
                       "model cannot predict them, so they count as errors")
    return out

"""The transfer study's verdicts: batch norm, dropout and caching, as sentences from the results."""


from typing import Any

import numpy as np

from dnnlab.analysis.verdict import NOT_SETTLED, SUPPORTED, differs
from dnnlab.studies.common import pm
from dnnlab.studies.transfer.plan import BOOK_SECONDS, DROPOUT


def _test_acc(e: dict[str, Any]) -> str:
    return pm(e["test_accuracy_mean"], e["test_accuracy_std"])


def _gives(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, bool]:
    """'gives a better model (+0.21 points): test accuracy A vs B %. Supported: ...' (or 'no
    clearly different model ...'), and whether ``a`` is clearly better than ``b``: the
    :class:`~dnnlab.analysis.verdict.Verdict` "a gives a better model" over the seeds' test
    accuracies (Welch's t, the lab's one rule), supported."""
    v = differs("it gives a better model (test accuracy)", a["test_accuracy_values"],
                b["test_accuracy_values"], unit="pts", scale=100)
    diff = v.effect or 0.0
    if v.outcome == NOT_SETTLED:
        model = f"no clearly different model ({diff * 100:+.2f} points, within the seeds' spread)"
    else:
        model = f"a {'better' if diff > 0 else 'worse'} model ({diff * 100:+.2f} points)"
    return (f"gives {model}: test accuracy {_test_acc(a)} vs {_test_acc(b)} % ({v.sentence()}).",
            v.outcome == SUPPORTED)


def first_epoch_accuracy(runs: list[dict[str, Any]]) -> float:
    """The validation accuracy after the first epoch, mean over the seeds' runs."""
    return float(np.mean([r["history"]["val_accuracy"][0] for r in runs]))


def bn_verdict(r: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> tuple[str, bool]:
    tuned, bn = r["digits04_tuned"], r["digits04_batchnorm"]
    v_tuned = first_epoch_accuracy(runs["digits04_tuned"])
    v_bn = first_epoch_accuracy(runs["digits04_batchnorm"])
    faster = v_bn > v_tuned
    gives, better = _gives(bn, tuned)
    per_epoch = (bn["train_seconds"] / bn["epochs_mean"]) / (tuned["train_seconds"] / tuned["epochs_mean"])
    text = (f"Batch norm {'learns faster' if faster else 'does not learn faster'} at first "
            f"({v_bn * 100:.2f} % validation accuracy after one epoch vs {v_tuned * 100:.2f} %), "
            f"reaches its lowest validation loss at epoch {bn['best_epoch_mean']:.1f} on average vs "
            f"{tuned['best_epoch_mean']:.1f}, and each epoch costs {per_epoch:.2f}x the time. It "
            f"{gives}")
    return text, faster and better


def dropout_verdict(r: dict[str, Any]) -> tuple[str, bool]:
    tuned, drop = r["digits04_tuned"], r["digits04_dropout"]
    gap = lambda e: e["train_accuracy_mean"] - e["valid_accuracy_mean"]  # noqa: E731
    narrower = gap(drop) < gap(tuned)
    gives, better = _gives(drop, tuned)
    text = (f"Without dropout the tuned network fits its training images to "
            f"{tuned['train_accuracy_mean'] * 100:.2f} % vs {tuned['valid_accuracy_mean'] * 100:.2f} "
            f"% on validation (gap {gap(tuned) * 100:.2f} points). Dropout {DROPOUT} "
            f"{'narrows the gap to' if narrower else 'leaves a gap of'} {gap(drop) * 100:.2f} points "
            f"and {gives}")
    return text, narrower and better


def speed_verdict(r: dict[str, Any]) -> tuple[str, bool]:
    f5, c = r["frozen5"], r["frozen5_cached"]
    book5, book_cached = BOOK_SECONDS["frozen5"], BOOK_SECONDS["frozen5_cached"]
    ok = c["speedup"] >= 5
    same = c["max_head_difference"] < 1e-4
    text = (f"Caching the frozen layers' outputs cuts training from {f5['train_seconds']:.2f} s to "
            f"{c['train_seconds']:.2f} s ({c['cache_seconds']:.3f} s of it computing the cache): "
            f"{c['speedup']:.1f}x faster (per seed: "
            f"{', '.join(f'{v:.1f}x' for v in c['speedup_values'])}; the book: {book5} s -> "
            f"{book_cached} s, {book5 / book_cached:.1f}x). "
            f"{'It trains the same model' if same else 'The models differ'}: the heads "
            f"differ by at most {c['max_head_difference']:.1e} after training, and the test "
            f"accuracies are {_test_acc(f5)} and {_test_acc(c)} %.")
    return text, ok and same


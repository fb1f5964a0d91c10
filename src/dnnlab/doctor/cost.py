"""What layer recording costs, as a share of an epoch: ``python -m dnnlab.doctor.cost``.

The exercise's model (20 x 100 ELU, He init, Nadam, batch 32) on random CIFAR-shaped data
(45,000 training images of 3,072 features, 5,000 validation images): one epoch of ``fit`` without
callbacks is timed, then :meth:`LayerRecorder.record` on the trained model (the median of
``--repeats`` calls, each one record as training makes it once per epoch). The ratio is the share
of an epoch that recording once per epoch adds. Recording stays on by default only while this is
at most ``BUDGET``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch

from dnnlab.config import RunConfig, replace
from dnnlab.data.synthetic import synthetic
from dnnlab.doctor.record import LayerRecorder, probe_batch, steps_per_epoch
from dnnlab.train import fit

BUDGET = 0.05   # issue 14: recording may cost at most 5% of an epoch


def measure(n_train: int = 45000, repeats: int = 5, threads: int = 1, device: str = "cpu") -> dict[str, Any]:
    torch.set_num_threads(threads)
    data = synthetic(n_train=n_train, n_valid=5000, n_test=0, n_features=3072, n_classes=10)
    cfg = replace(RunConfig(), **{"name": "cost", "model.depth": 20, "model.width": 100,
                                  "model.activation": "elu", "model.init": "he_normal",
                                  "optim.name": "nadam", "train.epochs": 1, "train.batch_size": 32,
                                  "train.patience": None, "train.progress": False,
                                  "train.device": device, "data.name": "synthetic"})
    t0 = time.perf_counter()
    result = fit(cfg, data, evaluate_test=False)
    epoch = time.perf_counter() - t0
    x, y = probe_batch(data.train.tensors())
    with tempfile.TemporaryDirectory() as d:
        rec = LayerRecorder(d, x, y, steps_per_epoch=steps_per_epoch(n_train, 32))
        rec.record(0, result.model)
        times = []
        for e in range(1, repeats + 1):
            t0 = time.perf_counter()
            rec.record(e, result.model)
            times.append(time.perf_counter() - t0)
    record = statistics.median(times)
    return {"epoch_seconds": epoch, "record_seconds": record, "share": record / epoch,
            "threads": threads, "device": device, "n_train": n_train}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=45000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    r = measure(a.n_train, a.repeats, a.threads, a.device)
    verdict = "within" if r["share"] <= BUDGET else "OVER"
    print(f"epoch {r['epoch_seconds']:.2f} s, one record {r['record_seconds'] * 1000:.1f} ms: "
          f"{r['share']:.2%} of an epoch ({verdict} the {BUDGET:.0%} budget; {r['threads']} "
          f"thread(s), {r['device']})")


if __name__ == "__main__":
    main()

"""Device-resident batching: the whole split lives on the device, batches are drawn by index.

One shuffling rule serves the single-model trainer and the K-model engine alike, so that model k
of a K-model run sees exactly the batches it would see trained alone with the same seed.
"""

from __future__ import annotations

import torch


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The order of the ``n`` training examples in ``epoch`` for a run seeded with ``seed``."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1))
    return torch.randperm(n, generator=g).to(device, non_blocking=True)


def batch_slices(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each batch; the last one may be short (Keras keeps it too)."""
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]

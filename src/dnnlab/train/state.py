"""The resume state of a run: everything needed to continue after a kill, in one file.

``checkpoints/last.safetensors`` holds the model, the optimizer state, the best weights so far and
the RNG state as tensors, and in its JSON header the epoch, the history, the early-stopping and
schedule state. It is written atomically at the end of every epoch, so a run killed at any moment
(even mid-write) resumes from the last completed epoch, and in deterministic mode ends with the
same weights as an uninterrupted run (batches depend only on seed and epoch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dnnlab.train import checkpoint as ckpt

LAST = Path("checkpoints") / "last.safetensors"


def save(run_dir: Path, epoch: int, model, optimizer, schedule, stopper,
         history: dict[str, list[float]]) -> Path:
    tensors = ckpt.prefixed("model", model.state_dict())
    opt_tensors, opt_meta = ckpt.optimizer_to_flat(optimizer)
    tensors.update(ckpt.prefixed("optim", opt_tensors))
    if stopper.best_state is not None:
        tensors.update(ckpt.prefixed("best", stopper.best_state))
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta: dict[str, Any] = {"epoch": epoch, "history": history, "optimizer": opt_meta,
                            "schedule": schedule.state_dict(), "early_stopping": stopper.state()}
    return ckpt.save(run_dir / LAST, tensors, meta)


def restore(run_dir: Path, model, optimizer, schedule, stopper, device) -> dict[str, Any] | None:
    """Load the resume state into the given objects; None when the run has no checkpoint yet."""
    path = run_dir / LAST
    if not path.exists():
        return None
    tensors, meta = ckpt.load(path)
    model.load_state_dict(ckpt.unprefixed("model", tensors))
    ckpt.optimizer_from_flat(optimizer, {k: v.to(device) for k, v in
                                         ckpt.unprefixed("optim", tensors).items()}, meta["optimizer"])
    schedule.load_state_dict(meta["schedule"])
    best = ckpt.unprefixed("best", tensors)
    stopper.load(meta["early_stopping"], {k: v.to(device) for k, v in best.items()} or None)
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return {"epoch": int(meta["epoch"]), "history": meta["history"]}

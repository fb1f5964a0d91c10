"""The resume state of a run: everything needed to continue after a kill, in one file.

``checkpoints/last.safetensors`` holds the backend's weights (and BN statistics, dropout
generator), the optimizer's state, the best weights so far and torch's RNG state as tensors, and
in its JSON header the epoch, the history, the early-stopping and plateau state. It is written
atomically at the end of every epoch, after the epoch's divergence check, so a run killed at any
moment (even mid-write) resumes from the last completed epoch, and ends with the same weights as
an uninterrupted run (batches depend only on seed and epoch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnnlab.errors import DnnlabError
from dnnlab.train import checkpoint as ckpt

LAST = Path("checkpoints") / "last.safetensors"


def _snap_tensors(snap) -> dict[str, torch.Tensor]:
    """A backend snapshot (stacked: (flat, buffers); module: a state_dict of copies) as named
    tensors: views of the snapshot itself, so that loading into them restores it."""
    if isinstance(snap, tuple):
        flat, bufs = snap
        return {"flat": flat, **{f"buffer.{k}": v for k, v in bufs.items()}}
    return dict(snap)


@torch.no_grad()
def _load_snap(snap, tensors: dict[str, torch.Tensor]) -> None:
    for key, dst in _snap_tensors(snap).items():
        dst.copy_(tensors[key])


def _state_tensors(trainer) -> dict[str, torch.Tensor]:
    """The resume state's tensors, by name: what is saved, and what a restore expects."""
    tensors = ckpt.prefixed("backend", trainer.backend.state_tensors())
    tensors.update(ckpt.prefixed("optim", trainer.opt.state_tensors()))
    tensors.update(ckpt.prefixed("best", _snap_tensors(trainer.best_snap)))
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors


def save(run_dir: Path, epoch: int, trainer) -> Path:
    tensors = _state_tensors(trainer)
    meta: dict[str, Any] = {
        "epoch": epoch, "history": trainer.history[0], "steps_done": trainer.steps_done,
        "best": trainer.best.tolist(), "best_epoch": trainer.best_epoch.tolist(),
        "wait": trainer.wait.tolist(), "plateau": trainer.plateaus[0].state(),
        "bn_steps": getattr(trainer.backend, "bn_steps", 0)}
    return ckpt.save(run_dir / LAST, tensors, meta)


def restore(run_dir: Path, trainer) -> bool:
    """Load the resume state into ``trainer``; False when the run has no checkpoint yet.

    A run that had stopped early (or finished) resumes to itself: nothing is trained again.
    """
    path = run_dir / LAST
    if not path.exists():
        return False
    expected = _state_tensors(trainer)
    # every name, shape and dtype of this run's state, all finite: a damaged or foreign
    # checkpoint is one error naming the file, never a failure deep inside a copy
    tensors, meta = ckpt.load(path, trainer.device, expect=expected)
    ckpt.check_meta(meta, {"epoch": int, "history": dict, "steps_done": int, "best": list,
                           "best_epoch": list, "wait": list, "plateau": dict, "bn_steps": int},
                    path)
    epoch = meta["epoch"]
    lengths = {len(v) if isinstance(v, list) else -1 for v in meta["history"].values()}
    if (set(meta["history"]) != set(trainer.history[0]) or lengths != {epoch}
            or not 0 <= epoch <= trainer.epochs or len(meta["wait"]) != len(trainer.configs)):
        raise DnnlabError(f"{path} is damaged (its epoch, history and early-stopping state "
                          "disagree); delete it to start the run over")
    trainer.backend.load_state_tensors(ckpt.unprefixed("backend", tensors), int(meta["bn_steps"]))
    trainer.opt.load_state_tensors(ckpt.unprefixed("optim", tensors))
    _load_snap(trainer.best_snap, ckpt.unprefixed("best", tensors))
    _load_snap(trainer.good_snap, _snap_tensors(trainer.backend.snapshot()))
    trainer.history[0] = meta["history"]
    trainer.best = np.array(meta["best"], dtype=float)
    trainer.best_epoch = np.array(meta["best_epoch"], dtype=int)
    trainer.wait = np.array(meta["wait"], dtype=int)
    trainer.plateaus[0].load(meta["plateau"])
    trainer.steps_done = int(meta["steps_done"])
    torch.set_rng_state(tensors["rng.cpu"].cpu())
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"].cpu())
    trainer.start_epoch = epoch + 1
    patience = trainer.configs[0].train.patience
    if patience is not None and trainer.wait[0] >= patience and epoch < trainer.epochs:
        trainer.start_epoch = trainer.epochs + 1          # it had stopped early: nothing to redo
        trainer.stopped_before = (f"stopped early before the resume; best at epoch "
                                  f"{trainer.best_epoch[0]}")
    return True

"""What a run is, and the resume state that continues it after a kill.

**What a run is** is recorded when it starts, in ``checkpoints/start.json``: its config (with
:func:`~dnnlab.config.fingerprint`) and the fingerprint of the arrays it trains on, per split
(:meth:`dnnlab.data.Dataset.fingerprint`). :func:`check_resume` is the one rule every resume
passes (from the command line or from Python): a checkpoint to continue from, no change but of
:data:`~dnnlab.config.RESUME_KEYS`, the same data whatever its path.

The state is :meth:`dnnlab.train.driver.Trainer.state_dict`: the state dicts of the backend
(weights, BN statistics, dropout generator), the optimizer, the per-model bookkeeping
(:class:`~dnnlab.train.book.Book`) and every callback with state, plus the best weights, the
epoch and torch's random state. This module only stores such a nested dict: its tensors go into
``checkpoints/last.safetensors`` under dotted names, everything else into the file's JSON header.

It is written atomically at the end of every epoch, after the epoch's divergence check and every
stop, so a run killed at any moment (even mid-write) resumes from the last completed epoch and
ends with the same weights as an uninterrupted run (batches depend only on seed and epoch).
Reading it back checks every tensor's name, shape and dtype against the state the resuming run
expects, and that every value is finite: a damaged or foreign file is one
:class:`~dnnlab.errors.CheckpointError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dnnlab import io
from dnnlab.config import KEYS, RESUME_KEYS, RunConfig, changed_keys, fingerprint, flatten, from_dict
from dnnlab.errors import CheckpointError, DnnlabError, ResumeRefused
from dnnlab.train import checkpoint as ckpt

LAST = Path("checkpoints") / "last.safetensors"
START = Path("checkpoints") / "start.json"   # the config and data a run started with
_TENSOR = "__tensor__"                       # a tensor's place in the JSON header


def split(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A nested state as (dotted name -> tensor, the rest as JSON with tensors marked)."""
    tensors: dict[str, Tensor] = {}
    rest: dict[str, Any] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Tensor):
            tensors[name] = value
            rest[key] = _TENSOR
        elif isinstance(value, dict):
            t, r = split(value, name + ".")
            tensors.update(t)
            rest[key] = r
        else:
            rest[key] = value
    return tensors, rest


def join(tensors: dict[str, Tensor], rest: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`split`."""
    out: dict[str, Any] = {}
    for key, value in rest.items():
        name = f"{prefix}{key}"
        if value == _TENSOR:
            out[key] = tensors[name]
        elif isinstance(value, dict):
            out[key] = join(tensors, value, name + ".")
        else:
            out[key] = value
    return out


def save(run_dir: Path, state: dict[str, Any]) -> Path:
    tensors, rest = split(state)
    return ckpt.save(Path(run_dir) / LAST, tensors, rest)


def load(run_dir: Path, expected: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The saved state of ``run_dir``, checked against ``expected`` (the resuming run's own
    :meth:`state_dict`: same tensor names, shapes and dtypes, every tensor finite)."""
    path = Path(run_dir) / LAST
    want, _ = split(expected)
    tensors, rest = ckpt.load(path, device, expect=want)
    try:
        return join(tensors, rest)
    except (KeyError, TypeError, AttributeError):
        raise ckpt._damaged(path, "its header does not match its tensors") from None


# ---------------------------------------------------------------------- what a run is
def write_start(run_dir: Path, cfg: RunConfig, data: dict[str, str] | None) -> Path:
    """Record what a run starts with: its config (with its fingerprint) and the fingerprint of
    its data, per split. Every resume is checked against this record (:func:`check_resume`)."""
    return io.write_json(Path(run_dir) / START, {"fingerprint": fingerprint(cfg),
                                                 "config": cfg.to_dict(), "data": data})


def read_start(run_dir: Path) -> tuple[RunConfig, dict[str, str] | None] | None:
    """The config and data fingerprint recorded when the run started; None for a run from
    before such records."""
    path = Path(run_dir) / START
    if not path.exists():
        return None
    data = io.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{path} is damaged (no config in it); the run cannot be resumed "
                              "safely")
    try:
        cfg = from_dict(data["config"])
    except DnnlabError as e:
        raise CheckpointError(f"{path} is damaged ({e}); the run cannot be resumed safely") from None
    if data.get("fingerprint") != fingerprint(cfg):
        raise CheckpointError(f"{path} does not match its own fingerprint (edited or damaged); "
                              "the run cannot be resumed safely")
    fp = data.get("data")
    return cfg, fp if isinstance(fp, dict) else None


def refuse_changes(run_dir: Path, reference: RunConfig, other: RunConfig, where: str) -> None:
    """Refuse ``other`` as the config of a resume of ``run_dir`` if it changes any key a resume
    may not change (:data:`dnnlab.config.RESUME_KEYS` are the ones it may)."""
    bad = [k for k in changed_keys(reference, other) if not KEYS[k].resume]
    if not bad:
        return
    was, now = flatten(reference.to_dict()), flatten(other.to_dict())
    first = f"{bad[0]}: {was.get(bad[0], '(default)')!r} -> {now.get(bad[0], '(default)')!r}"
    raise ResumeRefused(f"--resume {run_dir}: {where} changes what shapes the run "
                        f"({', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}; {first}); a "
                        f"resume may change only {', '.join(RESUME_KEYS)}: start a new run "
                        "instead")


def check_resume(run_dir: Path, cfg: RunConfig, data: dict[str, str] | None) -> None:
    """A resume continues the run it names: a checkpoint to continue from, the config it started
    with (but for :data:`~dnnlab.config.RESUME_KEYS`) and the same arrays, wherever they were read
    from. Anything else is :class:`~dnnlab.errors.ResumeRefused`, before anything is written."""
    run_dir = Path(run_dir)
    if not (run_dir / LAST).exists():
        raise ResumeRefused(f"--resume {run_dir}: it has no checkpoint to resume from "
                            f"({LAST}); start it anew without --resume")
    start = read_start(run_dir)
    if start is None:
        return                                   # a run from before start records
    reference, saved = start
    refuse_changes(run_dir, reference, cfg, "the config given")
    if saved is not None and data is not None and saved != data:
        differ = sorted(k for k in set(saved) | set(data) if saved.get(k) != data.get(k))
        raise ResumeRefused(f"--resume {run_dir}: the data differs from the data the run started "
                            f"with (the {', '.join(differ)} split's fingerprint in {START}); "
                            "resume with the same data, or start a new run")

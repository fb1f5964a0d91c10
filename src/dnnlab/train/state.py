"""What a run is, and the resume state that continues it after a kill.

**What a run is** is recorded when it starts, in ``checkpoints/start.json``: its config (with
:func:`~dnnlab.config.fingerprint`), the fingerprint of the arrays it trains on, per split
(:meth:`dnnlab.data.Dataset.fingerprint`), and a run id, which every checkpoint and the final
model carry in their metadata (``run_id``). :func:`check_run` is the one check of a run folder,
used by every command that reads one (resume, prune, export, report, doctor, predict): the record
present and whole, ``config.toml`` the recorded config (but for
:data:`~dnnlab.config.RESUME_KEYS`), every model file of the folder carrying the run's id; and
:func:`check_data` that the data loaded for the run are the recorded arrays. A folder from before
such records is refused unless the caller accepts it (``--accept-legacy``), saying what could not
be checked. :func:`check_resume` adds what a resume needs: a checkpoint to continue from, no change
but of :data:`~dnnlab.config.RESUME_KEYS`, the same data whatever its path.

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

import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from dnnlab import io, rundir
from dnnlab.config import (
    KEYS,
    RESUME_KEYS,
    RunConfig,
    changed_keys,
    fingerprint,
    flatten,
    from_dict,
    load_config,
)
from dnnlab.errors import CheckpointError, DnnlabError, ResumeRefused
from dnnlab.train import checkpoint as ckpt

LAST = Path("checkpoints") / "last.safetensors"
START = Path("checkpoints") / "start.json"   # the config and data a run started with
_TENSOR = "__tensor__"                       # a tensor's place in the JSON header
RUN_ID = "run_id"                            # the key of the run's id, in start.json and checkpoints


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


def save(run_dir: Path, state: dict[str, Any], run_id: str | None = None) -> Path:
    """Write the resume state; ``run_id`` (the run's, from its start record) goes with it."""
    tensors, rest = split(state)
    if run_id is not None:
        rest = {**rest, RUN_ID: run_id}
    return ckpt.save(Path(run_dir) / LAST, tensors, rest)


def load(run_dir: Path, expected: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The saved state of ``run_dir``, checked against ``expected`` (the resuming run's own
    :meth:`state_dict`: same tensor names, shapes and dtypes, every tensor finite)."""
    path = Path(run_dir) / LAST
    want, _ = split(expected)
    tensors, rest = ckpt.load(path, device, expect=want)
    rest.pop(RUN_ID, None)                       # checked by check_run, not part of the state
    try:
        return join(tensors, rest)
    except (KeyError, TypeError, AttributeError):
        raise ckpt._damaged(path, "its header does not match its tensors") from None


# ---------------------------------------------------------------------- what a run is
class Record(NamedTuple):
    """A run's start record (``checkpoints/start.json``)."""
    config: RunConfig
    data: dict[str, str] | None     # split -> fingerprint of its arrays; None in a legacy record
    run_id: str | None              # None in a legacy record (from before run ids)


def write_start(run_dir: Path, cfg: RunConfig, data: dict[str, str] | None) -> str:
    """Record what a run starts with: its config (with its fingerprint), the fingerprint of its
    data, per split, and a new run id, which is returned (every checkpoint of the run carries
    it). Every command that reads the run checks the folder against this record
    (:func:`check_run`)."""
    run_id = uuid.uuid4().hex
    io.write_json(Path(run_dir) / START, {RUN_ID: run_id, "fingerprint": fingerprint(cfg),
                                          "config": cfg.to_dict(), "data": data or {}})
    return run_id


def read_start(run_dir: Path) -> Record | None:
    """The record written when the run started; None when there is none (a legacy run, or no
    run). A record that is not whole is :class:`~dnnlab.errors.CheckpointError` naming it."""
    path = Path(run_dir) / START
    if not os.path.lexists(path):
        return None
    if not path.is_file():                       # a FIFO or a link to a device would block
        raise CheckpointError(f"{path} is not a regular file (damaged or replaced); the run "
                              "cannot be trusted")
    data = io.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{path} is damaged (no config in it); the run cannot be trusted")
    try:
        cfg = from_dict(data["config"])
    except DnnlabError as e:
        raise CheckpointError(f"{path} is damaged ({e}); the run cannot be trusted") from None
    if data.get("fingerprint") != fingerprint(cfg):
        raise CheckpointError(f"{path} does not match its own fingerprint (edited or damaged); "
                              "the run cannot be trusted")
    run_id, fp = data.get(RUN_ID), data.get("data")
    if run_id is None:                           # written before run ids: data may be null
        return Record(cfg, fp if isinstance(fp, dict) else None, None)
    if not (isinstance(run_id, str) and run_id) or not isinstance(fp, dict) or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in fp.items()):
        raise CheckpointError(f"{path} is damaged (its run id or data fingerprint is missing or "
                              "malformed); the run cannot be trusted")
    return Record(cfg, fp, run_id)


def model_files(run_dir: Path) -> list[Path]:
    """The model files of a run folder that carry its run id: the final model, the resume
    state and every checkpoint (a pruned copy in a subfolder is its own file)."""
    run_dir = Path(run_dir)
    return sorted(p for p in [run_dir / ckpt.MODEL_FILE, *(run_dir / "checkpoints").glob("*.safetensors")]
                  if p.is_file())


def check_run(run_dir: str | Path, *, accept_legacy: bool = False,
              hint: str = "pass a folder 'dnnlab train' printed") -> Record | None:
    """The one check of a run folder, before a command reads it (see the module docstring).

    Returns the run's :class:`Record`, or None for a legacy folder accepted with
    ``accept_legacy`` (then only the reading command's own checks of each file apply). Anything
    else is :class:`~dnnlab.errors.CheckpointError` in one line naming what differs.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; {hint}")
    for folder in (run_dir, run_dir / "checkpoints"):   # a FIFO would block whoever reads it
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            if not (path.is_file() or path.is_dir()):
                raise CheckpointError(f"{path} is not a regular file or folder (a FIFO, a device "
                                      "or a broken link put there); the run's files were replaced")
    record = read_start(run_dir)                 # a damaged record is refused, legacy or not
    if record is None or record.run_id is None:
        if accept_legacy:
            return None                          # the caller's own checks are all there are
        rundir.run_file(run_dir, "config.toml", CheckpointError, hint)   # an empty folder: say so
        what = f"{START} is missing" if record is None else f"{START} holds no run id"
        raise CheckpointError(f"{run_dir}: {what}, so its config, data and model files cannot be "
                              f"checked against the run that made them; pass {rundir.LEGACY_FLAG} to "
                              "read it anyway (unchecked), or train it again")
    saved = load_config(rundir.run_file(run_dir, "config.toml", CheckpointError, hint))
    refuse_changes(run_dir, record.config, saved, "its config.toml (edited since the run "
                   "started)", CheckpointError)
    for path in model_files(run_dir):
        found = ckpt.read_meta(path).get(RUN_ID)
        if found != record.run_id:
            whose = "no run id" if found is None else f"run id {io.shown(found, 40)}"
            raise CheckpointError(f"{path} carries {whose}, not this run's ({record.run_id}, "
                                  f"{START}): it comes from another run; restore the run's own "
                                  "file or train it again")
    return record


def check_data(run_dir: str | Path, record: Record | None, data: dict[str, str]) -> None:
    """Refuse ``data`` (the fingerprints of the arrays just loaded for ``run_dir``) when they
    are not the arrays the run recorded: another dataset under the same file name, another
    split, other preprocessing. A legacy record (None, or no data) cannot be checked."""
    if record is None or record.data is None or record.data == data:
        return
    differ = sorted(k for k in set(record.data) | set(data) if record.data.get(k) != data.get(k))
    raise CheckpointError(f"{run_dir}: the data loaded now differ from the data the run was "
                          f"trained on (the {', '.join(differ)} split's fingerprint in {START}); "
                          "pass the data the run was trained on (--data-dir)")


def refuse_changes(run_dir: Path, reference: RunConfig, other: RunConfig, where: str,
                   error: type[DnnlabError] = ResumeRefused) -> None:
    """Refuse ``other`` as the config of a resume of ``run_dir`` if it changes any key a resume
    may not change (:data:`dnnlab.config.RESUME_KEYS` are the ones it may)."""
    bad = [k for k in changed_keys(reference, other) if not KEYS[k].resume]
    if not bad:
        return
    was, now = flatten(reference.to_dict()), flatten(other.to_dict())
    first = f"{bad[0]}: {was.get(bad[0], '(default)')!r} -> {now.get(bad[0], '(default)')!r}"
    if error is ResumeRefused:
        raise ResumeRefused(f"--resume {run_dir}: {where} changes what shapes the run "
                            f"({', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}; {first}); a "
                            f"resume may change only {', '.join(RESUME_KEYS)}: start a new run "
                            "instead")
    raise error(f"{run_dir}: {where} differs from the config the run recorded in {START} "
                f"({', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}; {first}); restore it, "
                "or train a new run with the new config")


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
        return                                   # a legacy run, accepted by the caller
    reference, saved = start.config, start.data
    refuse_changes(run_dir, reference, cfg, "the config given")
    if saved is not None and data is not None and saved != data:
        differ = sorted(k for k in set(saved) | set(data) if saved.get(k) != data.get(k))
        raise ResumeRefused(f"--resume {run_dir}: the data differs from the data the run started "
                            f"with (the {', '.join(differ)} split's fingerprint in {START}); "
                            "resume with the same data, or start a new run")

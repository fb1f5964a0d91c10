"""A run from a config: load the data, train, write the run directory, print where it is.

What this adds around :func:`dnnlab.train.fit`, so a run directory can be trusted:

- **One writer**: the run directory is held (:func:`dnnlab.rundir.hold`) for the whole run.
- **Checked resume**: a new run records the config it started with in ``checkpoints/start.json``
  (with its :func:`~dnnlab.config.fingerprint`). ``--resume`` compares the run's ``config.toml``
  and any config file or ``--set`` given with it against that record, and refuses any change
  except those of :data:`~dnnlab.config.RESUME_KEYS` (more epochs, another patience, device,
  progress, checkpoint interval ...), which are applied and written to ``config.toml``.
- **A damaged checkpoint** is refused with one line naming the file (the resume state is
  checked name by name and shape by shape in :func:`dnnlab.train.state.restore`).
- **An honest summary**: Ctrl-C, a full disk or any error leave ``summary.json`` saying
  "interrupted" or "failed", never "running".
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any


from dnnlab import data as datasets   # called through the module, so tests can stand in data
from dnnlab import io, rundir
from dnnlab.config import (KEYS, RESUME_KEYS, RunConfig, changed_keys, fingerprint, flatten,
                           from_dict, load_config, replace)
from dnnlab.errors import DnnlabError
from dnnlab.train.driver import fit

START = Path("checkpoints") / "start.json"
LAST = Path("checkpoints") / "last.safetensors"


def default_run_dir(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """``root/NAME-TIMESTAMP``, the name made safe (:func:`dnnlab.rundir.safe_name`)."""
    return rundir.child(root, f"{rundir.safe_name(cfg.name, 100)}-{time.strftime('%Y%m%d-%H%M%S')}")


def _allowed(key: str) -> bool:
    return KEYS[key].resume


def write_start(run_dir: Path, cfg: RunConfig) -> Path:
    """Record the config a run starts with (the reference every resume is checked against)."""
    return io.write_json(Path(run_dir) / START, {"fingerprint": fingerprint(cfg),
                                                 "config": cfg.to_dict()})


def read_start(run_dir: Path) -> RunConfig | None:
    """The config recorded when the run started; None for a run from before such records."""
    path = Path(run_dir) / START
    if not path.exists():
        return None
    data = io.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise DnnlabError(f"{path} is damaged (no config in it); the run cannot be resumed safely")
    try:
        cfg = from_dict(data["config"])
    except DnnlabError as e:
        raise DnnlabError(f"{path} is damaged ({e}); the run cannot be resumed safely") from None
    if data.get("fingerprint") != fingerprint(cfg):
        raise DnnlabError(f"{path} does not match its own fingerprint (edited or damaged); the "
                          "run cannot be resumed safely")
    return cfg


def _refuse(run_dir: Path, reference: RunConfig, other: RunConfig, where: str) -> None:
    bad = [k for k in changed_keys(reference, other) if not _allowed(k)]
    if not bad:
        return
    was, now = flatten(reference.to_dict()), flatten(other.to_dict())
    first = f"{bad[0]}: {was.get(bad[0], '(default)')!r} -> {now.get(bad[0], '(default)')!r}"
    raise DnnlabError(f"--resume {run_dir}: {where} changes what shapes the run "
                      f"({', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}; {first}); a resume "
                      f"may change only {', '.join(RESUME_KEYS)}: start a new run instead")


def resume_config(run_dir: str | Path, config: str | Path | None = None,
                  overrides: list[str] | tuple = (), changes: dict[str, Any] | None = None) -> RunConfig:
    """The config to continue ``run_dir`` with, checked against the one it started with.

    ``config`` (a TOML file, default the run's own ``config.toml``), ``overrides`` (``--set``)
    and ``changes`` (dotted key -> value, from flags) may change only ``RESUME_KEYS``;
    any other difference raises :class:`DnnlabError` naming the changed keys.
    """
    run_dir = Path(run_dir)
    saved_path = run_dir / "config.toml"
    if not saved_path.is_file():
        raise DnnlabError(f"--resume {run_dir}: not a run directory (no config.toml); pass the "
                          "folder a previous 'dnnlab train' printed")
    saved = load_config(saved_path)
    reference = read_start(run_dir) or saved
    _refuse(run_dir, reference, saved, f"its {saved_path.name} (edited since the run started)")
    requested = load_config(config if config is not None else saved_path, list(overrides))
    if changes:
        requested = replace(requested, **changes)
    _refuse(run_dir, reference, requested,
            f"the config given ({config})" if config is not None else "--set")
    return requested


def _from_reading_state(e: BaseException) -> bool:
    """Whether ``e`` was raised while the trainer read its resume state (state.py/checkpoint.py)."""
    return any((f.f_code.co_filename.endswith("train/state.py") and f.f_code.co_name == "restore")
               or (f.f_code.co_filename.endswith("train/checkpoint.py")
                   and f.f_code.co_name == "load")
               for f, _ in traceback.walk_tb(e.__traceback__))


def _mark(run_dir: Path, status: str, message: str) -> None:
    """Rewrite summary.json's status after a run ended abnormally (best effort: the disk may be
    full; ``dnnlab report`` then still shows the run as interrupted, since no process holds it)."""
    path = run_dir / "summary.json"
    try:
        summary = io.read_json(path) if path.exists() else {}
    except DnnlabError:
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    summary.update(status=status, message=message)
    try:
        io.write_json(path, summary)
    except (DnnlabError, OSError):
        pass


def _fit(cfg: RunConfig, data, run_dir: Path, resume: bool):
    try:
        return fit(cfg, data, run_dir, resume=resume)
    except KeyboardInterrupt:
        _mark(run_dir, "interrupted", f"interrupted; continue with dnnlab train --resume {run_dir}")
        raise
    except DnnlabError as e:
        if not (resume and _from_reading_state(e)):   # a refused resume changes nothing
            _mark(run_dir, "failed", str(e))
        raise
    except OSError as e:
        msg = f"could not write {e.filename or run_dir}: {e.strerror or e}"
        _mark(run_dir, "failed", msg)
        raise DnnlabError(msg) from e
    except Exception as e:
        if resume and _from_reading_state(e):
            msg = (f"{run_dir / LAST} cannot be resumed from ({type(e).__name__}: {str(e)[:200]}); "
                   "it is damaged or from another dnnlab version: delete it to start over")
            _mark(run_dir, "failed", msg)
            raise DnnlabError(msg) from e
        _mark(run_dir, "failed", f"{type(e).__name__}: {e}")
        raise


def train_run(cfg: RunConfig | None, out: str | Path | None = None, *,
              resume: str | Path | None = None):
    """Train the model ``cfg`` describes; returns the :class:`FitResult`.

    ``resume`` is an existing run directory; training continues from its last checkpoint with
    ``cfg`` (default: the run's own config), checked by :func:`resume_config`'s rules.
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.toml").is_file():
            raise DnnlabError(f"--resume {run_dir}: not a run directory (no config.toml); pass the "
                              "folder a previous 'dnnlab train' printed")
        with rundir.hold(run_dir):
            reference = read_start(run_dir) or load_config(run_dir / "config.toml")
            if cfg is None:
                cfg = resume_config(run_dir)
            else:
                resume_config(run_dir)                 # the saved config.toml is checked too
                _refuse(run_dir, reference, cfg, "the config given")
            data = datasets.load_from_config(cfg.data)
            if read_start(run_dir) is None:            # a run from before start records
                write_start(run_dir, reference)
            return _fit(cfg, data, run_dir, resume=True)
    if cfg is None:
        raise DnnlabError("train_run needs a config (or resume=RUN_DIR)")
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    with rundir.hold(run_dir):
        if (run_dir / LAST).exists():
            raise DnnlabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                              "or choose another --out")
        write_start(run_dir, cfg)
        data = datasets.load_from_config(cfg.data)
        return _fit(cfg, data, run_dir, resume=False)

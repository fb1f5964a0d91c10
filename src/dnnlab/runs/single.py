"""A run from a config: load the data, train, write the run directory, print where it is.

What this adds around :func:`dnnlab.runs.fit`, so a run directory can be trusted:

- **One writer**: the run directory is held (:func:`dnnlab.rundir.hold`) for the whole run.
- **Checked resume**: the run's start record (``checkpoints/start.json``: config and data
  fingerprints, written by the run writer) is the reference. ``--resume`` also checks the run's
  ``config.toml`` and any config file or ``--set`` given with it, and refuses any change except
  those of :data:`~dnnlab.config.RESUME_KEYS` (more epochs, another patience, device, progress,
  checkpoint interval ...), which are applied and written to ``config.toml``. The data must be
  the arrays the run started with (:func:`dnnlab.train.state.check_resume`).
- **A refused command changes nothing**: a refused resume or a damaged checkpoint
  (:class:`~dnnlab.errors.ResumeRefused`, :class:`~dnnlab.errors.CheckpointError`) is one line
  and leaves the run directory as it was.
- **An honest summary**: Ctrl-C, SIGTERM, a full disk or any error while training leave
  ``summary.json`` saying "interrupted" or "failed", never "running".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnnlab import data as datasets  # called through the module, so tests can stand in data
from dnnlab import io, rundir
from dnnlab.config import RunConfig, load_config, replace
from dnnlab.errors import CheckpointError, DnnlabError, ResumeRefused
from dnnlab.runs.recorded import fit
from dnnlab.train.driver import FitResult
from dnnlab.train.state import LAST, START, check_run, read_start, refuse_changes


def default_run_dir(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """``root/NAME-TIMESTAMP``, the name made safe (:func:`dnnlab.rundir.named`)."""
    return rundir.named(root, cfg.name)


def _run_dir_of(run_dir: Path, accept_legacy: bool = False) -> Path:
    """``run_dir``, checked as every command checks a run folder it reads
    (:func:`dnnlab.train.state.check_run`), with a checkpoint to continue from."""
    rundir.run_file(run_dir, "config.toml", ResumeRefused,
                    "--resume takes the folder a previous 'dnnlab train' printed")
    check_run(run_dir, accept_legacy=accept_legacy,
              hint="--resume takes the folder a previous 'dnnlab train' printed")
    if not (run_dir / LAST).is_file():
        raise ResumeRefused(f"--resume {run_dir}: it has no checkpoint to resume from ({LAST}); "
                            "start it anew without --resume")
    return run_dir


def resume_config(run_dir: str | Path, config: str | Path | None = None,
                  overrides: list[str] | tuple[str, ...] = (),
                  changes: dict[str, Any] | None = None, *,
                  accept_legacy: bool = False) -> RunConfig:
    """The config to continue ``run_dir`` with, checked against the one it started with.

    ``config`` (a TOML file, default the run's own ``config.toml``), ``overrides`` (``--set``)
    and ``changes`` (dotted key -> value, from flags) may change only ``RESUME_KEYS``;
    any other difference raises :class:`~dnnlab.errors.ResumeRefused` naming the changed keys.
    The folder itself is checked first (:func:`dnnlab.train.state.check_run`; ``accept_legacy``
    reads a folder from before run records).
    """
    run_dir = _run_dir_of(Path(run_dir), accept_legacy)
    saved_path = run_dir / "config.toml"
    saved = load_config(saved_path)
    start = read_start(run_dir)
    reference = start.config if start is not None else saved
    requested = load_config(config if config is not None else saved_path, list(overrides))
    if changes:
        requested = replace(requested, **changes)
    refuse_changes(run_dir, reference, requested,
                   f"the config given ({config})" if config is not None else "--set")
    return requested


def _mark(run_dir: Path, status: str, message: str) -> None:
    """Rewrite summary.json's status after a run ended abnormally (best effort: the disk may be
    full; ``dnnlab report`` then still shows the run as interrupted, since no process holds it).
    A run refused before it started (no start record yet: a batch size larger than the data, no
    such device) is no run: nothing is written, and :func:`train_run` removes its new folder."""
    if not (run_dir / START).exists():
        return
    path = run_dir / "summary.json"
    try:
        summary = io.read_json(path) if path.is_file() else {}
    except DnnlabError:
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    summary.update(status=status, message=message)
    try:
        io.write_json(path, summary)
    except (DnnlabError, OSError):
        pass


def _fit(cfg: RunConfig, data: datasets.Dataset, run_dir: Path, resume: bool) -> FitResult:
    try:
        return fit(cfg, data, run_dir, resume=resume)
    except KeyboardInterrupt:                  # Ctrl-C, and SIGTERM / SIGHUP (dnnlab.cli)
        _mark(run_dir, "interrupted", f"interrupted; continue with dnnlab train --resume {run_dir}")
        raise
    except (ResumeRefused, CheckpointError):   # refused before anything was written
        raise
    except DnnlabError as e:
        _mark(run_dir, "failed", str(e))
        raise
    except OSError as e:
        msg = f"could not write {e.filename or run_dir}: {e.strerror or e}"
        _mark(run_dir, "failed", msg)
        raise DnnlabError(msg) from e
    except Exception as e:
        _mark(run_dir, "failed", f"{type(e).__name__}: {e}")
        raise


def train_run(cfg: RunConfig | None, out: str | Path | None = None, *,
              resume: str | Path | None = None, accept_legacy: bool = False) -> FitResult:
    """Train the model ``cfg`` describes; returns the :class:`~dnnlab.train.FitResult`.

    ``resume`` is an existing run directory; training continues from its last checkpoint with
    ``cfg`` (default: the run's own config), checked by :func:`resume_config`'s rules
    (``accept_legacy``: see there). ``out`` with ``resume`` must name the same directory (a
    resume writes where the run is).
    """
    if resume is not None:
        run_dir = _run_dir_of(Path(resume), accept_legacy)
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise ResumeRefused(f"--resume {run_dir} --out {out}: a resume continues the run in "
                                "its own directory; leave out --out (or copy the run first)")
        with rundir.hold(run_dir):
            checked = resume_config(run_dir, accept_legacy=accept_legacy)   # checked again, held
            if cfg is None:
                cfg = checked
            data = datasets.load_from_config(cfg.data)
            return _fit(cfg, data, run_dir, resume=True)
    if cfg is None:
        raise DnnlabError("train_run needs a config (or resume=RUN_DIR)")
    data = datasets.load_from_config(cfg.data)           # a bad dataset creates no folder
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    with rundir.undo_if_refused(run_dir), rundir.hold(run_dir):
        if (run_dir / LAST).exists():
            raise DnnlabError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                              "or choose another --out")
        return _fit(cfg, data, run_dir, resume=False)

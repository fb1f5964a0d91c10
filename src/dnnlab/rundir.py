"""Run directories: one writer at a time, and folder names that stay where they are put.

**One writer.** Two processes writing one run directory would leave one run's config beside the
other's checkpoints. :func:`hold` takes an exclusive ``flock`` on the run directory itself (on a
descriptor of the folder, ``O_RDONLY | O_DIRECTORY``), so no file can be deleted from under the
lock: removing ``RUN_DIR/.lock`` only loses the holder's name, never the lock. ``.lock`` is a small
record of the holder's PID and host, written after the lock is taken, for the message a second
process gets ("in use by process 123 on host"). The kernel drops a ``flock`` when its process dies
(even by SIGKILL), so a killed run's folder is simply taken over by the next ``--resume``: no
stale-lock cleanup, no PID-reuse race. Where the file system has no ``flock`` (some network
mounts), the record is the lock: a holder whose PID is gone on this host is taken over.
:func:`is_held` asks the same lock (``dnnlab report`` tells a running run from an interrupted one
by it).

Every command that writes into a run directory holds it (train, sweep, prune, export, a doctor
probe) or writes elsewhere while another process does: :func:`output_folder` is where ``report``
and ``doctor`` write about a run, :func:`check_free` refuses an output path that lies in a folder
another process holds, and :func:`out_arg` is the one check of every ``--out`` a user types. A
refused command has written nothing: the lock is tried before anything is created or written.

**Signals.** :func:`interrupt_on_signals` turns SIGTERM and SIGHUP into :class:`Interrupted`, a
``KeyboardInterrupt``, so a run stopped by ``kill``, a batch scheduler or a closed terminal ends
"interrupted" exactly as Ctrl-C does, never "running".

**Names.** A run's folder is built from names a user or a sweep chose (``name = "../../x"``, a
variant name of 300 characters). :func:`safe_name` turns any name into one path component:
no separators, no ``..``, no leading dot, at most ``MAX_NAME`` characters (a short hash of the
whole name keeps shortened names unique). :func:`make_dir` creates an output folder and turns the
OS's refusal (read-only, a file in the way, a path too long) into one line naming the path.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnnlab import io
from dnnlab.errors import DnnlabError

LOCK_NAME = ".lock"                # the holder's record (PID, host); the lock is on the folder
MAX_NAME = 120                     # characters of one folder name built from a user's name
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,@\[\]-]+")
LEGACY_FLAG = "--accept-legacy"    # reads a run folder from before run records, unchecked
WAIT = "wait for it to end or choose another --out"    # what a refused writer can do, by default
SIGNALS = (signal.SIGTERM, signal.SIGHUP)               # ended like Ctrl-C (see Interrupted)

_held: dict[Path, tuple[int, int]] = {}   # resolved run dir -> (folder fd, nesting depth)


def safe_name(name: str, limit: int = MAX_NAME) -> str:
    """``name`` as one safe path component (see the module docstring); unchanged when it is one."""
    clean = _UNSAFE.sub("-", str(name)).lstrip(".-") or "run"
    if len(clean) > limit:
        digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:10]
        clean = f"{clean[:limit - 11].rstrip('.-')}-{digest}"
    return clean


def named(parent: str | Path, name: str, tag: str | None = None) -> Path:
    """``parent/NAME-TAG``: the one rule for a default output path built from a config's name.
    NAME is made safe and cut to 100 characters (:func:`safe_name`), so the path stays inside
    ``parent``; TAG defaults to the time (``20261207-043015``), so runs do not collide."""
    return child(parent, f"{safe_name(name, 100)}-{timestamp() if tag is None else tag}")


def timestamp() -> str:
    """The time as default output names carry it: ``20261207-043015``."""
    return time.strftime("%Y%m%d-%H%M%S")


def child(parent: str | Path, name: str) -> Path:
    """``parent / safe_name(name)``: a folder that cannot lie outside ``parent``."""
    return Path(parent) / safe_name(name)


def run_file(run_dir: str | Path, name: str, error: type[DnnlabError] = DnnlabError,
             hint: str = "pass a folder 'dnnlab train' printed") -> Path:
    """``run_dir / name``, or ``error`` saying which is missing: the folder, or the file in it
    (the one check of every command that reads a run: report, doctor, prune, resume)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise error(f"run directory {run_dir} does not exist; {hint}")
    path = run_dir / name
    if not path.is_file():
        raise error(f"{run_dir}: {name} is missing, and a run directory with no {name} cannot be "
                    f"read; {hint}")
    return path


def make_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents); an OS refusal becomes one line naming the path."""
    path = io.check_target(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DnnlabError(f"{what} {path}: a file of that name is in the way; choose another "
                          "folder") from None
    except OSError as e:
        raise DnnlabError(f"{what} {path}: cannot create it ({_reason(e)}); choose another "
                          "folder") from None
    if not path.is_dir():
        raise DnnlabError(f"{what} {path}: not a folder; choose another folder")
    return path


def out_arg(text: str) -> str:
    """The argparse ``type`` of every ``--out``: the one check of an output path a user types.

    An empty ``--out ''`` would write into the current folder (``Path('')`` is ``.``), which is
    never what was meant (an unset shell variable, a quoting slip), so it is refused; so is a path
    that is no place for a file (a device, a FIFO, ``/proc``: :func:`dnnlab.io.check_target`) and
    one in a folder another process holds (a run still training), before any work starts.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty --out would write into the current folder; give a folder such as "
            "--out runs/x, or leave --out out for the default")
    try:
        check_free(io.check_target(text, "--out"))
    except DnnlabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _reason(e: OSError) -> str:
    if e.errno == errno.ENAMETOOLONG:
        return "the path is too long"
    return e.strerror or str(e)


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    return f"process {info.get('pid')} on {info.get('host')}"


def read_lock(run_dir: str | Path) -> dict[str, Any] | None:
    """The holder recorded in ``RUN_DIR/.lock`` (it may be dead), or None."""
    try:
        info = json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(info: dict[str, Any] | None) -> bool:
    """Whether the recorded holder may still run (only a PID on this host can be checked)."""
    if not info or info.get("host") != socket.gethostname():
        return bool(info)
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
        return True
    return True


def _open_dir(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None


def is_held(run_dir: str | Path) -> bool:
    """Whether a live process holds ``run_dir`` (this one included)."""
    run_dir = Path(run_dir)
    if run_dir.resolve() in _held:
        return True
    fd = _open_dir(run_dir)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:                       # no flock here: fall back to the recorded PID
        return _pid_alive(read_lock(run_dir))
    finally:
        os.close(fd)                      # closing drops the shared lock just taken
    return False


def holder(path: str | Path) -> tuple[Path, str] | None:
    """The folder among ``path`` and the folders around it that another process holds, and who
    holds it (as the refusal names it); None when this process may write there."""
    here = Path(os.path.abspath(path))
    for folder in (here, *here.parents):
        if not os.path.isdir(folder) or folder.resolve() in _held:   # isdir: False on any OSError
            continue
        if is_held(folder):
            return folder, _describe(read_lock(folder))
    return None


def check_free(path: str | Path, what: str = "output") -> Path:
    """``path``, or :class:`DnnlabError` when it lies in a folder another process holds."""
    found = holder(path)
    if found is not None:
        folder, who = found
        where = "is" if folder == Path(os.path.abspath(path)) else f"lies in {folder}, which is"
        raise DnnlabError(f"{what} {path} {where} in use by {who}; {WAIT}")
    return Path(path)


def _acquire(run_dir: Path, what: str, wait: str) -> int:
    fd = _open_dir(run_dir)
    if fd is None:
        raise DnnlabError(f"{what} {run_dir}: cannot open the folder to lock it; choose another "
                          "folder")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DnnlabError(f"{what} {run_dir} is in use by {_describe(read_lock(run_dir))}; "
                          f"{wait}") from None
    except OSError:                       # no flock on this file system: the record is the lock
        info = read_lock(run_dir)
        if info and info != _me() and _pid_alive(info):
            os.close(fd)
            raise DnnlabError(f"{what} {run_dir} is in use by {_describe(info)} (lock "
                              f"{run_dir / LOCK_NAME}); {wait}, or delete the lock if that "
                              "process is gone") from None
        try:
            io.write_json(run_dir / LOCK_NAME, _me())
        except DnnlabError as e:
            os.close(fd)
            raise DnnlabError(f"{what} {run_dir}: cannot write its lock ({e}); choose a "
                              "writable folder") from None
        return fd
    with contextlib.suppress(DnnlabError):     # only names the holder: a read-only run still locks
        io.write_json(run_dir / LOCK_NAME, _me())
    return fd


@contextlib.contextmanager
def hold(run_dir: str | Path, what: str = "run directory", wait: str = WAIT) -> Iterator[Path]:
    """Hold ``run_dir`` (created if missing) for this process while the block runs.

    Re-entrant within one process (a sweep holding a variant's folder may call code that holds
    it too). Fails at once, having written nothing, with :class:`DnnlabError` naming the holder
    and ending with ``wait`` (what the refused command can do instead) when another live process
    holds it; a dead holder's lock is taken over.
    """
    run_dir = make_dir(run_dir, what)
    key = run_dir.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield run_dir
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    fd = _acquire(run_dir, what, wait)
    _held[key] = (fd, 1)
    try:
        yield run_dir
    finally:
        if _held.get(key, (fd, 1))[1] <= 1:
            _held.pop(key, None)
            with contextlib.suppress(OSError):
                os.unlink(run_dir / LOCK_NAME)     # removed while still locked: no race
            os.close(fd)


@contextlib.contextmanager
def undo_if_refused(path: str | Path) -> Iterator[None]:
    """The folders the block creates for ``path`` (it and its missing parents) are removed again
    when the block raises while they are still empty: a refused command leaves no folder behind.
    A folder holding anything (a started run's files) is kept."""
    path = Path(os.path.abspath(path))
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]   # deepest first
    try:
        yield
    except BaseException:
        for folder in missing:
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise


@contextlib.contextmanager
def output_folder(default: str | Path, out: str | Path | None = None,
                  what: str = "output folder") -> Iterator[Path]:
    """The folder a command that reads runs writes its output into (``report``, ``doctor``).

    ``out`` (a user's ``--out``) is that folder, refused when it lies in a folder another process
    holds: the user named it, so writing elsewhere would surprise. It is not held, since a folder
    a user names may be shared on purpose (the workers of a ``--storage`` sweep each write its
    report). Without ``out``, ``default`` (the run directory itself for one run) is held while the
    block runs, so no resume starts mid-write. When another process holds it (or a folder around
    it), the run is still training and what would be written is a snapshot that is stale within an
    epoch: it goes to a fresh folder of its own in the temporary folder, so the run's files keep
    one writer and the user still gets the output (the command prints its path).
    """
    if out is not None:
        yield make_dir(check_free(out, what), what)
    elif holder(default) is not None:
        name = safe_name(Path(os.path.abspath(default)).name, 60)
        yield Path(tempfile.mkdtemp(prefix=f"dnnlab-{name}-"))
    else:
        with hold(default, what) as folder:
            yield folder


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread wherever the signal finds it.

    A subclass of ``KeyboardInterrupt`` so that every ``except KeyboardInterrupt`` that ends a run
    honestly (the trainer marks it "interrupted", a sweep stops its workers) treats ``kill``, a
    scheduler's stop and a closed terminal exactly as Ctrl-C, with no second code path.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(e: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended (130 for Ctrl-C,
    143 for SIGTERM, 129 for SIGHUP): a scheduler or script sees which signal stopped it."""
    return 128 + getattr(e, "signum", signal.SIGINT)


def _raise(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`Interrupted` (see its docstring).

    A signal the process was started ignoring stays ignored (``nohup`` ignores SIGHUP so that a
    run survives the terminal closing). Python lets only the main thread set handlers; elsewhere
    the block runs with the handlers as they are. The previous handlers come back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        for s, old in previous.items():
            if old is not signal.SIG_IGN:
                signal.signal(s, _raise)
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)

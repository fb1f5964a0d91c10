"""Run directories: one writer at a time, and folder names that stay where they are put.

**One writer.** Two processes writing one run directory would leave one run's config beside the
other's checkpoints. :func:`hold` takes ``RUN_DIR/.lock``, an exclusive ``flock`` on a file that
holds the holder's PID and host; a second process fails at once, naming the holder. The kernel
drops a ``flock`` when its process dies (even by SIGKILL), so a killed run's lock is simply taken
over by the next ``--resume``: no stale-lock cleanup, no PID-reuse race. Where the file system
has no ``flock``, a lock whose PID is gone on this host is taken over instead.
:func:`is_held` is what ``dnnlab report`` asks to tell a running run from an interrupted one.

**Names.** A run's folder is built from names a user or a sweep chose (``name = "../../x"``, a
variant name of 300 characters). :func:`safe_name` turns any name into one path component:
no separators, no ``..``, no leading dot, at most ``MAX_NAME`` characters (a short hash of the
whole name keeps shortened names unique). :func:`make_dir` creates an output folder and turns the
OS's refusal (read-only, a file in the way, a path too long) into one line naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnnlab.errors import DnnlabError

LOCK_NAME = ".lock"
MAX_NAME = 120                     # characters of one folder name built from a user's name
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,@\[\]-]+")

_held: dict[Path, tuple[int, int]] = {}   # resolved run dir -> (lock fd, nesting depth)


def safe_name(name: str, limit: int = MAX_NAME) -> str:
    """``name`` as one safe path component (see the module docstring); unchanged when it is one."""
    clean = _UNSAFE.sub("-", str(name)).lstrip(".-") or "run"
    if len(clean) > limit:
        digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:10]
        clean = f"{clean[:limit - 11].rstrip('.-')}-{digest}"
    return clean


def child(parent: str | Path, name: str) -> Path:
    """``parent / safe_name(name)``: a folder that cannot lie outside ``parent``."""
    return Path(parent) / safe_name(name)


def make_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents); an OS refusal becomes one line naming the path."""
    path = Path(path)
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


def is_held(run_dir: str | Path) -> bool:
    """Whether a live process holds ``run_dir`` (this one included)."""
    run_dir = Path(run_dir)
    if run_dir.resolve() in _held:
        return True
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:                       # no flock here: fall back to the recorded PID
        return _pid_alive(read_lock(run_dir))
    finally:
        os.close(fd)
    return False


def _acquire(run_dir: Path) -> int:
    path = run_dir / LOCK_NAME
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise DnnlabError(f"run directory {run_dir}: cannot create its lock file "
                              f"({_reason(e)}); choose a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DnnlabError(f"run directory {run_dir} is in use by {_describe(read_lock(run_dir))} "
                              f"(lock {path}); wait for it to end or choose another --out") from None
        except OSError:                   # no flock on this file system: PID rule
            info = read_lock(run_dir)
            if info and info != _me() and _pid_alive(info):
                os.close(fd)
                raise DnnlabError(f"run directory {run_dir} is in use by {_describe(info)} (lock "
                                  f"{path}); if that process is gone, delete the lock") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if not same:                      # the holder removed it as we opened it: try again
            os.close(fd)
            continue
        data = json.dumps(_me()).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return fd
    raise DnnlabError(f"run directory {run_dir}: could not take its lock {path}; try again")


@contextlib.contextmanager
def hold(run_dir: str | Path, what: str = "run directory") -> Iterator[Path]:
    """Hold ``run_dir`` (created if missing) for this process while the block runs.

    Re-entrant within one process (a sweep holding a variant's folder may call code that holds
    it too). Fails at once with :class:`DnnlabError` naming the holder when another live process
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
    fd = _acquire(run_dir)
    _held[key] = (fd, 1)
    try:
        yield run_dir
    finally:
        if _held.get(key, (fd, 1))[1] <= 1:
            _held.pop(key, None)
            with contextlib.suppress(OSError):
                os.unlink(run_dir / LOCK_NAME)     # unlinked while still locked: no race
            os.close(fd)

"""Atomic file writes: every file dnnlab writes goes through here.

A write goes to a temporary file in the target's directory, is fsync'ed, then renamed over the
target, so a crash or a kill at any moment leaves either the old file or the new one, never a torn
one. A failure while writing removes the temporary file, leaves the previous file intact, and says
so in the raised error. Files get the mode the umask allows (``0666 & ~umask``, like ``open``),
not the 0600 that ``tempfile.mkstemp`` gives its files.

**Where a file belongs.** :func:`check_target` is the one rule of every path dnnlab writes: a new
path, or a regular file or folder. A rename over a character device, a FIFO or a socket (``--out
/dev/null`` as root turned the machine's ``/dev/null`` into a regular file), a write into
``/proc``, ``/sys`` or ``/dev``, or through a link that leads there, is refused before anything is
written. Every write here passes it, and so does every ``--out`` a user types
(:func:`dnnlab.rundir.out_arg`), before any work starts.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dnnlab.errors import DnnlabError

SYSTEM_DIRS = ("/proc", "/sys", "/dev")   # file systems of the kernel: nothing of ours lives there
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SHOW = 100                                 # characters of a user's value an error echoes


def shown(value: Any, limit: int = SHOW) -> str:
    """``repr(value)`` (one line: control characters escaped), cut to about ``limit``
    characters: the one way an error echoes what a user gave (a million-item list must not
    become a 7.9 MB error line, a newline in a path must not split the error in two)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_path(path: str | Path, what: str = "path") -> Path:
    """``path``, or :class:`DnnlabError` when it holds a control character (a newline in a
    path splits every message that names it, and is never meant)."""
    text = os.fspath(path)
    if _CONTROL.search(text):
        raise DnnlabError(f"{what} {shown(text)} holds a control character (newline, tab, ...); "
                          "give a path without one")
    return Path(path)


def _kind(mode: int) -> str | None:
    return next((name for test, name in _KINDS if test(mode)), None)


def check_target(path: str | Path, what: str = "output", *, file: bool = False) -> Path:
    """``path``, if dnnlab may write there: a new path, or a regular file or folder outside the
    kernel's file systems (:data:`SYSTEM_DIRS`), reached through folders only. Anything else
    (a device, a FIFO, a socket, a link to one, a path in ``/proc``) is :class:`DnnlabError` in
    one line naming the path and what it is; nothing has been written. ``file``: the path is to
    be a file, so an existing folder there is refused too."""
    path = check_path(path, what)
    real = os.path.realpath(path)           # links followed: where a write would really land
    system = next((d for d in SYSTEM_DIRS if real == d or real.startswith(d + "/")), None)
    if system is not None:
        raise DnnlabError(f"{what} {shown(str(path))} lies in {system} (the kernel's, not a "
                          "place for files); choose a folder of your own")
    probe = Path(real)
    for here in (probe, *probe.parents):
        try:
            mode = os.stat(here).st_mode
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                continue                     # not there (or not creatable): above it decides
            raise DnnlabError(f"{what} {shown(str(path))}: cannot look at {here} "
                              f"({e.strerror or e}); choose another path") from None
        kind = _kind(mode)
        if kind is not None:
            where = "" if here == probe else f" in its path ({here})"
            if os.path.abspath(path) != real:
                where += f" (it leads to {real})"
            raise DnnlabError(f"{what} {shown(str(path))} is {kind}{where}, not a file or folder "
                              "dnnlab writes; choose a new path or a file or folder of your own")
        if file and here == probe and stat.S_ISDIR(mode):
            raise DnnlabError(f"{what} {shown(str(path))} is a folder; give the path of a file "
                              "in it")
        if here != probe and not stat.S_ISDIR(mode):
            raise DnnlabError(f"{what} {shown(str(path))}: {here} is a file, not a folder; "
                              "choose another path")
        break                                # the first existing one decides; above it, folders
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)   # elsewhere: read it by setting it, then put it back at once
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then atomically rename it to ``path``."""
    path = check_target(path, file=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:60]}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise DnnlabError(f"could not write {path}: {e.strerror or e} (no file was written)") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        kept = "the previous file is intact" if path.exists() else "no file was written"
        raise DnnlabError(f"could not write {path}: {e} ({kept})") from e
    _fsync_dir(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as strict JSON: NaN and infinities (which ``json`` would write bare, making the
    file unreadable to any other JSON parser) are written as null."""
    text = json.dumps(_strict(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    return write_text(path, text + "\n")


def _strict(obj: Any) -> Any:
    """``obj`` with every non-finite float (numpy's included) replaced by None."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, float) or (hasattr(obj, "item") and getattr(obj, "ndim", None) == 0):
        value = obj.item() if hasattr(obj, "item") else obj
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _strict(obj.tolist())
    return obj


def read_json(path: str | Path) -> Any:
    """A JSON file's contents; a damaged, missing or non-regular file (a FIFO, which would block
    the read for ever, or a link to a device) is one :class:`DnnlabError` naming it."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_file():
        raise DnnlabError(f"{path} is not a regular file; the run's files were replaced or damaged")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DnnlabError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DnnlabError(f"{path} is not valid JSON ({e}); the file is damaged") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")

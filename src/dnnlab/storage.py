"""Work shared between processes and machines through an Optuna storage: ``dnnlab tune``'s trials,
``dnnlab sweep --storage``'s groups.

One mechanism for both: an RDB storage (SQLite for processes on one machine, PostgreSQL across
machines) with heartbeats. A worker killed at any moment leaves a RUNNING trial whose heartbeat
stops; after the grace period (``GRACE_BEATS`` missed heartbeats) the next worker to look marks it
failed and Optuna's retry callback enqueues a copy (same parameters and user attributes), which a
worker runs first. Every trial records which worker ran it (:func:`worker_id`).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import socket
import time
import warnings
from typing import Any

import optuna
from sqlalchemy.exc import DBAPIError

from dnnlab.errors import DnnlabError

HEARTBEAT_SECONDS = 20           # a running trial's heartbeat; stale after GRACE_BEATS of them
GRACE_BEATS = 3
MAX_RETRY = 3                    # a trial whose workers die this often is left failed
SQLITE_TIMEOUT_SECONDS = 120
OPEN_ATTEMPTS = 8                # opening the storage: tries, 0.25 s, 0.5 s, ... apart
MAX_WAIT_SECONDS = 86400         # a heartbeat or grace longer than a day is a typo
IN_MEMORY = ("sqlite://", "sqlite:///:memory:")   # SQLite URLs of a database private to a process


def with_driver(url: str) -> str:
    """``postgresql://`` with an installed driver named: SQLAlchemy 2.1 assumes psycopg 3, and
    many machines have only psycopg2 (``psycopg2-binary``), so the one that is importable wins."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep:
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return f"postgresql+{driver}://{rest}"
    return url


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':')[0]}:***@{host}"
    return url


def check_grace(grace: float, what: str = "--grace") -> float:
    """``grace`` (seconds a worker may miss heartbeats before its work is redone), or one line:
    at least ``GRACE_BEATS`` (missed beats of 1 s), at most a day, finite (``inf`` and ``1e308``
    used to end in an OverflowError inside a thread)."""
    if not (isinstance(grace, (int, float)) and GRACE_BEATS <= grace <= MAX_WAIT_SECONDS):
        raise DnnlabError(f"{what} {grace}: give {GRACE_BEATS} to {MAX_WAIT_SECONDS} seconds "
                          f"(at least {GRACE_BEATS} missed heartbeats of 1 s; at most a day)")
    return float(grace)


def worker_id() -> str:
    """This process as ``host:pid``: which worker ran a trial."""
    return f"{socket.gethostname()}:{os.getpid()}"


def retry_kwargs() -> dict[str, Any]:
    """Optuna's retry of a dead worker's trial, under the names this Optuna version has
    (``RetryHeartbeatStaleTrialCallback`` / ``heartbeat_stale_trial_callback`` since 4.9,
    ``RetryFailedTrialCallback`` / ``failed_trial_callback`` before)."""
    names = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    if "heartbeat_stale_trial_callback" in names:
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        return {"heartbeat_stale_trial_callback": retry}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)}


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a killed worker's trial is failed after
    ``GRACE_BEATS * heartbeat`` seconds and retried (:func:`retry_kwargs`).

    SQLite gets a long lock timeout so several local workers can share one file. Workers that
    start together on an empty database race to create Optuna's tables: the losers see a
    duplicate table (PostgreSQL's ``relation ... already exists``, a ``ProgrammingError``), a
    duplicate row (``IntegrityError``) or a lock (``OperationalError``), so any database error is
    retried a few times before it is reported. A plain
    ``postgresql://`` URL gets whichever PostgreSQL driver is installed (:func:`with_driver`).
    """
    if not 1 <= heartbeat <= MAX_WAIT_SECONDS / GRACE_BEATS:
        raise DnnlabError(f"--heartbeat {heartbeat}: give 1 to {MAX_WAIT_SECONDS // GRACE_BEATS} "
                          "seconds")
    if url.strip() in IN_MEMORY:
        raise DnnlabError(f"storage {url}: an in-memory SQLite database lives in one process and "
                          "is lost when it ends, so no worker can share it and nothing resumes; "
                          "give a file, e.g. sqlite:///study.db")
    # heartbeats and fail_stale_trials are marked experimental; the warning is noise to a user
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    given, url = url, with_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=int(heartbeat),
                                              grace_period=int(GRACE_BEATS * heartbeat),
                                              **retry_kwargs(), **kwargs)
        except DBAPIError as e:          # the driver's errors: a lost race, a lock, a dead server
            if attempt == OPEN_ATTEMPTS - 1:
                raise _cannot_open(given, e) from None
            time.sleep(0.25 * (attempt + 1))
        except (ImportError, ModuleNotFoundError) as e:
            raise DnnlabError(f"storage {safe_url(given)} needs a database driver that is not "
                              f"installed ({first_line(e)}); for PostgreSQL: pip install "
                              "psycopg2-binary") from None
        except Exception as e:  # noqa: BLE001 - sqlalchemy raises many kinds for a bad URL
            raise _cannot_open(given, e) from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def first_line(error: BaseException, limit: int = 200) -> str:
    """The driver's own message of ``error`` on one line (SQLAlchemy adds the statement, its
    parameters and a link on lines of their own), cut to ``limit`` characters."""
    text = str(getattr(error, "orig", None) or error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def _advice(url: str) -> str:
    """What to check, for the storage's backend."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        return ("check that the database file's folder exists and is writable (sqlite:///rel.db "
                "is relative to the current folder, sqlite:////abs/path.db absolute)")
    if scheme in ("postgresql", "postgres"):
        return ("check the URL (postgresql://user:password@host:port/dbname) and that the "
                "server is running and reachable from this machine")
    return "give sqlite:///FILE.db or postgresql://user:password@host/dbname"


def _cannot_open(url: str, error: Exception) -> DnnlabError:
    return DnnlabError(f"cannot open the Optuna storage {safe_url(url)}: {first_line(error)}; "
                       f"{_advice(url)}")

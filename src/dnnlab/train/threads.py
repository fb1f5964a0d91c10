"""How many CPU threads torch uses: a policy re-decided as dnnlab trains, not a constant.

A training step of the chapter's nets is hundreds of small parallel regions, each ending at a
barrier where every OpenMP worker must arrive. When another process holds one of the cores, the
worker scheduled there arrives a scheduler slice late at every barrier, and a step that takes a
millisecond takes tens: beside one busy process, torch's default of one thread per core made
the README example several times to a hundred times slower than one thread did (issue 19;
figures: benchmarks/README.md). A missing thread costs at most the parallel speed-up (under 2x on
these nets); a thread too many can cost a hundredfold. So the policy asks the machine how many
cores are free and gives torch that many threads, erring low.

:func:`adjust` does it: the trainer calls it at every epoch start and every host sync. At most every
:data:`INTERVAL` seconds it reads how busy the usable CPUs were since its last reading
(``/proc/stat``, the CPUs of ``os.sched_getaffinity``) minus what this process, and the processes
of its :class:`Group`, used themselves (``/proc/PID/stat``); the rest is other people's work. The
free cores, shared among the group's running members, decide the thread count (:func:`decide`,
a pure function), and ``torch.set_num_threads`` runs only when it changes. Between readings a call
costs one clock read.

A fixed choice switches the adaptation off: ``dnnlab ... --threads N``, :func:`fixed` (a context
manager), ``OMP_NUM_THREADS`` in the environment, or ``train.deterministic`` (the trainer then
attaches no policy): a product's rounding depends on the thread count, so only a run whose count
never changes reruns to the bit. :func:`cap` bounds the adaptive choice for a
block without fixing it (the explain topics' tiny nets run on one thread unless told otherwise).
The policy moves only threads it set itself: if other code calls ``torch.set_num_threads``
afterwards, it leaves that setting alone.

The OpenMP workers' spin-waiting is a separate, start-up matter: see :mod:`dnnlab_launch`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dnnlab.errors import DnnlabError

INTERVAL = 0.5        # seconds between two readings of the machine's load
RISE = 0.3            # one more thread when the free share reaches n + 1 - RISE cores
KEEP = 0.5            # one thread fewer when the free share falls below n - KEEP cores
LIMIT_PER_CORE = 4    # --threads above 4x the usable cores is refused (torch crashes at 100000)


@dataclass(frozen=True)
class Sample:
    """One reading: when, how many CPU ticks the usable CPUs were busy, the ticks of this process
    (or of each process of its group) by pid, and how many processes of the group were running."""
    time: float
    busy_ticks: int
    own_ticks: dict[int, int]
    sharers: int = 1


def decide(current: int, free: float, sharers: int, cores: int) -> int:
    """The thread count for ``free`` idle cores shared by ``sharers`` processes, from ``current``.

    Rises to ``floor(share + RISE)`` and falls only when the share drops below ``current - KEEP``
    (a band against flapping on noise), never above ``cores // sharers`` (each process's equal
    part of the machine, the CIFAR-10 study's rule) and never below 1.
    """
    share = max(0.0, free) / max(1, sharers)
    cap_ = max(1, cores // max(1, sharers))
    want = math.floor(share + RISE)
    if want < current and share >= current - KEEP:
        want = current
    return max(1, min(cap_, want))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, bounded by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota() -> float | None:
    """cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us / cfs_period_us`` in cores; None if unlimited."""
    for path, split in ((Path("/sys/fs/cgroup/cpu.max"), None),
                        (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), "cpu.cfs_period_us")):
        try:
            text = path.read_text().split()
            quota, period = (text[0], text[1]) if split is None else \
                (text[0], (path.parent / split).read_text().split()[0])
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period)
    return None


def _busy_ticks(cpus: frozenset[int]) -> int | None:
    """Ticks the CPUs ``cpus`` spent on anything but idling (``/proc/stat``; steal counts: a
    hypervisor's other guests hold the core as surely as a process does)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines[1:]:
        if not line.startswith("cpu"):
            break
        name, *fields = line.split()
        if int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            total += user + nice + system + irq + softirq + steal
    return total


def _process_ticks(pid: int) -> int:
    """User + system ticks of process ``pid`` (all its threads); 0 once it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()      # the name may hold spaces and parentheses
    return int(fields[11]) + int(fields[12])            # utime, stime (fields 14 and 15)


class Group:
    """Processes that share the machine's cores as one job (the CIFAR-10 study's workers).

    Made in the parent, passed to the worker processes (initializer arguments); a worker
    :meth:`joins <member>` while it trains. The policy then counts the members' own CPU time as
    the job's, not as other people's load, and gives each running member an equal part of the free
    cores: one thread each while they outnumber the cores, the idle cores shared out when fewer
    run, as at the end of the study when only the longest stage is left.
    """

    def __init__(self, size: int, context: Any = mp):
        self.pids = context.Array("i", size)

    def running(self) -> list[int]:
        with self.pids.get_lock():
            return [p for p in self.pids if p]

    @contextmanager
    def member(self) -> Iterator[None]:
        """This process belongs to the group for the block (its slot is freed after)."""
        pid = os.getpid()
        with self.pids.get_lock():
            slot = list(self.pids).index(0)
            self.pids[slot] = pid
        try:
            with _POLICY.grouped(self):
                yield
        finally:
            with self.pids.get_lock():
                self.pids[slot] = 0


def measure(group: Group | None = None) -> Sample | None:
    """Read the machine now (None where ``/proc`` cannot be read: the policy then keeps its count)."""
    cpus = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        frozenset(range(os.cpu_count() or 1))
    busy = _busy_ticks(cpus)
    if busy is None:
        return None
    pids = (group.running() if group is not None else None) or [os.getpid()]
    return Sample(time.monotonic(), busy, {p: _process_ticks(p) for p in pids}, len(pids))


class Policy:
    """The thread policy (one per process, :data:`_POLICY`; tests make their own).

    ``measure`` and ``clock`` are injectable so that the decision can be tested with numbers;
    ``tick`` is the length of a ``/proc`` tick in seconds.
    """

    def __init__(self, measure: Callable[[Group | None], Sample | None] = measure,
                 clock: Callable[[], float] = time.monotonic, cores: int | None = None,
                 tick: float | None = None, interval: float = INTERVAL):
        self.measure, self.clock, self.interval = measure, clock, interval
        self._cores = cores
        self.tick = tick or 1.0 / os.sysconf("SC_CLK_TCK")
        self.last: Sample | None = None
        self.next_time = -math.inf
        self.set_by_policy: int | None = None     # what this policy last gave torch
        self.fixed: list[int] = []                # the fixed choices in force, innermost last
        self.caps: list[int] = []
        self.group: Group | None = None
        self.env_fixed = "OMP_NUM_THREADS" in os.environ

    @property
    def cores(self) -> int:
        if self._cores is None:
            self._cores = usable_cores()
        return self._cores

    def adjust(self) -> int:
        """Re-decide the thread count if :data:`INTERVAL` has passed; return torch's count.

        The first call of a process (no reading yet) starts at one thread: too few costs at most
        the parallel speed-up until the next reading, too many can cost a hundredfold.
        """
        if self.fixed or self.env_fixed:
            return torch.get_num_threads()
        now = self.clock()
        if now < self.next_time:
            return torch.get_num_threads()
        self.next_time = now + self.interval
        current = torch.get_num_threads()
        if self.set_by_policy is not None and current != self.set_by_policy:
            return current                        # someone else set it: theirs to keep
        sample = self.measure(self.group)
        if self.last is None or sample is None:
            want = current if self.set_by_policy is not None else 1
        else:
            want = decide(current, self.free(self.last, sample), sample.sharers, self.cores)
        self.last = sample
        if self.caps:
            want = min(want, self.caps[-1])
        return self._set(want)

    def free(self, before: Sample, after: Sample) -> float:
        """Idle cores between two readings: usable cores minus other processes' load."""
        seconds = after.time - before.time
        if seconds <= 0:
            return float(self.cores)
        own = sum(t - before.own_ticks[p] for p, t in after.own_ticks.items() if p in before.own_ticks)
        others = after.busy_ticks - before.busy_ticks - own     # a member that left counts as other
        return self.cores - max(0.0, others * self.tick / seconds)

    def _set(self, n: int) -> int:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.set_by_policy = n
        return n

    @contextmanager
    def fixed_to(self, n: int | None) -> Iterator[None]:
        if n is None:
            yield
            return
        before = torch.get_num_threads()
        self.fixed.append(n)
        torch.set_num_threads(n)
        try:
            yield
        finally:
            self.fixed.pop()
            torch.set_num_threads(before)

    @contextmanager
    def capped(self, n: int | None) -> Iterator[None]:
        if n is None:
            yield
            return
        before = torch.get_num_threads()
        self.caps.append(n)
        if not (self.fixed or self.env_fixed) and before > n:
            self._set(n)
        try:
            yield
        finally:
            self.caps.pop()
            if not (self.fixed or self.env_fixed):
                self._set(before)

    @contextmanager
    def grouped(self, group: Group) -> Iterator[None]:
        before, self.group, self.last = self.group, group, None
        self.next_time = -math.inf
        try:
            yield
        finally:
            self.group, self.last = before, None


_POLICY = Policy()


def adjust() -> int:
    """Give torch as many threads as there are free cores (cheap: call it as often as you like)."""
    return _POLICY.adjust()


def fixed(n: int | None) -> AbstractContextManager[None]:
    """Run a block with exactly ``n`` threads and no adaptation, then restore the previous count
    (``None``: leave the policy adaptive). ``--threads N`` on the command line is this."""
    return _POLICY.fixed_to(n)


def cap(n: int | None) -> AbstractContextManager[None]:
    """Let the policy choose at most ``n`` threads in a block (a fixed choice still wins; None:
    no cap)."""
    return _POLICY.capped(n)


def limit() -> int:
    """The most threads ``--threads`` accepts: :data:`LIMIT_PER_CORE` x the usable cores."""
    return LIMIT_PER_CORE * _POLICY.cores


def check(n: int | None) -> int | None:
    """``n`` if it is a sensible thread count (or None), else a one-line :class:`DnnlabError`."""
    if n is not None and not 1 <= n <= limit():
        raise DnnlabError(f"--threads {n}: give 1 to {limit()} ({LIMIT_PER_CORE} x the "
                          f"{_POLICY.cores} usable cores), or leave it out to let dnnlab follow "
                          "the free cores")
    return n

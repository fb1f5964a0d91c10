"""The thread policy (issue 19, point 1): threads follow the free cores, a fixed choice wins,
``--threads`` is bounded on every command that trains, and the ``dnnlab`` command quiets OpenMP
before torch is loaded."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import dnnlab_launch
from cli_helpers import run_cli
from dnnlab import cli
from dnnlab.train import threads
from dnnlab.train.threads import Group, Policy, Sample, decide

# ------------------------------------------------------------------ the decision, as numbers


@pytest.mark.parametrize("current, free, sharers, cores, want", [
    (1, 1.95, 1, 2, 2),     # a quiet 2-core machine: both cores
    (2, 1.0, 1, 2, 1),      # one busy process beside us: one thread
    (2, 1.33, 1, 2, 1),     # ... as measured while our 2 threads crowd it (CFS: 2/3 core each)
    (2, 1.6, 1, 2, 2),      # a little noise does not take a thread away (the band)
    (1, 1.6, 1, 2, 1),      # ... nor adds one
    (1, 1.75, 1, 2, 2),     # rises at n + 1 - RISE
    (4, 0.0, 1, 4, 1),      # every core taken: still one thread
    (1, 8.0, 1, 4, 4),      # never above the usable cores
    (1, 2.0, 3, 2, 1),      # 3 stages on 2 cores: one thread each (CoreShare's rule)
    (1, 4.0, 2, 4, 2),      # 2 stages left on 4 idle cores: two each
    (2, 2.0, 2, 4, 1),      # 2 stages, 2 of 4 cores taken by others: one each
])
def test_decide_follows_the_free_cores(current, free, sharers, cores, want):
    assert decide(current, free, sharers, cores) == want


class FakeMachine:
    """A measurable machine: ``others`` cores busy with other work, ``own`` cores used by us."""

    def __init__(self, others: float, own: float = 1.0, tick: float = 0.01):
        self.t, self.busy, self.mine, self.tick = 100.0, 0, 0, tick
        self.others, self.own, self.reads = others, own, 0

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.busy += round((self.others + self.own) * seconds / self.tick)
        self.mine += round(self.own * seconds / self.tick)

    def clock(self) -> float:
        return self.t

    def measure(self, group) -> Sample:
        self.reads += 1
        return Sample(self.t, self.busy, {1: self.mine})


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def policy_on(m: FakeMachine, cores: int = 2) -> Policy:
    p = Policy(measure=m.measure, clock=m.clock, cores=cores, tick=m.tick)
    p.env_fixed = False
    return p


def risen_to_two(m: FakeMachine) -> Policy:
    """A policy on ``m`` (quiet) that has taken its first reading and risen to both cores."""
    p = policy_on(m)
    p.adjust()
    m.advance(1.0)
    assert p.adjust() == 2
    return p


def test_policy_starts_at_one_thread_and_rises_on_a_quiet_machine(keep_threads):
    m = FakeMachine(others=0.05)
    p = policy_on(m)
    assert p.adjust() == 1 and torch.get_num_threads() == 1     # no reading yet: err low
    m.advance(1.0)
    assert p.adjust() == 2 and torch.get_num_threads() == 2


def test_policy_drops_to_one_thread_beside_a_busy_process(keep_threads):
    m = FakeMachine(others=0.05)
    p = risen_to_two(m)
    m.others = 1.0                                              # python -c "while True: pass"
    m.advance(1.0)
    assert p.adjust() == 1 and torch.get_num_threads() == 1
    m.others = 0.0                                              # it ended
    m.advance(1.0)
    assert p.adjust() == 2


def test_free_cores_are_the_others_load_subtracted():
    m = FakeMachine(others=0.7, own=1.3)
    p = policy_on(m, cores=4)
    a = m.measure(None)
    m.advance(2.0)
    assert p.free(a, m.measure(None)) == pytest.approx(4 - 0.7, abs=0.01)


def test_policy_measures_at_most_every_interval(keep_threads):
    m = FakeMachine(others=0.0)
    p = policy_on(m)
    p.adjust()
    for _ in range(1000):                                       # 64-step host syncs, 1 ms apart
        m.advance(0.001)
        p.adjust()
    assert m.reads == 1 + 1000 // 500                           # one reading per 0.5 s


def test_a_call_between_readings_costs_next_to_nothing(keep_threads):
    p = Policy(cores=2)
    p.env_fixed = False
    p.adjust()
    t0 = time.perf_counter()
    for _ in range(10_000):
        p.adjust()
    assert (time.perf_counter() - t0) / 10_000 < 20e-6          # a reading costs ~70 us


def test_a_fixed_choice_switches_the_adaptation_off(keep_threads):
    m = FakeMachine(others=1.0)
    p = policy_on(m)
    with p.fixed_to(2):
        assert torch.get_num_threads() == 2
        for _ in range(3):
            m.advance(1.0)
            assert p.adjust() == 2                               # busy machine, but fixed
        assert m.reads == 0
    with p.fixed_to(None):                                      # None: the policy stays adaptive
        p.adjust()
        assert m.reads == 1


def test_fixed_restores_the_count_before_it(keep_threads):
    torch.set_num_threads(1)
    with threads.fixed(2):
        assert torch.get_num_threads() == 2
        with threads.fixed(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_omp_num_threads_in_the_environment_is_a_fixed_choice(monkeypatch, keep_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    m = FakeMachine(others=1.0)
    p = Policy(measure=m.measure, clock=m.clock, cores=2, tick=m.tick)
    torch.set_num_threads(2)
    m.advance(1.0)
    assert p.adjust() == 2 and m.reads == 0


def test_the_policy_leaves_a_count_set_by_other_code_alone(keep_threads):
    m = FakeMachine(others=0.0)
    p = policy_on(m)
    p.adjust()
    torch.set_num_threads(2)                                    # the user's own choice
    m.others = 1.0
    m.advance(1.0)
    assert p.adjust() == 2 and torch.get_num_threads() == 2


def test_cap_bounds_the_choice_but_a_fixed_count_wins(keep_threads):
    m = FakeMachine(others=0.0)
    p = risen_to_two(m)
    with p.capped(1):
        assert torch.get_num_threads() == 1
        m.advance(1.0)
        assert p.adjust() == 1                                  # quiet, but capped
    assert torch.get_num_threads() == 2
    with p.fixed_to(2), p.capped(1):
        assert torch.get_num_threads() == 2


# ------------------------------------------------------------------ the group (CIFAR-10 stages)


def test_a_group_shares_the_cores_among_its_running_members(keep_threads):
    """CoreShare's rule on the same mechanism: members' own CPU time is theirs, not others' load,
    and each running member gets an equal part."""
    group = Group(3, mp.get_context("spawn"))
    with group.member():
        assert group.running() == [os.getpid()]
        s = threads.measure(group)
        assert s.sharers == 1 and list(s.own_ticks) == [os.getpid()]
        with group.pids.get_lock():                             # two more stages start elsewhere
            group.pids[1], group.pids[2] = os.getppid(), 1
        assert threads.measure(group).sharers == 3
    assert group.running() == [os.getppid(), 1]                 # our slot was freed
    m = FakeMachine(others=0.0, own=2.0)
    p = policy_on(m)
    p.measure = lambda g: Sample(m.t, m.busy, {1: m.mine}, sharers=3)
    p.adjust()
    m.advance(1.0)
    assert p.adjust() == 1                                      # 3 stages on 2 cores
    p.measure = lambda g: Sample(m.t, m.busy, {1: m.mine}, sharers=1)
    m.advance(1.0)
    assert p.adjust() == 2                                      # the last stage: both cores


def test_a_reading_of_this_machine_is_sane():
    a = threads.measure()
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:                       # burn 0.3 s of our own CPU
        pass
    b = threads.measure()
    own = (b.own_ticks[os.getpid()] - a.own_ticks[os.getpid()]) / os.sysconf("SC_CLK_TCK")
    assert 0.2 < own < 0.5
    assert b.busy_ticks - a.busy_ticks >= b.own_ticks[os.getpid()] - a.own_ticks[os.getpid()] - 5
    assert 1 <= threads.usable_cores() <= (os.cpu_count() or 1)


# ------------------------------------------------------------------ --threads on every command

COMMANDS = {
    "train": ["train", "c.toml"], "lr-find": ["lr-find", "c.toml"], "sweep": ["sweep", "c.toml"],
    "tune": ["tune", "c.toml"], "prune": ["prune", "run", "--sparsity", "0.5"],
    "doctor": ["doctor", "run"], "explain": ["explain", "symmetry"],
    "study cifar10": ["study", "cifar10"], "study transfer": ["study", "transfer"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("n", ["0", "100000"])
def test_threads_is_bounded_on_every_command_before_any_work(command, n, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                 # c.toml and run do not exist:
    code, out, err = run_cli([*COMMANDS[command], "--threads", n])   # the bound comes first
    limit = threads.limit()
    assert code == 2
    assert err.strip() == (f"dnnlab: error: --threads {n}: give 1 to {limit} (4 x the "
                           f"{limit // 4} usable cores), or leave it out to let dnnlab follow the "
                           "free cores")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", list(COMMANDS))
def test_threads_n_is_in_force_while_the_command_runs(command, monkeypatch, keep_threads):
    seen = {}

    def fake(args):
        seen["threads"] = torch.get_num_threads()
        return 0

    parser = cli.build_parser()
    args = parser.parse_args([*COMMANDS[command], "--threads", "1"])
    assert args.threads == 1
    monkeypatch.setattr(args, "func", fake)
    monkeypatch.setattr(type(parser), "parse_args", lambda self, argv=None: args)
    torch.set_num_threads(2)
    code, _, _ = run_cli([*COMMANDS[command], "--threads", "1"])
    assert (code, seen["threads"], torch.get_num_threads()) == (0, 1, 2)


# ------------------------------------------------------------------ OpenMP before torch


def test_the_dnnlab_command_quiets_openmp_before_torch_is_imported():
    """The console script's main sets GOMP_SPINCOUNT before the first import of torch (libgomp
    reads it once, when torch loads it); a value the user set is kept."""
    script = textwrap.dedent("""
        import os, sys
        seen = {}

        class Watch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" and "torch" not in seen:
                    seen["torch"] = os.environ.get("GOMP_SPINCOUNT")
                return None

        sys.meta_path.insert(0, Watch())
        import dnnlab_launch
        assert "torch" not in sys.modules, "dnnlab_launch imported torch"
        code = dnnlab_launch.main(["datasets"])
        print(code, seen.get("torch"), "dnnlab" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 10000 True"
    env["GOMP_SPINCOUNT"] = "500"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 500 True"


def test_importing_dnnlab_sets_no_openmp_environment():
    script = "import os, dnnlab; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "None", out.stderr
    assert dnnlab_launch.OPENMP_ENV == {"GOMP_SPINCOUNT": "10000"}

"""Many `dnnlab tune` worker processes sharing one study: none of the trials lost or duplicated.

One test shares a SQLite file between 4 local workers; the other starts a real PostgreSQL server
on 127.0.0.1 (skipped, saying why, where the server binaries are not installed: `.ci/run` installs
them) and runs 2 workers against one study in it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

CONFIG = """
name = "workers"
[data]
name = "synthetic"
valid_size = 200
limit = 300
[model]
depth = 1
width = 8
[train]
epochs = 3
batch_size = 32
patience = 2
progress = false
device = "cpu"
checkpoint_every = 0
[tune]
"optim.lr" = {low = 1e-2, high = 1e-1, log = true}
"model.width" = {low = 4, high = 16}
"""

# `python -m dnnlab tune ...`
WORKER = """
import sys
from dnnlab import cli
sys.exit(cli.main(["tune", *sys.argv[1:]]))
"""


def start_workers(n: int, config: Path, storage: str, out: Path, trials: int) -> list[subprocess.Popen]:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-c", WORKER, str(config), "--trials", str(trials),
                              "--folds", "2", "--storage", storage, "--study-name", "shared",
                              "--out", str(out / f"worker{i}")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            for i in range(n)]


def finish(workers: list[subprocess.Popen], timeout: float = 240) -> list[list[int]]:
    """Each worker's own trial numbers, from its closing line."""
    ran = []
    for w in workers:
        out, _ = w.communicate(timeout=timeout)
        assert w.returncode == 0, out
        m = re.search(r"this worker ran (\d+) trials: \[([\d, ]*)\]", out)
        assert m, out
        numbers = [int(x) for x in m.group(2).split(",") if x.strip()]
        assert len(numbers) == int(m.group(1))
        ran.append(numbers)
    return ran


def check_study(storage: str, ran: list[list[int]], trials: int) -> None:
    import optuna
    from optuna.trial import TrialState

    from dnnlab.tune.search import open_storage
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    all_trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in all_trials]
    mine = [n for r in ran for n in r]
    assert len(set(numbers)) == len(numbers)                       # no duplicates
    assert sorted(numbers) == list(range(len(numbers)))
    assert sorted(mine) == sorted(numbers)                         # none lost, none counted twice
    assert len(numbers) >= trials                                  # the target was reached
    assert len(numbers) <= trials + len(ran) - 1                   # at most one extra per racing worker
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in all_trials)
    workers = {t.user_attrs["worker"] for t in all_trials}
    assert len(workers) == sum(1 for r in ran if r)                # each trial names its worker


def test_four_workers_share_one_sqlite_study(tmp_path):
    config = tmp_path / "tune.toml"
    config.write_text(CONFIG)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    ran = finish(start_workers(4, config, storage, tmp_path, trials=12))
    check_study(storage, ran, 12)
    assert sum(1 for r in ran if r) >= 2                           # the work was shared


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(dirs[-1]) if dirs and (Path(dirs[-1]) / "initdb").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 with an empty database; its URL."""
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed "
                                   "(pip install psycopg2-binary, part of the test extras)")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs "
                    "the distribution's postgresql package")
    base = Path(tempfile.mkdtemp(prefix="dnnlab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:                      # postgres refuses to run as root
        import pwd
        runuser = shutil.which("runuser")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            nobody = None
        if runuser is None or nobody is None:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root without runuser or a 'nobody' user: PostgreSQL refuses "
                        "to start as root")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        as_user = [runuser, "-u", "nobody", "--"]
    data, port = base / "data", _free_port()

    def run(*cmd):
        res = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"{cmd[0]} failed: {res.stdout}\n{res.stderr}"

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
        "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        for _ in range(50):
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                                        dbname="postgres")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE tune")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/tune"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(tmp_path, postgres_url):
    config = tmp_path / "tune.toml"
    config.write_text(CONFIG)
    ran = finish(start_workers(2, config, postgres_url, tmp_path, trials=8))
    check_study(postgres_url, ran, 8)
    assert all(ran), ran                                           # both workers took part


# Each process waits for the same moment, then opens the storage. Alembic checks whether its
# version table exists, then creates it. A pause between the two (injected here), longer for each
# later process, makes every process find no table and all but the first create it after the
# first has committed it: "relation ... already exists", every time, as CI met it by chance.
OPEN_AT = """
import sys, time
import sqlalchemy
import alembic.runtime.migration as migration
from dnnlab.storage import open_storage

def ensure_slowly(self, purge=False):
    exists = sqlalchemy.inspect(self.connection).has_table(self._version.name)
    time.sleep(0.3 + 0.8 * int(sys.argv[3]))
    if not exists:
        self._version.create(self.connection)
migration.MigrationContext._ensure_version_table = ensure_slowly
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
open_storage(sys.argv[1])
"""


def test_workers_opening_an_empty_postgresql_database_at_once(postgres_url):
    """Workers started together on a new database all open it: losing the race to create a table
    ("relation ... already exists", seen in CI) is retried, not reported as a bad URL."""
    import psycopg2
    host = postgres_url.rsplit("/", 1)[0]
    port = int(host.rsplit(":", 1)[1])
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE race")
    conn.close()
    at = time.time() + 5.0
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, f"{host}/race", str(at), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(4)]
    failures = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            failures.append(out[-600:])
    assert not failures, failures[0]

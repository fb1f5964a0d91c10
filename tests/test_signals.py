"""A signal reaches the whole command (issue 26, point 7): SIGTERM to a study ends its worker
processes within seconds (a study left them training for over a minute), and keeps the stages
that finished; SIGTERM to tune ends it "interrupted" in one line (it printed Optuna's 20-line
traceback)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

STUDY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dnnlab import rundir
    from dnnlab.studies import engine

    def quick(setup, inputs):
        return {"value": 1}

    def slow(setup, inputs):
        print("worker", __import__("os").getpid(), flush=True)
        time.sleep(120)
        return {"value": 2}

    if __name__ == "__main__":
        out = Path(sys.argv[1])
        stages = (engine.Stage("quick", (), "q", quick),
                  engine.Stage("slow1", ("quick",), "s", slow),
                  engine.Stage("slow2", ("quick",), "s", slow))
        say = engine.Say("t", on=False)
        store = engine.Store(out, resume=False, say=say)
        try:
            with rundir.interrupt_on_signals():
                engine.run(stages, None, settings={}, store=store, workers=2, threads=1, say=say)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(143)
""")


def _env():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_sigterm_to_a_study_ends_its_workers_within_seconds(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(STUDY)
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = []
    while len(workers) < 2:                               # both slow stages are running
        line = p.stdout.readline()
        assert line, p.stderr.read()
        if line.startswith("worker"):
            workers.append(int(line.split()[1]))
    t0 = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert time.perf_counter() - t0 < 15, "the study waited for its workers' stages"
    assert p.returncode == 143 and "interrupted" in out, (out, err)
    time.sleep(0.5)
    assert not any(_alive(w) for w in workers)
    assert "Traceback" not in err, err
    assert any((tmp_path / "out").rglob("*quick*")), "the finished stage was not kept"


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigterm_to_tune_ends_it_interrupted_in_one_line(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('name = "t"\n[data]\nname = "synthetic"\nlimit = 3000\n[model]\ndepth = 2\n'
                   'width = 32\n[train]\nepochs = 200\nprogress = false\ndevice = "cpu"\n'
                   '[tune]\n"optim.lr" = {low = 1e-4, high = 1e-2, log = true}\n')
    p = subprocess.Popen([sys.executable, "-m", "dnnlab", "tune", str(cfg), "--trials", "3",
                          "--out", str(tmp_path / "tune"), "--threads", "1"], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while True:                                           # the first trial is training
        line = p.stdout.readline()
        assert line, p.stderr.read()
        if "searching" in line:
            break
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    lines = [x for x in err.splitlines() if x.strip()]
    assert p.returncode == 143 and len(lines) == 1 and "interrupted" in lines[0], err
    assert "--storage" in lines[0] and "--resume" not in lines[0]

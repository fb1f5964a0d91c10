"""Every path a command writes is a new path or a regular file or folder (dnnlab.io.check_target).

Devices, FIFOs, links to them and /proc are refused in one line before any work, and left exactly
as they were: `dnnlab export RUN --out /dev/null`, as root, used to rename its temporary file over
the device. The devices here are made in a temporary folder (a FIFO; a character device, as root,
with /dev/null's numbers): no real device is ever touched.
"""

import os
import stat
from pathlib import Path

import pytest

from cli_helpers import run_cli
from dnnlab import io, rundir
from dnnlab.errors import DnnlabError

CONFIG = ('name = "t"\n[data]\nname = "synthetic"\nlimit = 200\n[model]\ndepth = 1\nwidth = 4\n'
          '[train]\nepochs = 1\nprogress = false\ndevice = "cpu"\n'
          '[tune]\n"optim.lr" = {low = 1e-4, high = 1e-2, log = true}\n')


def targets(tmp: Path) -> dict[str, Path]:
    """The hostile targets, made inside ``tmp``: each kind the check must refuse."""
    made = {"fifo": tmp / "fifo"}
    os.mkfifo(made["fifo"])
    if os.geteuid() == 0:                        # mknod of a device needs root
        made["chardev"] = tmp / "null"
        os.mknod(made["chardev"], stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made["link-to-chardev"] = tmp / "link"
        made["link-to-chardev"].symlink_to(made["chardev"])
    made["below-a-fifo"] = made["fifo"] / "sub"
    made["proc"] = Path("/proc/dnnlab-no-such-dir/x")   # refused by name, before any look at it
    return made


def snapshot(tmp: Path) -> dict[str, int]:
    return {str(p): p.lstat().st_mode for p in tmp.rglob("*")}


def commands(tmp: Path, run: Path) -> dict[str, list[str]]:
    cfg = str(tmp / "c.toml")
    return {"train": ["train", cfg], "sweep": ["sweep", cfg, "--set", "optim.lr=1e-3,1e-2"],
            "lr-find": ["lr-find", cfg, "--steps", "5"], "report": ["report", str(run)],
            "export": ["export", str(run)], "explain": ["explain", "momentum", "--quick"],
            "study": ["study", "transfer", "--quick"], "doctor": ["doctor", str(run)],
            "tune": ["tune", cfg, "--trials", "1", "--folds", "2"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    (root / "c.toml").write_text(CONFIG)
    code, _, err = run_cli(["train", str(root / "c.toml"), "--out", str(root / "run")])
    assert code == 0, err
    return root / "run"


def test_every_out_at_a_device_fifo_link_or_proc_is_refused_and_left_alone(tmp_path, run):
    (tmp_path / "c.toml").write_text(CONFIG)
    made = targets(tmp_path)
    before = snapshot(tmp_path)
    for command, argv in commands(tmp_path, run).items():
        for kind, target in made.items():
            code, out, err = run_cli([*argv, "--out", str(target)])
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1, (command, kind, err)
            assert str(target) in lines[0] and "Traceback" not in err, (command, kind, err)
            assert snapshot(tmp_path) == before, (command, kind)   # nothing made, nothing renamed
    assert stat.S_ISFIFO(made["fifo"].lstat().st_mode)


def test_the_write_itself_refuses_a_device_or_fifo(tmp_path):
    """The last guard, below every command: io's atomic write and rundir.make_dir."""
    made = targets(tmp_path)
    for target in made.values():
        with pytest.raises(DnnlabError, match="FIFO|character device|/proc"):
            io.write_text(target, "x")
        with pytest.raises(DnnlabError, match="FIFO|character device|/proc"):
            rundir.make_dir(target)
    assert stat.S_ISFIFO(made["fifo"].lstat().st_mode)
    if "chardev" in made:
        assert stat.S_ISCHR(made["chardev"].lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in made.values() if p.parent == tmp_path)


def test_a_run_folder_whose_file_is_a_fifo_is_not_written_through(tmp_path, run):
    """A FIFO planted where a command writes its default output (RUN/model.onnx, report.html)."""
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    os.mkfifo(copy / "report.html")
    code, _, err = run_cli(["report", str(copy)])
    assert code == 2 and "FIFO" in err and len(err.strip().splitlines()) == 1, err
    assert stat.S_ISFIFO((copy / "report.html").lstat().st_mode)


def test_control_characters_in_an_out_path_are_refused(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG)
    code, _, err = run_cli(["train", str(tmp_path / "c.toml"), "--out", str(tmp_path / "a\nb")])
    assert code == 2 and "control character" in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == [tmp_path / "c.toml"]


def test_an_export_out_at_an_existing_folder_is_refused_before_any_work(tmp_path, run):
    (tmp_path / "here").mkdir()
    code, _, err = run_cli(["export", str(run), "--out", str(tmp_path / "here")])
    assert code == 2 and "is a folder" in err and len(err.strip().splitlines()) == 1, err

"""Property-based fuzzing of run directories: every file of a real (tiny) run is deleted,
truncated, has bytes flipped, is edited (checkpoints also with a valid checksum, as a careful
hand-editor would) or is swapped for the same file of another run, then every command that reads
a run (`report`, `doctor`, `prune`, `export`, `train --resume`) must end in exit 0 or in one line
and exit 2, never a traceback; a deleted record or a swapped file must be refused (the folder is
not the run it records: dnnlab.train.state.check_run).

And the output targets: every writing command's --out at a FIFO, a character device, a link to
one, a path below one, /proc, /sys or /dev, or a path with a control character, is one line and
changes nothing (dnnlab.io.check_target)."""

import importlib.util
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import run_cli
from dnnlab.train import checkpoint as ckpt

SETTINGS = settings(max_examples=45, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
CONFIG = """
name = "fuzz"
[data]
name = "synthetic"
limit = 200
valid_size = 60
[model]
depth = 2
width = 8
[train]
epochs = 2
batch_size = 64
progress = false
device = "cpu"
checkpoint_every = 1
"""
FILES = ["config.toml", "metrics.csv", "summary.json", "model.safetensors",
         "checkpoints/last.safetensors", "checkpoints/best.safetensors",
         "checkpoints/epoch_0001.safetensors", "checkpoints/start.json"]


def check_clean(code, err, argv):
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("dnnlab"), (argv, err)


READERS = [["report", "{run}", "--out", "{tmp}/report"], ["doctor", "{run}", "--out", "{tmp}/doc"],
           ["prune", "{run}", "--sparsity", "0.5", "--epochs", "0", "--quiet"],
           ["train", "--resume", "{run}", "--epochs", "3"]]
if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
    READERS.append(["export", "{run}", "--out", "{tmp}/m.onnx"])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    (root / "c.toml").write_text(CONFIG)
    code, _, err = run_cli(["train", str(root / "c.toml"), "--out", str(root / "run")])
    assert code == 0, err
    for f in FILES:
        assert (root / "run" / f).is_file(), f
    return root / "run"


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """Another run of the same config but another seed: the source of swapped files."""
    root = tmp_path_factory.mktemp("other")
    (root / "c.toml").write_text(CONFIG + "seed = 7\n")
    code, _, err = run_cli(["train", str(root / "c.toml"), "--out", str(root / "run")])
    assert code == 0, err
    return root / "run"


def _edit_checkpoint(path: Path, draw) -> None:
    """A structural edit saved with a valid checksum: only validation can catch it."""
    tensors, meta = ckpt.load(path)
    kind = draw(st.sampled_from(["drop_tensor", "reshape", "dtype", "meta_value", "drop_meta"]))
    names = sorted(tensors)
    name = draw(st.sampled_from(names))
    if kind == "drop_tensor":
        del tensors[name]
    elif kind == "reshape":
        tensors[name] = tensors[name].reshape(-1)[: max(1, tensors[name].numel() - 1)].clone()
    elif kind == "dtype":
        tensors[name] = tensors[name].double()
    elif meta:
        key = draw(st.sampled_from(sorted(meta)))
        if kind == "drop_meta":
            del meta[key]
        else:
            meta[key] = draw(st.sampled_from(["x", -1, None, [], {"a": 1}, 1e308, True]))
    ckpt.save(path, tensors, meta)


@st.composite
def damage(draw):
    how = draw(st.sampled_from(["truncate", "flip", "edit", "delete", "swap", "fifo"]))
    return draw(st.sampled_from(FILES)), how, draw


def apply(run: Path, name: str, how: str, draw, other: Path | None = None) -> None:
    path = run / name
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "fifo":                                 # a read of it would block for ever
        path.unlink()
        os.mkfifo(path)
    elif how == "swap":
        assert other is not None
        shutil.copy(other / name, path)
    elif how == "truncate":
        path.write_bytes(data[:draw(st.integers(0, max(0, len(data) - 1)))])
    elif how == "flip":
        i = draw(st.integers(0, len(data) - 1))
        path.write_bytes(data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:])
    elif name.endswith(".safetensors"):
        _edit_checkpoint(path, draw)
    else:
        text = data.decode("utf-8")
        old = draw(st.sampled_from(["1", "0", ".", ",", "=", '"', "\n", "e", "epoch", "status",
                                    "completed", "8", "{", "["]))
        new = draw(st.sampled_from(["", "x", "-1", "nan", "1e999", "running", '"', "\n", "99999"]))
        path.write_text(text.replace(old, new, draw(st.integers(1, 3))))


# the files whose loss or exchange leaves the folder not the run it records: always refused
RECORDED = {"config.toml", "model.safetensors", "checkpoints/last.safetensors",
            "checkpoints/best.safetensors", "checkpoints/epoch_0001.safetensors",
            "checkpoints/start.json"}


@SETTINGS
@given(d=damage())
def test_damaged_run_dirs_fail_cleanly(base_run, other_run, d):
    name, how, draw = d
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(base_run, run)
        apply(run, name, how, draw, other_run)
        for argv in READERS:
            argv = [a.format(run=run, tmp=tmp) for a in argv]
            code, _, err = run_cli(argv)
            check_clean(code, err, argv)
            must_refuse = how == "swap" and name in RECORDED or how == "fifo" or (
                how == "delete" and name == "checkpoints/start.json")
            if must_refuse:
                assert code == 2, (argv, name, how)


def _targets(tmp: Path) -> dict[str, Path]:
    made = {"fifo": tmp / "fifo", "below-fifo": tmp / "fifo" / "x", "proc": Path("/proc/dnnlab-x/y"),
            "sys": Path("/sys/dnnlab-x"), "dev": Path("/dev/dnnlab-x"),
            "control": tmp / "a\nb", "link-to-fifo": tmp / "lf"}
    os.mkfifo(made["fifo"])
    made["link-to-fifo"].symlink_to(made["fifo"])
    if os.geteuid() == 0:                              # a device node in tmp: never a real one
        made["chardev"] = tmp / "null"
        os.mknod(made["chardev"], stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made["link-to-chardev"] = tmp / "lc"
        made["link-to-chardev"].symlink_to(made["chardev"])
    return made


WRITERS = [["train", "{cfg}"], ["sweep", "{cfg}", "--set", "optim.lr=1e-3,1e-2"],
           ["lr-find", "{cfg}", "--steps", "5"], ["report", "{run}"], ["doctor", "{run}"],
           ["explain", "momentum", "--quick"], ["study", "transfer", "--quick"],
           ["tune", "{cfg}", "--trials", "1"], ["export", "{run}"]]


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from(WRITERS), kind=st.sampled_from(
    ["fifo", "below-fifo", "proc", "sys", "dev", "control", "link-to-fifo", "chardev",
     "link-to-chardev"]))
def test_output_targets_are_refused_and_left_alone(base_run, command, kind):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = _targets(tmp)
        if kind not in made:
            return                                      # a device node needs root
        (tmp / "c.toml").write_text(CONFIG)
        before = {str(p): p.lstat().st_mode for p in tmp.rglob("*")}
        argv = [a.format(cfg=tmp / "c.toml", run=base_run) for a in command]
        code, _, err = run_cli([*argv, "--out", str(made[kind])])
        check_clean(code, err, argv)
        assert code == 2, (argv, kind, err)
        assert {str(p): p.lstat().st_mode for p in tmp.rglob("*")} == before, (argv, kind)


def test_checksum_catches_a_flipped_weight(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    path = run / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10                                  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    for argv in (["prune", str(run), "--sparsity", "0.5", "--epochs", "0", "--quiet"],):
        code, _, err = run_cli(argv)
        assert code == 2 and "checksum" in err and str(path) in err


def test_resume_from_a_checkpoint_with_wrong_shapes_names_the_file(base_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    path = run / "checkpoints" / "last.safetensors"
    tensors, meta = ckpt.load(path)
    key = next(k for k in tensors if k.startswith("backend."))
    tensors[key] = tensors[key][..., :-1].clone()
    ckpt.save(path, tensors, meta)
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "3"])
    assert code == 2 and str(path) in err and "shape" in err
    meta["book"]["history"] = [{**meta["book"]["history"][0], "epoch": [1, 2], "loss": [0.1]}]
    tensors, _ = ckpt.load(base_run / "checkpoints" / "last.safetensors")
    ckpt.save(path, tensors, meta)
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "3"])
    assert code == 2 and str(path) in err and "history" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"           # a refused resume changes nothing

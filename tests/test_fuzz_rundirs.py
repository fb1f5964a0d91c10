"""Property-based fuzzing of run directories: every file of a real (tiny) run is truncated, has
bytes flipped or is edited (checkpoints also with a valid checksum, as a careful hand-editor
would), then `dnnlab report`, `dnnlab prune` and `dnnlab train --resume` must each end in exit 0
or in one line and exit 2, never a traceback."""

import json
import shutil
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


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    (root / "c.toml").write_text(CONFIG)
    code, _, err = run_cli(["train", str(root / "c.toml"), "--out", str(root / "run")])
    assert code == 0, err
    for f in FILES:
        assert (root / "run" / f).is_file(), f
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
    return draw(st.sampled_from(FILES)), draw(st.sampled_from(["truncate", "flip", "edit"])), draw


def apply(run: Path, name: str, how: str, draw) -> None:
    path = run / name
    data = path.read_bytes()
    if how == "truncate":
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


@SETTINGS
@given(d=damage())
def test_damaged_run_dirs_fail_cleanly(base_run, d):
    name, how, draw = d
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(base_run, run)
        apply(run, name, how, draw)
        for argv in (["report", str(run)],
                     ["prune", str(run), "--sparsity", "0.5", "--epochs", "0", "--quiet"],
                     ["train", "--resume", str(run), "--epochs", "3"]):
            code, _, err = run_cli(argv)
            check_clean(code, err, argv)


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

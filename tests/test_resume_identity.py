"""A resume continues the run it names (issue 18, point 3): the same arrays whatever their path,
a checkpoint to continue from, its own directory. Each refusal is one line, exit 2, and changes
nothing on disk."""

import numpy as np

from cli_helpers import run_cli


def _npz(path, seed):
    g = np.random.default_rng(seed)
    x = g.random((400, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 1).astype("int64")
    np.savez(path, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])


def _config(tmp_path, data):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nname = "file"\npath = "{data}"\nvalid_size = 50\n'
                   '[model]\ndepth = 1\nwidth = 8\n[train]\nepochs = 2\nprogress = false\n')
    return cfg


def _files(run):
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


def test_resume_on_other_arrays_at_the_same_path_is_refused(tmp_path):
    data = tmp_path / "d.npz"
    _npz(data, 0)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(_config(tmp_path, data)), "--out", str(run)])
    assert code == 0, err
    _npz(data, 1)                                    # same shape, same path, other values
    before = _files(run)
    code, _, err = run_cli(["train", "--resume", str(run), "--epochs", "4"])
    assert code == 2 and err.count("\n") == 1
    assert "the data differs" in err and "train" in err
    assert _files(run) == before                     # a refused resume changes nothing
    _npz(data, 0)                                    # the same arrays again: it resumes
    code, out, err = run_cli(["train", "--resume", str(run), "--epochs", "4"])
    assert code == 0, err


def test_resume_without_a_checkpoint_or_with_another_out_is_refused(tmp_path):
    data = tmp_path / "d.npz"
    _npz(data, 0)
    run = tmp_path / "run"
    assert run_cli(["train", str(_config(tmp_path, data)), "--out", str(run)])[0] == 0
    code, _, err = run_cli(["train", "--resume", str(run), "--out", str(tmp_path / "other")])
    assert code == 2 and "--out" in err and not (tmp_path / "other").exists()
    (run / "checkpoints" / "last.safetensors").unlink()
    before = _files(run)
    code, _, err = run_cli(["train", "--resume", str(run)])
    assert code == 2 and "no checkpoint to resume from" in err
    assert _files(run) == before

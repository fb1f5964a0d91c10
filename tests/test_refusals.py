"""A refused command changes nothing and says little (issue 26, point 8): no file or folder is
left behind, an echoed value is cut to about 100 characters, control characters in a path are
refused, and the message names only what the user gave."""

import pytest

from cli_helpers import run_cli

CONFIG = ('name = "r"\n[data]\nname = "synthetic"\nlimit = 200\n[model]\ndepth = 1\nwidth = 4\n'
          '[train]\nepochs = 1\nprogress = false\ndevice = "cpu"\n')


def _one_line(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("extra", [["--set", "train.batch_size=100000"], ["--device", "cuda"]])
def test_a_training_refused_before_it_starts_leaves_no_folder(tmp_path, extra):
    """A batch size larger than the data, or a device that is not there, used to leave
    OUT/summary.json marked failed (and the folder around it)."""
    import torch
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    (tmp_path / "c.toml").write_text(CONFIG)
    out = tmp_path / "deep" / "er" / "run"
    _one_line(*run_cli(["train", str(tmp_path / "c.toml"), "--out", str(out), *extra])[::2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


@pytest.mark.parametrize("steps", ["100000000", "1", "-5"])
def test_refused_lr_find_steps_leave_no_folder_and_name_only_steps(tmp_path, steps):
    (tmp_path / "c.toml").write_text(CONFIG)
    line = _one_line(*run_cli(["lr-find", str(tmp_path / "c.toml"), "--steps", steps, "--out",
                               str(tmp_path / "lr")])[::2])
    assert f"--steps {steps}" in line and "train.epochs" not in line
    assert not (tmp_path / "lr").exists()


def test_a_huge_value_is_echoed_cut(tmp_path):
    (tmp_path / "c.toml").write_text('name = "b"\n[data]\nname = "synthetic"\nclasses = ['
                                     + ",".join(["1"] * 20000) + "]\n")
    line = _one_line(*run_cli(["train", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o")])[::2])
    assert len(line) < 400 and "characters)" in line, line[:500]
    line = _one_line(*run_cli(["train", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"),
                               "--set", "optim.lr=[" + ",".join(["1"] * 5000) + "]"])[::2])
    assert len(line) < 400, line[:500]
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("doc")
    (root / "c.toml").write_text(CONFIG.replace("epochs = 1", "epochs = 2\nrecord_every = 1"))
    code, _, err = run_cli(["train", str(root / "c.toml"), "--out", str(root / "run")])
    assert code == 0 and (root / "run" / "layers.csv").is_file(), err
    return root / "run"


@pytest.mark.parametrize("name,data", [("summary.json", b"[1, 2]\n"), ("summary.json", b"\xff\xfe{"),
                                       ("layers.csv", b"\xff\xfe\x00bad"),
                                       ("layers.csv", None)])
def test_doctor_on_a_damaged_summary_or_layers_csv_is_one_line(finished, tmp_path, name, data):
    """It raised AttributeError (a summary.json holding a list) or UnicodeDecodeError."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    if data is None:                                  # a row cut short
        lines = (run / name).read_text().splitlines()
        data = "\n".join([*lines[:3], lines[3][:15], *lines[4:]]).encode()
    (run / name).write_bytes(data)
    line = _one_line(*run_cli(["doctor", str(run), "--out", str(tmp_path / "d")])[::2])
    assert name in line and "damaged" in line, line


@pytest.mark.parametrize("argv", [["train", "{cfg}", "--data-dir", "/tmp/a\nb"],
                                  ["train", "{cfg}", "--set", 'data.data_dir="/tmp/a\\nb"'],
                                  ["report", "{tmp}/r\n"], ["train", "--resume", "{tmp}/r\tx"],
                                  ["sweep", "{cfg}", "--storage", "sqlite:///a\nb.db"]])
def test_a_control_character_in_any_path_is_refused_in_one_line(tmp_path, argv):
    """A newline in --data-dir split the error naming it in two."""
    (tmp_path / "c.toml").write_text(CONFIG)
    argv = [a.format(cfg=tmp_path / "c.toml", tmp=tmp_path) for a in argv]
    line = _one_line(*run_cli([*argv, "--out", str(tmp_path / "o")] if argv[0] != "report"
                              else argv)[::2])
    assert "control character" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_explain_whose_only_topic_failed_points_at_no_results_file(tmp_path, monkeypatch):
    """On a full disk the topic's plot fails; the error said "the others' results are in
    results.json" when there were no others (and, the disk being full, maybe no such file)."""
    from dnnlab.errors import DnnlabError
    from dnnlab.studies import explain

    def full(*a, **k):
        raise DnnlabError("could not write momentum.png: [Errno 28] No space left on device")
    monkeypatch.setattr(explain, "run_topic", full)
    monkeypatch.setattr(explain, "_save", full)
    code, _, err = run_cli(["explain", "momentum", "--quick", "--out", str(tmp_path / "e")])
    assert code == 2 and "No space left" in err.splitlines()[-1], err
    monkeypatch.setattr(explain, "_save", lambda out, results: None)   # nothing written
    code, out, err = run_cli(["explain", "momentum", "--quick", "--out", str(tmp_path / "e")])
    assert code == 2 and "results.json" not in out + err, (out, err)

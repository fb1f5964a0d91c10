"""A run folder is trusted only as it recorded itself (dnnlab.train.state.check_run).

Each case is one of issue 26's: a config.toml edited after the run (prune fine-tuned and reported
on other data), a start record deleted or its data fingerprint set to null (a resume trained on
swapped data), another run's checkpoint or model copied in (a folder whose config says seed 42
held the seed-7 model), another dataset saved under the expected file name. Every reading command
refuses each in one line naming what differs, and changes nothing; --accept-legacy reads a folder
from before run records, saying nothing is checked.
"""

import json
import shutil

import numpy as np
import pytest

from cli_helpers import run_cli
from dnnlab.train import checkpoint as ckpt
from dnnlab.train.state import RUN_ID, START, check_run

CONFIG = """
name = "trust"
[data]
name = "file"
path = "{path}"
valid_size = 60
[model]
depth = 1
width = 8
[train]
epochs = 2
batch_size = 64
progress = false
device = "cpu"
seed = {seed}
"""
READERS = {"report": ["report", "{run}"], "doctor": ["doctor", "{run}"],
           "prune": ["prune", "{run}", "--sparsity", "0.5", "--epochs", "0", "--quiet"],
           "resume": ["train", "--resume", "{run}", "--epochs", "3"], "export": ["export", "{run}"]}


def _data(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.normal(size=(240, 5)).astype(np.float32),
             y_train=rng.integers(0, 3, 240), x_test=rng.normal(size=(60, 5)).astype(np.float32),
             y_test=rng.integers(0, 3, 60))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    _data(root / "d.npz", 0)
    out = {}
    for seed in (42, 7):
        cfg = root / f"c{seed}.toml"
        cfg.write_text(CONFIG.format(path=root / "d.npz", seed=seed))
        code, _, err = run_cli(["train", str(cfg), "--out", str(root / f"run{seed}")])
        assert code == 0, err
        out[seed] = root / f"run{seed}"
    return root, out


def _refused_everywhere(run, *needles, skip=()):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for name, argv in READERS.items():
        if name in skip:
            continue
        code, out, err = run_cli([a.format(run=run) for a in argv])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (name, err)
        for needle in needles:
            assert needle in lines[0], (name, needle, lines[0])
        after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        assert after == before, name                       # a refusal changes nothing


def _copy(runs, tmp_path, seed=42):
    run = tmp_path / "run"
    shutil.copytree(runs[1][seed], run)
    return run


def test_a_finished_run_passes_and_every_model_file_carries_its_id(runs):
    run = runs[1][42]
    record = check_run(run)
    files = [run / "model.safetensors", run / "checkpoints" / "last.safetensors",
             run / "checkpoints" / "best.safetensors"]
    assert all(ckpt.read_meta(f)[RUN_ID] == record.run_id for f in files)
    assert record.run_id != check_run(runs[1][7]).run_id
    assert set(record.data) == {"train", "valid", "test"}


@pytest.mark.parametrize("edit", ["valid_size = 60|valid_size = 50", "depth = 1|depth = 2",
                                  "seed = 42|seed = 7"])
def test_an_edited_config_toml_is_refused_by_every_reader(runs, tmp_path, edit):
    run = _copy(runs, tmp_path)
    old, new = edit.split("|")
    text = (run / "config.toml").read_text()
    assert old in text
    (run / "config.toml").write_text(text.replace(old, new))
    _refused_everywhere(run, "config.toml", old.split(" =")[0])


def test_a_deleted_start_record_is_refused_unless_legacy_is_accepted(runs, tmp_path):
    run = _copy(runs, tmp_path)
    (run / START).unlink()
    _refused_everywhere(run, str(START), "--accept-legacy")
    code, _, err = run_cli(["report", str(run), "--accept-legacy", "--out", str(tmp_path / "r")])
    assert code == 0, err


@pytest.mark.parametrize("field,value", [("data", None), ("run_id", 5), ("data", {"train": 1})])
def test_a_start_record_not_whole_is_refused(runs, tmp_path, field, value):
    run = _copy(runs, tmp_path)
    record = json.loads((run / START).read_text())
    record[field] = value
    (run / START).write_text(json.dumps(record))
    _refused_everywhere(run, "start.json is damaged")


@pytest.mark.parametrize("name", ["model.safetensors", "checkpoints/last.safetensors",
                                  "checkpoints/best.safetensors"])
def test_another_runs_model_file_copied_in_is_refused(runs, tmp_path, name):
    run = _copy(runs, tmp_path)
    shutil.copy(runs[1][7] / name, run / name)
    _refused_everywhere(run, name, "another run")


def test_another_dataset_under_the_expected_file_name_is_refused(runs, tmp_path):
    run = _copy(runs, tmp_path)
    data = runs[0] / "d.npz"
    saved = data.read_bytes()
    try:
        _data(data, 1)                               # same name, same shape, other rows
        _refused_everywhere(run, "fingerprint", skip=("report", "doctor"))  # they read no data
    finally:
        data.write_bytes(saved)


@pytest.mark.parametrize("name", ["summary.json", "checkpoints/start.json", "metrics.csv"])
def test_a_fifo_in_place_of_a_run_file_is_refused_not_read(runs, tmp_path, name):
    """A read of a FIFO blocks for ever: `train --resume` hung on a summary.json made a FIFO."""
    import os
    run = _copy(runs, tmp_path)
    (run / name).unlink()
    os.mkfifo(run / name)
    _refused_everywhere(run, name)                 # report: "no metrics.csv", the others say why

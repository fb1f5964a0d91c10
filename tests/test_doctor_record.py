"""The layer recorder: what layers.csv holds, that recording leaves training unchanged, resume,
the doctor command on a run directory, and bad input."""

import torch

from dnnlab.cli import main
from dnnlab.config import replace
from dnnlab.doctor.probe import probe_run
from dnnlab.doctor.record import (
    COLUMNS,
    LayerRecorder,
    callbacks_for,
    probe_batch,
    read_layers,
    steps_per_epoch,
)
from dnnlab.nn.mlp import build_mlp
from dnnlab.runs import fit as recorded_fit
from dnnlab.train import fit


def test_records_every_layer_every_epoch_with_the_update_ratio(tiny, tiny_cfg, tmp_path):
    x, y = probe_batch(tiny.train.tensors())
    assert len(y) == 256
    spe = steps_per_epoch(len(tiny.train), tiny_cfg.train.batch_size)
    rec = LayerRecorder(tmp_path, x, y, steps_per_epoch=spe)
    model = build_mlp(tiny_cfg.model, tiny.n_features, tiny.n_classes, seed=tiny_cfg.train.seed)
    fit(tiny_cfg, tiny, model=model, callbacks=[rec])        # the net at init, then each epoch
    rows = read_layers(tmp_path / "layers.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert sorted({r["epoch"] for r in rows}) == [0, 1, 2, 3]
    assert len(rows) == 4 * 3                      # 2 hidden layers + the head, 4 records
    assert all(r["step"] == r["epoch"] * spe for r in rows)
    first = [r for r in rows if r["layer"] == 1]
    assert first[0]["update_ratio"] != first[0]["update_ratio"]     # NaN at epoch 0: no change yet
    assert all(0 < r["update_ratio"] < 1 for r in first[1:])
    assert [r["output"] for r in rows[:3]] == [False, False, True]


def test_update_ratio_is_the_relative_change_per_step(tiny, tiny_cfg, tmp_path):
    x, y = probe_batch(tiny.train.tensors())
    rec = LayerRecorder(tmp_path, x, y, steps_per_epoch=10)
    model = build_mlp(tiny_cfg.model, tiny.n_features, tiny.n_classes)
    rec.record(0, model)
    w0 = model.hidden[0].linear.weight.detach().double().clone()
    with torch.no_grad():
        model.hidden[0].linear.weight.mul_(1.5)
    row = [r for r in rec.record(2, model) if r["layer"] == 1][0]
    expected = float((0.5 * w0).norm() / w0.norm()) / 20
    assert abs(row["update_ratio"] - expected) < 1e-9


def test_recording_does_not_change_training(tiny, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, **{"model.dropout": 0.3})     # dropout draws from the global RNG
    plain = fit(cfg, tiny, evaluate_test=False)
    recorded = probe_run(cfg, tmp_path / "run", data=tiny)
    for a, b in zip(plain.model.state_dict().values(), recorded.model.state_dict().values()):
        assert torch.equal(a, b)
    assert plain.history["loss"] == recorded.history["loss"]


def test_a_resumed_recorder_keeps_earlier_epochs(tiny, tiny_cfg, tmp_path):
    x, y = probe_batch(tiny.train.tensors())
    model = build_mlp(tiny_cfg.model, tiny.n_features, tiny.n_classes)
    first = LayerRecorder(tmp_path, x, y, steps_per_epoch=5)
    for e in (0, 1, 2):
        first.record(e, model)
    again = LayerRecorder(tmp_path, x, y, steps_per_epoch=5)   # a resume from epoch 1's state
    again.record(2, model)
    assert [r["epoch"] for r in read_layers(tmp_path / "layers.csv")][::3] == [0, 1, 2]


def test_callbacks_for_follows_the_config(tiny, tiny_cfg, tmp_path):
    train = tiny.train.tensors()
    assert callbacks_for(tiny_cfg, train, None) == []
    assert callbacks_for(replace(tiny_cfg, **{"train.record_every": 0}), train, tmp_path) == []
    (rec,) = callbacks_for(replace(tiny_cfg, **{"train.record_every": 2}), train, tmp_path)
    assert rec.every == 2 and rec.steps_per_epoch == 16


def test_every_run_with_a_directory_records_by_default(tiny, tiny_cfg, tmp_path):
    recorded_fit(tiny_cfg, tiny, tmp_path / "run")          # the API's fit: engine + recorder
    rows = read_layers(tmp_path / "run" / "layers.csv")
    assert sorted({r["epoch"] for r in rows}) == [0, 1, 2, 3]      # init, then every epoch
    fit(tiny_cfg, tiny, tmp_path / "engine")                # the bare engine records nothing
    assert not (tmp_path / "engine" / "layers.csv").exists()
    recorded_fit(replace(tiny_cfg, **{"train.record_every": 0}), tiny, tmp_path / "off")
    assert not (tmp_path / "off" / "layers.csv").exists()


def test_doctor_cli_on_a_run_dir_and_on_bad_input(tiny, tiny_cfg, tmp_path, capsys):
    probe_run(tiny_cfg, tmp_path / "run", data=tiny)
    assert main(["doctor", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "no findings" in out and (tmp_path / "run" / "doctor.html").is_file()
    html = (tmp_path / "run" / "doctor.html").read_text()
    assert "data:image/png;base64," in html and "No findings" in html
    assert (tmp_path / "run" / "findings.json").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["doctor", str(tmp_path / "empty")]) == 2
    assert "config.toml" in capsys.readouterr().err
    (tmp_path / "run" / "layers.csv").unlink()
    assert main(["doctor", str(tmp_path / "run")]) == 2
    assert "layer recording" in capsys.readouterr().err
    assert main(["doctor", str(tmp_path / "nothing.txt")]) == 2

"""ONNX export: onnxruntime gives dnnlab's logits for every activation, BN and dropout variant,
within float32 rounding of the logits' magnitude (1e-5 at these tests' small logits)."""

import sys

import numpy as np
import pytest
import torch

from dnnlab import export
from dnnlab.cli import main
from dnnlab.config import ACTIVATIONS, ModelConfig, RunConfig, load_config, replace, to_toml
from dnnlab.data import load_from_config, synthetic
from dnnlab.errors import DnnlabError
from dnnlab.export import CHECK_ROWS, EPS32, OPSETS, TOLERANCE_EPS, export_model, export_run, onnx_logits
from dnnlab.io import write_text
from dnnlab.nn.mlp import build_mlp
from dnnlab.train.checkpoint import load_model, save_model
from dnnlab.train.state import RUN_ID, write_start

pytest.importorskip("onnx", reason="the export extra is not installed: pip install -e '.[export]'")
pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")

ATOL = 1e-5
DATA = synthetic(n_train=256, n_valid=64, n_test=200, n_features=12, n_classes=4, seed=3)


@torch.no_grad()
def _trained_looking(cfg: ModelConfig, seed: int = 0):
    """A tiny MLP whose BN statistics, BN affine and PReLU slopes are not their initial values,
    so an export that ignored any of them would give different numbers."""
    model = build_mlp(cfg, DATA.n_features, DATA.n_classes, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
        if isinstance(m, torch.nn.PReLU):
            m.weight.copy_(0.25 * torch.rand(m.weight.shape, generator=g))
    model.train()
    x = torch.as_tensor(DATA.train.x)
    for i in range(0, 256, 64):                 # moves the BN running mean / var
        model(x[i:i + 64] * 1.5 + 0.5)
    return model.eval()


def _check(model, tmp_path):
    """Export verified on the validation rows; the graph must then give dnnlab's logits on the
    test rows, which the export never saw, and with any batch size."""
    path, diff, tol, rows = export_model(model, tmp_path / "m.onnx", DATA.valid.x)
    assert rows == len(DATA.valid.x) and diff <= tol
    x = DATA.test.x
    ours = model.eval()(torch.as_tensor(x)).detach().numpy()
    theirs = onnx_logits(path, x)
    assert theirs.shape == (len(x), DATA.n_classes)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=ATOL)
    # a free batch size: one row, and an odd number of rows
    np.testing.assert_allclose(onnx_logits(path, x[:1]), ours[:1], rtol=0, atol=ATOL)
    np.testing.assert_allclose(onnx_logits(path, x[:37]), ours[:37], rtol=0, atol=ATOL)
    return ours


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_exports_exactly(activation, tmp_path):
    cfg = ModelConfig(depth=2, width=16, activation=activation, init="he_normal")
    _check(_trained_looking(cfg), tmp_path)


@pytest.mark.parametrize("batch_norm", ["none", "before", "after"])
@pytest.mark.parametrize("dropout_kind", ["dropout", "alpha"])
def test_batch_norm_and_dropout_export_in_inference_mode(batch_norm, dropout_kind, tmp_path):
    cfg = ModelConfig(depth=3, width=16, activation="selu" if dropout_kind == "alpha" else "elu",
                      batch_norm=batch_norm, dropout=0.3, dropout_kind=dropout_kind,
                      input_dropout=0.1, input_batch_norm=batch_norm != "none")
    model = _trained_looking(cfg, seed=1)
    ours = _check(model, tmp_path)
    # dropout is really there (train mode changes the output), and the export left the model in eval
    model.train()
    assert not np.allclose(model(torch.as_tensor(DATA.test.x)).detach().numpy(), ours, atol=1e-3)


def test_dropout_on_the_last_layer_only_and_max_norm(tmp_path):
    cfg = ModelConfig(hidden=[20, 12, 8], activation="leaky_relu", activation_param=0.2,
                      dropout=0.5, dropout_layers="last", max_norm=1.0, batch_norm="after")
    _check(_trained_looking(cfg, seed=2), tmp_path)


def test_export_keeps_the_model_mode(tmp_path):
    model = _trained_looking(ModelConfig(depth=1, width=8, dropout=0.2), seed=4).train()
    export_model(model, tmp_path / "m.onnx", DATA.valid.x)
    assert model.training and all(m.training for m in model.modules())


def _run_dir(tmp_path, model_cfg: ModelConfig, seed: int = 0):
    """A run directory as `dnnlab train` leaves it for export: config.toml naming the data (the
    built-in synthetic set), its record (run id, data fingerprint) and model.safetensors carrying
    the run id; returns it with that data."""
    cfg = replace(RunConfig(), **{"data.name": "synthetic", "data.valid_size": 200})
    data = load_from_config(cfg.data, progress=False)
    run = tmp_path / "run"
    write_text(run / "config.toml", to_toml(cfg))
    run_id = write_start(run, cfg, data.fingerprint())
    model = build_mlp(model_cfg, data.n_features, data.n_classes, seed=seed)
    save_model(model, run / "model.safetensors", {RUN_ID: run_id})
    return run, data


def test_saved_model_round_trip_through_export_run(tmp_path):
    run, data = _run_dir(tmp_path, ModelConfig(depth=2, width=16, activation="rrelu",
                                               batch_norm="before", dropout=0.2, dropout_kind="alpha"))
    done = export_run(run)
    assert done.path == run / "model.onnx"
    assert done.rows == min(CHECK_ROWS, len(data.test))       # checked on the run's own test rows
    again = load_model(run / "model.safetensors").eval()
    x = data.test.x
    np.testing.assert_allclose(onnx_logits(done.path, x),
                               again(torch.as_tensor(x)).detach().numpy(), rtol=0, atol=ATOL)


def test_the_tolerance_is_float32_rounding_of_the_logits_magnitude():
    assert export.tolerance(np.array([[32.0, -3.0], [1.0, 0.5]])) == pytest.approx(TOLERANCE_EPS * EPS32 * 32)
    assert export.tolerance(np.array([[-40.0, 2.0]])) == pytest.approx(TOLERANCE_EPS * EPS32 * 40)
    # small logits: activations are still of order 1, so the floor is one logit unit
    assert export.tolerance(np.array([[0.01, -0.02]])) == pytest.approx(TOLERANCE_EPS * EPS32)


def test_large_logits_export_and_a_real_mismatch_is_refused(tmp_path, monkeypatch):
    """The README's model reaches logits near 30, where float32 rounding alone is ~1e-5 (the old
    absolute 1e-5 refused it); a mismatch far above rounding is still refused, nothing written."""
    model = _trained_looking(ModelConfig(depth=5, width=100, activation="elu"), seed=6)
    x = DATA.valid.x
    with torch.no_grad():                            # the largest |logit| becomes 30
        scale = 30.0 / float(model(torch.as_tensor(x)).abs().max())
        model.head.weight.mul_(scale)
        model.head.bias.mul_(scale)
    big = float(np.abs(model(torch.as_tensor(x)).detach().numpy()).max())
    assert big == pytest.approx(30.0, rel=1e-3)
    rounding = 4 * EPS32 * big                       # a few epsilons of the logits: accepted
    real = onnx_logits
    monkeypatch.setattr(export, "onnx_logits", lambda m, rows: real(m, rows) + rounding)
    done = export_model(model, tmp_path / "ok.onnx", x)
    assert done.path.is_file() and 1e-5 < done.diff <= done.tolerance
    mismatch = 1e-3 * big                            # a 0.1 % error of the logits: refused
    monkeypatch.setattr(export, "onnx_logits", lambda m, rows: real(m, rows) + mismatch)
    with pytest.raises(DnnlabError, match=r"differ from dnnlab's by up to .* on 64 rows \(tolerance"):
        export_model(model, tmp_path / "bad.onnx", x)
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize("opset", [OPSETS.start, OPSETS.stop - 1])
def test_the_first_and_last_opsets_export(opset, tmp_path):
    model = _trained_looking(ModelConfig(depth=2, width=16, batch_norm="after"), seed=7)
    path = export_model(model, tmp_path / "m.onnx", DATA.valid.x, opset=opset).path
    np.testing.assert_allclose(onnx_logits(path, DATA.test.x),
                               model(torch.as_tensor(DATA.test.x)).detach().numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("opset", [OPSETS.start - 1, OPSETS.stop, 99])
def test_an_unsupported_opset_is_one_line(opset, tmp_path, capsys):
    run, _ = _run_dir(tmp_path, ModelConfig(depth=1, width=8))
    assert main(["export", str(run), "--opset", str(opset)]) == 2
    err = capsys.readouterr().err
    assert err == (f"dnnlab: error: --opset {opset} is not supported; choose an ONNX opset from "
                   f"{OPSETS.start} to {OPSETS.stop - 1} (default 17)\n")
    assert not (run / "model.onnx").exists()


def test_a_run_without_config_is_one_line(tmp_path, capsys):
    save_model(build_mlp(ModelConfig(depth=1, width=4), 3, 2), tmp_path / "model.safetensors")
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.toml is missing" in err
    assert err.count("\n") == 1


def test_cli_exports_a_real_training_run(tmp_path, capsys):
    cfg_path = tmp_path / "syn.toml"
    cfg_path.write_text('name = "syn"\n[data]\nname = "synthetic"\nlimit = 600\nvalid_size = 200\n'
                        '[model]\ndepth = 2\nwidth = 16\nbatch_norm = "before"\ndropout = 0.2\n'
                        '[train]\nepochs = 2\nprogress = false\n')
    run = tmp_path / "run"
    assert main(["train", str(cfg_path), "--out", str(run), "--threads", "1"]) == 0
    out = tmp_path / "exported" / "syn.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"to {out}" in printed
    assert f"on {CHECK_ROWS} test rows onnxruntime matches dnnlab within" in printed
    cfg = load_config(run / "config.toml")
    x = load_from_config(cfg.data, progress=False).test.x
    model = load_model(run / "model.safetensors").eval()
    np.testing.assert_allclose(onnx_logits(out, x), model(torch.as_tensor(x)).detach().numpy(),
                               rtol=0, atol=ATOL)


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "config.toml is missing" in err and err.count("\n") == 1
    with pytest.raises(DnnlabError, match="--format 'tflite' is not supported"):
        export_run(tmp_path / "empty", "tflite")


def test_missing_optional_dependency_says_how_to_install(tmp_path, monkeypatch):
    run, _ = _run_dir(tmp_path, ModelConfig(depth=1, width=4))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # makes `import onnxruntime` fail
    with pytest.raises(DnnlabError, match=r"needs the 'onnxruntime' package.*"
                                          r"pip install -e '\.\[export\]' in the dnnlab checkout"):
        export_run(run)
    assert not (run / "model.onnx").exists()

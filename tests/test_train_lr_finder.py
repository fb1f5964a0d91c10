import math

import numpy as np
import pytest
import torch

from dnnlab.config import ModelConfig, OptimConfig
from dnnlab.errors import DnnlabError
from dnnlab.nn import build_mlp
from dnnlab.train.lr_finder import find_lr


def _data(n=512, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def _model(**kw):
    return build_mlp(ModelConfig(depth=2, width=16, **kw), 10, 2, seed=0)


def test_restores_weights_buffers_mode_rng_and_callers_optimizer():
    model = _model(batch_norm="before", dropout=0.2).eval()
    x, y = _data()
    caller_opt = torch.optim.Adam(model.parameters())
    model.train()
    torch.nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
    caller_opt.step()
    model.eval()
    model.hidden[0].drop.train()                                # a mixed mode, as MC Dropout sets
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()}
                  for k, s in caller_opt.state_dict()["state"].items()}
    params_before = [id(p) for p in model.parameters()]
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    find_lr(model, x, y, OptimConfig(name="nadam"), steps=40)
    assert torch.equal(torch.rand(3), expected_draw)
    assert not model.training and not model.hidden[1].drop.training
    assert model.hidden[0].drop.training
    assert [id(p) for p in model.parameters()] == params_before
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k                     # BN running stats too
    after = caller_opt.state_dict()["state"]
    for k, s in opt_before.items():
        for n, t in s.items():
            assert torch.equal(after[k][n], t) if torch.is_tensor(t) else after[k][n] == t


def test_sweep_smoothing_and_suggestion():
    x, y = _data()
    r = find_lr(_model(), x, y, OptimConfig(name="sgd"), steps=100, start_lr=1e-5, end_lr=1e3)
    assert r.lrs[0] == pytest.approx(1e-5)
    ratios = np.diff(np.log(r.lrs))
    assert np.allclose(ratios, math.log(1e8) / 99)              # exponential sweep
    avg = 0.0
    for i, (raw, sm) in enumerate(zip(r.raw_losses, r.losses)):
        if not math.isfinite(raw):
            break
        avg = r.smoothing * avg + (1 - r.smoothing) * raw
        assert sm == pytest.approx(avg / (1 - r.smoothing ** (i + 1)), rel=1e-9)
    best = int(np.nanargmin(r.losses))
    assert r.min_lr == r.lrs[best]
    assert r.suggestion == pytest.approx(r.lrs[best] / 10)
    assert 1e-5 <= r.suggestion <= 1e3
    assert r.diverged and len(r.lrs) < 100                      # lr 1000 blows up SGD


def test_stops_at_diverge_factor_times_best():
    x, y = _data()
    r = find_lr(_model(), x, y, OptimConfig(name="sgd"), steps=150, end_lr=1e4, diverge_factor=2.0)
    last = r.losses[-1]
    best_before = np.nanmin(r.losses[:-1])
    assert (not math.isfinite(last)) or last > 2.0 * best_before
    assert all(v <= 2.0 * np.nanmin(r.losses[:i + 1]) for i, v in enumerate(r.losses[:-1]))


def test_nan_losses_are_ignored_when_suggesting():
    x, y = _data()
    # no early stop on the factor: the sweep runs until the loss is no longer finite
    r = find_lr(_model(), x, y, OptimConfig(name="sgd"), steps=100, end_lr=1e12,
                diverge_factor=1e30)
    assert not math.isfinite(r.raw_losses[-1]) and math.isnan(r.losses[-1])
    assert math.isfinite(r.suggestion) and r.suggestion < r.lrs[-1]


def test_full_sweep_without_divergence():
    x, y = _data()
    r = find_lr(_model(), x, y, OptimConfig(name="adam"), steps=30, start_lr=1e-6, end_lr=1e-3)
    assert len(r.lrs) == 30 and not r.diverged
    assert r.lrs[-1] == pytest.approx(1e-3)
    assert 1e-6 <= r.suggestion <= 1e-3


def test_plot_writes_a_png(tmp_path):
    x, y = _data()
    r = find_lr(_model(), x, y, OptimConfig(name="sgd"), steps=30)
    fig = r.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert type(fig).__name__ == "Figure" and fig.axes[0].get_xscale() == "log"


def test_a_module_the_stack_cannot_take_is_swept_in_place_and_restored():
    x, y = _data()
    model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = find_lr(model, x, y, OptimConfig(name="adam"), steps=30, start_lr=1e-5, end_lr=1e-1)
    assert len(r.lrs) == 30 and math.isfinite(r.suggestion)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    torch.nn.functional.cross_entropy(model(x), y).backward()      # still an ordinary module
    assert model[0].weight.grad.shape == (8, 10)


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(DnnlabError, match="start_lr"):
        find_lr(_model(), x, y, OptimConfig(), start_lr=1.0, end_lr=0.1)
    with pytest.raises(DnnlabError, match="same number"):
        find_lr(_model(), x, y[:10], OptimConfig())
    frozen = _model()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(DnnlabError, match="frozen"):
        find_lr(frozen, x, y, OptimConfig())


def test_the_smoothed_curve_follows_the_batch_loss_without_a_decade_of_lag():
    """Issue 21: with fastai's fixed 0.98 a 200-step sweep over eight decades drew its minimum a
    decade after the batch loss's. The factor now follows the sweep's steps per decade."""
    x, y = _data(n=4096)
    r = find_lr(_model(), x, y, OptimConfig(name="sgd"), steps=200, start_lr=1e-5, end_lr=1e3)
    assert r.smoothing == pytest.approx(1 - 4 / (199 / 8))
    raw = np.array(r.raw_losses[:len(r.losses)], dtype=float)
    window = np.convolve(np.nan_to_num(raw, nan=np.inf), np.ones(9) / 9, mode="same")  # centred
    raw_best = r.lrs[int(np.argmin(window[4:-4])) + 4]
    assert abs(math.log10(r.min_lr) - math.log10(raw_best)) <= 0.5


def test_the_progress_bar_shows_the_smoothed_loss_not_the_exploded_batch(capsys):
    x, y = _data()
    find_lr(_model(), x, y, OptimConfig(name="sgd"), steps=100, start_lr=1e-5, end_lr=1e3,
            progress=True)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if "\n" in err.strip() else err.split("\r")[-1]
    assert "smoothed loss" in err and "val_loss" not in last


def test_lr_find_has_no_epochs_flag(tmp_path, capsys):
    from dnnlab.cli import main
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\n')
    try:
        code = main(["lr-find", str(cfg), "--epochs", "3"])
    except SystemExit as e:
        code = e.code
    assert code == 2 and "unrecognized arguments: --epochs" in capsys.readouterr().err

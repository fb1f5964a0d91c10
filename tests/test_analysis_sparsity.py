import copy
import json

import pytest
import torch

from dnnlab.analysis.sparsity import (
    PolynomialSchedule,
    PruningCallback,
    apply_masks_,
    finetune_masked,
    gradual_prune_fit,
    kernel_parameters,
    lamp_scores,
    layer_sparsity,
    magnitude_prune_,
    near_zero_fraction,
    prune_run,
    sparsity,
)
from dnnlab.config import ModelConfig, replace
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.train import fit
from dnnlab.train.checkpoint import load_model


def _net(**kw):
    return build_mlp(ModelConfig(depth=2, width=16, **kw), 12, 3, seed=0)


def _kernel_count(model):
    return sum(m.weight.numel() for m, _ in kernel_parameters(model))


def test_sparsity_counts_exact_zeros_in_kernels_only():
    model = _net(batch_norm="after")
    assert sparsity(model) == 0.0
    with torch.no_grad():
        model.hidden[0].linear.weight[:2] = 0       # 2 rows of 12
        model.hidden[0].linear.bias.zero_()         # biases do not count
        model.hidden[0].bn.weight.zero_()           # nor BN
    total = 12 * 16 + 16 * 16 + 16 * 3
    assert sparsity(model) == pytest.approx(24 / total)
    assert layer_sparsity(model) == {"hidden.0.linear": pytest.approx(2 / 16), "hidden.1.linear": 0.0,
                                     "head": 0.0}
    assert near_zero_fraction(model, 0.0) == pytest.approx(24 / total)
    assert near_zero_fraction(model, 1e9) == 1.0


def test_magnitude_prune_is_global_and_leaves_no_masks_or_hooks():
    model = _net()
    params_before = [p for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weights = torch.cat([m.weight.detach().abs().flatten() for m, _ in kernel_parameters(model)])
    masks = magnitude_prune_(model, 0.7, score="magnitude")
    n = _kernel_count(model)
    assert sparsity(model) == pytest.approx(round(0.7 * n) / n)
    # global: one threshold for every kernel
    kept = torch.cat([m.weight.detach().abs().flatten() for m, _ in kernel_parameters(model)])
    threshold = weights.sort().values[round(0.7 * n) - 1]
    assert bool((kept[kept != 0] >= threshold).all())
    assert [float(m.sum()) for m in masks] == [float((m.weight != 0).sum())
                                               for m, _ in kernel_parameters(model)]
    # no reparametrization left behind
    names = set(model.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in names)
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules())
    after = list(model.parameters())
    assert len(after) == len(params_before) and all(a is b for a, b in zip(after, params_before))
    assert opt.param_groups[0]["params"][0] is model.hidden[0].linear.weight
    # already-zero weights count towards the target
    magnitude_prune_(model, 0.5)
    assert sparsity(model) == pytest.approx(round(0.7 * n) / n)
    with pytest.raises(DnnlabError, match="score"):
        magnitude_prune_(model, 0.8, score="random")
    with pytest.raises(DnnlabError, match="sparsity"):
        magnitude_prune_(model, 1.0)


def test_lamp_scores_and_no_layer_emptied():
    w = torch.tensor([[3.0, -1.0], [2.0, 0.0]])
    # squares 9, 1, 4, 0; sorted 0 1 4 9; suffix sums 14 14 13 9
    torch.testing.assert_close(lamp_scores(w), torch.tensor([[1.0, 1 / 14], [4 / 13, 0.0]]))
    model = _net()
    with torch.no_grad():
        model.hidden[0].linear.weight.mul_(0.01)     # a layer of tiny weights
    raw = copy.deepcopy(model)
    magnitude_prune_(raw, 0.6, score="magnitude")
    assert layer_sparsity(raw)["hidden.0.linear"] == 1.0          # raw |w| empties it
    before = [m.weight.detach().clone() for m, _ in kernel_parameters(model)]
    magnitude_prune_(model, 0.6)
    per_layer = layer_sparsity(model)
    assert max(per_layer.values()) < 1.0 and sparsity(model) == pytest.approx(0.6, abs=2e-3)
    # within each layer the smallest |w| went first
    for (m, _), w0 in zip(kernel_parameters(model), before):
        gone, kept = w0[m.weight == 0].abs(), w0[m.weight != 0].abs()
        assert float(gone.max()) <= float(kept.min())


def test_polynomial_schedule_matches_tfmot():
    s = PolynomialSchedule(final_sparsity=0.9, begin_step=10, end_step=110, frequency=25,
                           initial_sparsity=0.1)
    assert s.sparsity(0) == pytest.approx(0.1) and s.sparsity(10) == pytest.approx(0.1)
    # s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))**3
    assert s.sparsity(35) == pytest.approx(0.9 + (0.1 - 0.9) * 0.75 ** 3)
    assert s.sparsity(60) == pytest.approx(0.9 - 0.8 * 0.125)
    assert s.sparsity(110) == pytest.approx(0.9) and s.sparsity(500) == pytest.approx(0.9)
    assert [t for t in range(200) if s.should_prune(t)] == [10, 35, 60, 85, 110]
    with pytest.raises(DnnlabError):
        PolynomialSchedule(0.9, 10, 10)
    with pytest.raises(DnnlabError):
        PolynomialSchedule(1.5, 0, 10)


def test_pruning_callback_keeps_zeros_through_adam_steps():
    torch.manual_seed(0)
    model = _net()
    masks = magnitude_prune_(model, 0.8)
    cb = PruningCallback(model, masks=masks)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Adam's moments nudge pruned weights between steps; the next forward zeroes them again
    model.eval()
    model(x)
    assert sparsity(model) >= 0.8 - 1e-3
    cb.remove()
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules())
    for (m, _), mask in zip(kernel_parameters(model), masks):
        assert bool((m.weight[mask == 0] == 0).all())
    with pytest.raises(DnnlabError):
        apply_masks_(model, masks[:1])


def test_gradual_prune_fit_reaches_target(tiny, tiny_cfg):
    cfg = replace(tiny_cfg, **{"train.epochs": 4, "optim.name": "adam"})
    res, cb = gradual_prune_fit(cfg, tiny, 0.75)
    assert res.status == "completed" and res.epochs_run == 4
    assert sparsity(res.model) == pytest.approx(0.75, abs=2e-3)
    steps = [t for t, _ in cb.updates]
    s = cb.schedule   # 64 steps in all, pruning until 70% of them, about 20 updates
    assert steps == list(range(0, s.end_step + 1, s.frequency)) and 20 <= len(steps) <= 23
    assert s.end_step <= 0.7 * 64
    reached = [s for _, s in cb.updates]
    assert reached == sorted(reached) and reached[-1] == pytest.approx(0.75, abs=2e-3)
    assert cb.epoch_sparsity[-1] == pytest.approx(0.75, abs=2e-3)
    assert res.history["loss"][-1] < 0.7 * res.history["loss"][0]   # it still learns
    assert all(len(m._forward_pre_hooks) == 0 for m in res.model.modules())


def test_finetune_masked_keeps_the_mask(tiny, tiny_cfg):
    cfg = replace(tiny_cfg, **{"optim.name": "adam", "train.epochs": 1})
    model = fit(cfg, tiny).model
    masks = magnitude_prune_(model, 0.6)
    before = sparsity(model)
    res = finetune_masked(cfg, tiny, model, masks, epochs=2)
    assert res.epochs_run == 2 and sparsity(model) == before
    for (m, _), mask in zip(kernel_parameters(model), masks):
        assert bool((m.weight[mask == 0] == 0).all())


def test_prune_run_writes_model_and_report(tiny, tiny_cfg, tmp_path, monkeypatch):
    import dnnlab.data as data_mod
    monkeypatch.setattr(data_mod, "load_from_config", lambda cfg, **kw: tiny)
    run = tmp_path / "run"
    cfg = replace(tiny_cfg, **{"optim.name": "adam", "train.epochs": 3})
    fit(cfg, tiny, run)
    rep = prune_run(run, 0.8, finetune_epochs=2, progress=False)
    out = run / "pruned-0.8"
    assert json.loads((out / "report.json").read_text())["target_sparsity"] == 0.8
    assert rep["before"]["sparsity"] == 0.0
    assert rep["pruned"]["sparsity"] == pytest.approx(0.8, abs=2e-3)
    assert rep["finetuned"]["sparsity"] == rep["pruned"]["sparsity"]
    assert len(rep["finetune_history"]["val_loss"]) == 2
    for key in ("before", "pruned", "finetuned"):
        assert 0 <= rep[key]["test_accuracy"] <= 1 and 0 <= rep[key]["valid_accuracy"] <= 1
    model = load_model(out / "model.safetensors")
    assert sparsity(model) == rep["finetuned"]["sparsity"]
    with pytest.raises(DnnlabError, match="no config.toml"):
        prune_run(tmp_path, 0.5)
    with pytest.raises(DnnlabError, match="sparsity"):
        prune_run(run, 1.2)

"""Transfer learning: frozen layers stay frozen, reused layers are copies, cached = live training."""

from __future__ import annotations

import pytest
import torch

from dnnlab.analysis.transfer import (
    cache_features,
    fit_head,
    freeze,
    head_model,
    is_pinned,
    reuse_layers,
    trainable_parameters,
    unfreeze,
)
from dnnlab.config import RunConfig, replace
from dnnlab.errors import DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.train import fit
from dnnlab.train.checkpoint import load_model, save_model


def small_cfg(**extra) -> RunConfig:
    return replace(RunConfig(), **{
        "model.depth": 3, "model.width": 16, "model.batch_norm": "before", "model.dropout": 0.3,
        "optim.name": "adam", "optim.lr": 0.01, "train.epochs": 4, "train.batch_size": 32,
        "train.patience": 3, "train.progress": False, "train.device": "cpu",
        "train.checkpoint_every": 0, **extra})


@pytest.fixture(scope="module")
def trained():
    """A trained 3 x 16 network with BN and dropout (its BN statistics are not the defaults)."""
    from dnnlab.data import synthetic
    data = synthetic(n_train=512, n_valid=128, n_test=128, n_features=12, n_classes=3, seed=0)
    return fit(small_cfg(), data, evaluate_test=False).model


@pytest.fixture
def pretrained(trained):
    """A fresh copy per test: tests freeze and train it."""
    import copy
    return copy.deepcopy(trained)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_frozen_bn_and_dropout_stay_in_inference_mode_after_train(pretrained):
    block = pretrained.hidden[0]
    freeze(block)
    pretrained.train()                                # a parent's train() must not wake them
    assert not block.bn.training and not block.drop.training
    assert pretrained.hidden[1].bn.training            # the rest follows the parent
    assert all(not p.requires_grad for p in block.parameters())
    before = state(block)
    x = torch.randn(64, 12)                            # the tiny data's 12 features
    out1, out2 = block(x), block(x)
    assert torch.equal(out1, out2)                     # no dropout noise, no batch statistics
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())  # running stats kept
    pretrained.eval()
    pretrained.train()
    assert not block.bn.training


def test_unfreeze_keeps_bn_in_inference_mode_unless_asked(pretrained):
    block = freeze(pretrained.hidden[0])
    unfreeze(block)
    pretrained.train()
    assert all(p.requires_grad for p in block.parameters())
    assert block.drop.training and not is_pinned(block.drop)
    assert not block.bn.training and is_pinned(block.bn)
    unfreeze(block, batch_norm=True)
    pretrained.train()
    assert block.bn.training and not is_pinned(block.bn)


def test_reused_layers_are_copies_and_training_leaves_the_pretrained_model(tmp_path, tiny, pretrained):
    save_model(pretrained, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")          # from disk, as the study does
    assert all(torch.equal(a, b) for a, b in zip(state(loaded).values(), state(pretrained).values()))
    before = state(loaded)
    new = reuse_layers(loaded, 2, 3, seed=5)
    assert len(new.hidden) == 2 and new.head.out_features == 3
    for k in ("hidden.0.linear.weight", "hidden.1.bn.running_mean"):
        assert torch.equal(new.state_dict()[k], before[k])
        assert new.state_dict()[k].data_ptr() != loaded.state_dict()[k].data_ptr()
    assert trainable_parameters(new) == 16 * 3 + 3                # only the head trains
    unfreeze(new)
    res = fit(small_cfg(), tiny, model=new, evaluate_test=False)
    assert not torch.equal(res.model.hidden[0].linear.weight, before["hidden.0.linear.weight"])
    after = state(loaded)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the pretrained one is untouched


def test_training_a_frozen_stack_changes_only_the_head(tiny, pretrained):
    new = reuse_layers(pretrained, 3, 3, seed=1)
    start = state(new)
    res = fit(small_cfg(), tiny, model=new, evaluate_test=False)
    end = state(res.model)
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed == {"head.weight", "head.bias"}                # BN statistics included


def test_reuse_layers_refuses_bad_depths(pretrained):
    with pytest.raises(DnnlabError, match="choose 1..3"):
        reuse_layers(pretrained, 4, 3)
    with pytest.raises(DnnlabError, match="choose 1..3"):
        reuse_layers(pretrained, 0, 3)


def test_cache_features_are_the_frozen_layers_outputs(tiny, pretrained):
    x = torch.as_tensor(tiny.train.x)
    new = reuse_layers(pretrained, 2, 3)
    new.train()
    cached = cache_features(new, 2, x, batch_size=100)            # batched, eval mode
    assert new.training                                            # the mode is given back
    pretrained.eval()
    with torch.no_grad():
        assert torch.allclose(cached, pretrained.features(x, 2), atol=1e-6)


def _tensors(ds, name):
    split = getattr(ds, name)
    return torch.as_tensor(split.x), torch.as_tensor(split.y)


@pytest.mark.parametrize("extra", [
    {},
    {"optim.name": "nadam", "model.l2": 1e-3, "optim.schedule.name": "exponential",
     "optim.schedule.decay_steps": 2, "optim.clip_norm": 0.5},
])
def test_training_on_cached_features_gives_the_same_model(tiny, pretrained, extra):
    cfg = small_cfg(**{"train.epochs": 6, **extra})
    pre = reuse_layers(pretrained, 3, 3, seed=2)                   # BN and dropout frozen inside
    pre_cfg = dataclasses_replace(pre, extra)
    live = fit(cfg, tiny, model=pre_cfg)
    twin = dataclasses_replace(reuse_layers(pretrained, 3, 3, seed=2), extra)
    feats = {n: (cache_features(twin, 3, _tensors(tiny, n)[0]), _tensors(tiny, n)[1])
             for n in ("train", "valid", "test")}
    cached = fit_head(cfg, head_model(twin), feats["train"], feats["valid"], feats["test"])
    assert cached.epochs_run == live.epochs_run and cached.best_epoch == live.best_epoch
    assert torch.allclose(cached.model.head.weight, live.model.head.weight, atol=1e-5)
    assert torch.allclose(cached.model.head.bias, live.model.head.bias, atol=1e-5)
    assert cached.history["val_loss"] == pytest.approx(live.history["val_loss"], abs=1e-5)
    assert cached.history["accuracy"] == pytest.approx(live.history["accuracy"], abs=1e-6)
    assert cached.history["lr"] == pytest.approx(live.history["lr"])
    assert cached.test["test_accuracy"] == pytest.approx(live.test["test_accuracy"], abs=1e-9)


def dataclasses_replace(model, extra):
    """Give the model the config's L2 (the penalty is part of the model in dnnlab)."""
    import dataclasses
    if "model.l2" in extra:
        model.config = dataclasses.replace(model.config, l2=extra["model.l2"])
    return model


def test_head_model_is_a_copy_and_fit_head_needs_one(pretrained):
    head = head_model(pretrained)
    assert len(head.hidden) == 0 and head.in_features == 16
    with torch.no_grad():
        head.head.weight.add_(1.0)
    assert not torch.equal(head.head.weight, pretrained.head.weight)
    x, y = torch.randn(8, 16), torch.zeros(8, dtype=torch.long)
    with pytest.raises(DnnlabError, match="without hidden layers"):
        fit_head(small_cfg(), pretrained, (x, y))


def test_fit_head_keeps_the_last_good_weights_when_the_loss_explodes():
    head = head_model(build_mlp(small_cfg().model, 4, 2, seed=0))
    x = torch.randn(64, 16) * 1e30
    y = torch.randint(0, 2, (64,))
    start = head.head.weight.detach().clone()
    res = fit_head(small_cfg(**{"optim.lr": 10.0, "optim.name": "sgd"}), head, (x, y), (x, y))
    assert res.status == "diverged" and "lower optim.lr" in res.message
    assert torch.isfinite(res.model.head.weight).all()
    assert torch.equal(res.model.head.weight, start)

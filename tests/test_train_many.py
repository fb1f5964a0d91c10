"""train_many: model k of a K-model run is the model trained alone, and stops on its own."""

import math

import pytest
import torch
import torch.nn.functional as F

from dnnlab.config import PER_MODEL_KEYS, replace
from dnnlab.data.batching import batch_slices, epoch_permutation
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.nn.mlp import build_mlp
from dnnlab.train import Callback, Variant, fit, train_many


def _reference(cfg, ds):
    """A plain loop: build_mlp + torch.optim + autograd, the epoch_permutation batches."""
    model = build_mlp(cfg.model, ds.n_features, ds.n_classes, seed=cfg.train.seed)
    opt = _torch_optimizer(list(model.parameters()), cfg.optim)
    x, y = torch.as_tensor(ds.train.x), torch.as_tensor(ds.train.y)
    for epoch in range(cfg.train.epochs):
        perm = epoch_permutation(len(y), cfg.train.seed, epoch)
        for s, e in batch_slices(len(y), cfg.train.batch_size):
            idx = perm[s:e]
            loss = F.cross_entropy(model(x[idx]), y[idx]) + model.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def _torch_optimizer(params, c):
    """torch.optim for the rules torch computes as dnnlab does; RMSprop in Keras' form by hand."""
    if c.name == "rmsprop":
        return _KerasRMSprop(params, c)
    common = dict(lr=c.lr, weight_decay=c.weight_decay)
    return {"sgd": lambda: torch.optim.SGD(params, momentum=c.momentum, **common),
            "adam": lambda: torch.optim.Adam(params, betas=(c.beta1, c.beta2), eps=c.eps, **common),
            "nadam": lambda: torch.optim.NAdam(params, betas=(c.beta1, c.beta2), eps=c.eps,
                                               momentum_decay=1.0, **common)}[c.name]()


class _KerasRMSprop(torch.optim.Optimizer):
    def __init__(self, params, c):
        super().__init__(params, {"lr": c.lr})
        self.c = c

    @torch.no_grad()
    def step(self):
        c = self.c
        for p in self.param_groups[0]["params"]:
            st = self.state[p]
            v = st.setdefault("v", torch.zeros_like(p)).mul_(c.rho).add_(p.grad ** 2 * (1 - c.rho))
            inc = c.lr * p.grad / torch.sqrt(v + c.eps)
            if c.momentum:
                inc = st.setdefault("m", torch.zeros_like(p)).mul_(c.momentum).add_(inc)
            p.sub_(inc)


def _assert_same_weights(a, b, atol=1e-4):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=1e-4, msg=k)


def _solo(cfg, variant):
    return replace(cfg, **variant.overrides, **{"train.seed": variant.seed})


@pytest.mark.parametrize("extra", [
    {"optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9},
    {"optim.name": "adam", "optim.lr": 3e-3},
    {"optim.name": "nadam", "optim.lr": 3e-3},
    {"optim.name": "nadam", "optim.lr": 3e-3, "model.batch_norm": "before"},
    {"optim.name": "rmsprop", "optim.lr": 1e-3, "model.l2": 1e-3, "model.batch_norm": "after"},
], ids=["sgd-momentum", "adam", "nadam", "nadam-bn", "rmsprop-l2-bn-after"])
def test_each_model_equals_a_plain_single_model_loop(tiny, tiny_cfg, extra):
    cfg = replace(tiny_cfg, **{**extra, "train.restore_best": False})   # the loop keeps the last
    variants = [Variant(42), Variant(7, {"optim.lr": cfg.optim.lr / 3}),
                Variant(42, {"optim.lr": cfg.optim.lr * 2, "optim.beta1": 0.8,
                             "optim.momentum": 0.5})]
    results = train_many(cfg, tiny, variants, progress=False)
    for v, r in zip(variants, results):
        assert r.status == "completed" and r.epochs_run == cfg.train.epochs
        _assert_same_weights(r.model, _reference(_solo(cfg, v), tiny))


@pytest.mark.parametrize("extra", [
    {"optim.name": "nadam", "optim.lr": 3e-3, "optim.schedule.name": "1cycle",
     "train.monitor": "val_accuracy", "train.patience": 2},
    {"optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9, "optim.schedule.name": "1cycle",
     "optim.clip_norm": 0.5},
    {"optim.name": "adamw", "optim.lr": 3e-3, "optim.weight_decay": 0.01,
     "optim.schedule.name": "exponential", "optim.schedule.decay_steps": 2, "model.max_norm": 1.0},
    {"optim.name": "adam", "optim.schedule.name": "power", "optim.schedule.unit": "step",
     "optim.schedule.decay_steps": 20, "model.l1": 1e-4, "optim.clip_value": 0.1},
], ids=["nadam-1cycle-early-stop", "sgd-1cycle-clip-norm", "adamw-exp-maxnorm", "adam-power-l1"])
def test_results_equal_the_single_model_trainer(tiny, tiny_cfg, extra):
    cfg = replace(tiny_cfg, **{"train.epochs": 4, **extra})
    variants = [Variant(1), Variant(2, {"optim.lr": cfg.optim.lr / 2})]
    results = train_many(cfg, tiny, variants, progress=False)
    for v, r in zip(variants, results):
        f = fit(_solo(cfg, v), tiny, evaluate_test=False)
        assert (r.status, r.best_epoch) == (f.status, f.best_epoch)
        for key in ("epoch", "lr"):
            assert r.history[key] == pytest.approx(f.history[key], rel=1e-9)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert r.history[key] == pytest.approx(f.history[key], abs=1e-4)
        _assert_same_weights(r.model, f.model)


def test_per_model_learning_rate_near_zero_stays_at_init(tiny, tiny_cfg):
    variants = [Variant(3, {"optim.lr": 1e-12}), Variant(3, {"optim.lr": 3e-3})]
    frozen, moving = train_many(tiny_cfg, tiny, variants, progress=False)
    init = build_mlp(tiny_cfg.model, tiny.n_features, tiny.n_classes, seed=3).state_dict()
    for k, v in frozen.model.state_dict().items():
        assert torch.allclose(v, init[k], rtol=0, atol=1e-8), k
    assert not torch.equal(moving.model.state_dict()["head.weight"], init["head.weight"])
    assert frozen.history["lr"] == [1e-12] * 3 and moving.history["lr"] == [3e-3] * 3


def test_early_stopping_per_model_and_compaction(tiny, tiny_cfg):
    """Three models stop (min_delta 10: never improve) after 2 epochs, one trains on undisturbed."""
    cfg = replace(tiny_cfg, **{"train.epochs": 6, "train.patience": 2, "optim.lr": 3e-3})
    learner = Variant(5, {"train.patience": None})
    frozen = [Variant(s, {"train.min_delta": 10.0}) for s in (1, 2, 4)]
    variants = frozen[:2] + [learner, frozen[2]]
    results = train_many(cfg, tiny, variants, progress=False)
    for r in results[:2] + results[3:]:
        assert r.status == "stopped_early" and r.epochs_run == 3 and r.best_epoch == 1
        assert "no improvement of val_loss for 2 epochs" in r.message
    r = results[2]
    assert r.status == "completed" and r.epochs_run == 6
    f = fit(_solo(cfg, learner), tiny, evaluate_test=False)
    assert r.history["val_loss"] == pytest.approx(f.history["val_loss"], abs=1e-5)
    _assert_same_weights(r.model, f.model)


def test_diverging_model_is_marked_and_others_finish(tiny, tiny_cfg):
    cfg = replace(tiny_cfg, **{"optim.name": "sgd", "optim.lr": 0.05, "model.activation": "linear",
                               "train.restore_best": False})
    variants = [Variant(0), Variant(0, {"optim.lr": 10.0}), Variant(1)]
    ok, bad, ok2 = train_many(cfg, tiny, variants, progress=False)
    assert bad.status == "diverged" and "at epoch 1, step" in bad.message
    assert bad.epochs_run == 0                        # the diverged epoch is not recorded
    init = build_mlp(cfg.model, tiny.n_features, tiny.n_classes, seed=0).state_dict()
    for k, v in bad.model.state_dict().items():          # the last good weights: here the initial
        assert torch.equal(v, init[k]), k
    for r in (ok, ok2):
        assert r.status == "completed" and r.epochs_run == 3
        assert all(math.isfinite(v) for v in r.history["loss"])


def test_callback_sees_metrics_and_can_stop_one_model(tiny, tiny_cfg, capsys):
    seen = []

    class Watch(Callback):
        def on_epoch_end(self, run, epoch, logs):
            seen.append((epoch, sorted(logs)))
            return [1] if epoch == 1 else None

    cfg = replace(tiny_cfg, **{"train.progress": True})
    results = train_many(cfg, tiny, [Variant(0), Variant(1)], callbacks=[Watch()])
    assert "1 of 2 models training" in capsys.readouterr().err
    assert seen == [(1, [0, 1]), (2, [0]), (3, [0])]
    assert results[1].status == "stopped_early" and results[1].epochs_run == 1
    assert results[0].status == "completed"


def test_variants_of_another_shape_are_refused(tiny, tiny_cfg):
    with pytest.raises(ConfigError, match="model.width.*group"):
        train_many(tiny_cfg, tiny, [Variant(0), Variant(1, {"model.width": 8})], progress=False)
    with pytest.raises(ConfigError, match="Variant.seed"):
        train_many(tiny_cfg, tiny, [Variant(0, {"train.seed": 3})], progress=False)
    with pytest.raises(ConfigError):
        train_many(tiny_cfg, tiny, [Variant(0, {"optim.lrr": 3})], progress=False)
    assert {"optim.lr", "model.dropout", "optim.momentum", "optim.clip_norm"} <= PER_MODEL_KEYS


def test_invalid_variant_fails_before_training(tiny, tiny_cfg):
    cfg = replace(tiny_cfg, **{"optim.schedule.name": "1cycle"})
    with pytest.raises(ConfigError, match="pct_start"):
        train_many(cfg, tiny, [Variant(0), Variant(1, {"optim.schedule.pct_start": 0.6})],
                   progress=False)
    sgd = replace(tiny_cfg, **{"optim.name": "sgd", "optim.nesterov": True, "optim.momentum": 0.9})
    with pytest.raises(ConfigError, match="nesterov"):
        train_many(sgd, tiny, [Variant(0), Variant(1, {"optim.momentum": 0.0})], progress=False)


def test_a_run_long_enough_to_fuse_the_update_trains_the_same_models(tiny, tiny_cfg, monkeypatch):
    """The compiled (torch.compile) update against the eager one, through the whole driver."""
    import dnnlab.train.driver as driver
    variants = [Variant(0), Variant(1, {"optim.lr": 3e-3})]
    eager = train_many(tiny_cfg, tiny, variants, progress=False)
    monkeypatch.setattr(driver, "FUSE_MIN_WORK", 0)           # every run counts as long
    fused = train_many(tiny_cfg, tiny, variants, progress=False)
    for a, b in zip(eager, fused):
        assert b.history["loss"] == pytest.approx(a.history["loss"], rel=1e-5)
        _assert_same_weights(a.model, b.model, atol=1e-5)


def test_models_that_diverge_are_exported_before_the_stack_is_compacted(tiny, tiny_cfg):
    """Three of four models diverge in epoch 1; the stack then shrinks to the one left. Each
    diverged model still comes back with its last good weights (here: its initial ones)."""
    cfg = replace(tiny_cfg, **{"optim.name": "sgd", "optim.lr": 0.05, "model.activation": "linear",
                               "train.restore_best": False})
    variants = [Variant(s, {"optim.lr": 10.0}) for s in (1, 2, 3)] + [Variant(4)]
    *bad, ok = train_many(cfg, tiny, variants, progress=False)
    assert ok.status == "completed" and ok.epochs_run == 3
    for v, r in zip(variants, bad):
        assert r.status == "diverged" and r.variant is v
        init = build_mlp(cfg.model, tiny.n_features, tiny.n_classes, seed=v.seed).state_dict()
        for k, t in r.model.state_dict().items():
            assert torch.equal(t, init[k]), k


def test_each_model_of_a_k_model_run_records_into_its_own_directory(tiny, tiny_cfg, tmp_path):
    """What the doctor and TensorBoard read, for sweep and study variants too."""
    from dnnlab.doctor.record import read_layers
    from dnnlab.runs import train_many as recorded_train_many
    cfg = replace(tiny_cfg, **{"train.tensorboard": True})
    dirs = [tmp_path / "a", None, tmp_path / "c"]
    recorded_train_many(cfg, tiny, [Variant(0), Variant(1), Variant(2, {"optim.lr": 3e-3})],
                        progress=False, run_dirs=dirs)
    for d in (dirs[0], dirs[2]):
        rows = read_layers(d / "layers.csv")
        assert sorted({r["epoch"] for r in rows}) == [0, 1, 2, 3]       # init, then each epoch
        assert any((d / "tensorboard").iterdir())
    with pytest.raises(DnnlabError, match="one per variant"):
        recorded_train_many(cfg, tiny, [Variant(0)], progress=False, run_dirs=dirs)

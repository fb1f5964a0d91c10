"""The driver on CUDA: the same code as on the CPU (only the device differs), so its results
match the CPU's to float precision. Runs wherever a GPU is visible; skipped, saying so, elsewhere."""

import pytest
import torch

from dnnlab.config import replace
from dnnlab.train import Variant, fit, train_many
from dnnlab.train.lr_finder import find_lr

pytestmark = pytest.mark.cuda


def _close(a, b, atol=1e-4):
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v.cpu(), b.state_dict()[k].cpu(), atol=atol, rtol=1e-3, msg=k)


@pytest.mark.parametrize("extra", [{}, {"model.batch_norm": "before", "optim.name": "sgd",
                                        "optim.momentum": 0.9, "optim.lr": 0.05}])
def test_fit_on_cuda_equals_fit_on_cpu(tiny, tiny_cfg, extra):
    cfg = replace(tiny_cfg, **extra)
    cpu = fit(cfg, tiny)
    gpu = fit(replace(cfg, **{"train.device": "cuda"}), tiny)
    assert next(gpu.model.parameters()).device.type == "cuda"
    assert gpu.history["loss"] == pytest.approx(cpu.history["loss"], rel=1e-3)
    _close(gpu.model, cpu.model)


def test_train_many_on_cuda_equals_cpu(tiny, tiny_cfg):
    variants = [Variant(0), Variant(1, {"optim.lr": 3e-3}), Variant(2, {"model.dropout": 0.0})]
    cpu = train_many(tiny_cfg, tiny, variants, device="cpu", progress=False)
    gpu = train_many(tiny_cfg, tiny, variants, device="cuda", progress=False)
    for a, b in zip(cpu, gpu):
        assert b.history["val_loss"] == pytest.approx(a.history["val_loss"], rel=1e-3)
        _close(b.model, a.model)


def test_fused_update_on_cuda_equals_eager(tiny, tiny_cfg, monkeypatch):
    import dnnlab.train.driver as driver
    eager = fit(replace(tiny_cfg, **{"train.device": "cuda"}), tiny)
    monkeypatch.setattr(driver, "FUSE_MIN_WORK", 0)
    fused = fit(replace(tiny_cfg, **{"train.device": "cuda"}), tiny)
    _close(fused.model, eager.model, atol=1e-5)


def test_lr_finder_on_cuda(tiny, tiny_cfg):
    from dnnlab.nn.mlp import build_mlp
    model = build_mlp(tiny_cfg.model, tiny.n_features, tiny.n_classes).cuda()
    x, y = (t.cuda() for t in tiny.train.tensors())
    r = find_lr(model, x, y, tiny_cfg.optim, steps=40)
    assert len(r.lrs) > 5 and r.suggestion > 0

"""The stack (train/stack.py): rows stay inside; outside, models are named by index, also after
finished models are dropped; callbacks get per-model losses."""

import torch

from dnnlab.config import replace
from dnnlab.nn.mlp import build_mlp
from dnnlab.train import Callback, Variant, train_many
from dnnlab.train.backend import make_backend
from dnnlab.train.stack import Stack


def _stack(tiny, tiny_cfg, k=4, **overrides):
    configs = [replace(tiny_cfg, **{"train.seed": s, **overrides}) for s in range(k)]
    models = [build_mlp(c.model, tiny.n_features, tiny.n_classes, seed=c.train.seed)
              for c in configs]
    return Stack(make_backend(models, torch.device("cpu")), configs), models


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_models_keep_their_index_through_compaction(tiny, tiny_cfg):
    stack, models = _stack(tiny, tiny_cfg, **{"model.max_norm": 2.0})
    assert stack.models == [0, 1, 2, 3] and _same(stack.model(3), models[3])
    x, y = (torch.as_tensor(a) for a in (tiny.train.x[:32], tiny.train.y[:32]))
    lrs = {i: [0.01 * (i + 1)] for i in stack.models}
    loss, _ = stack.step(x, y, stack.table(lrs, None)[0])
    stack.keep_best([1, 3])                             # model 1's and 3's weights now
    best3 = stack.model(3)
    assert not _same(best3, models[3])                  # it trained
    stack.step(x, y, stack.table(lrs, None)[0])
    stack.compact([1, 3])
    assert stack.models == [1, 3] and stack.k == 2 and stack.backend.k == 2
    assert stack.opt.state["exp_avg"].shape[0] == 2 and stack.constraints.max_norm.shape[0] == 2
    assert stack.seeds == [1, 3]
    assert _same(stack.model(3, best=True), best3)      # the best snapshot followed its model
    assert _same(stack.export(3, "best"), best3)
    assert not _same(stack.model(3), best3)             # live weights moved on after it
    per = stack.per_model(torch.tensor([10.0, 30.0]))
    assert {i: float(v) for i, v in per.items()} == {1: 10.0, 3: 30.0}
    stack.restore_good(3)                               # good = as built: model 3's start
    assert _same(stack.model(3), models[3])


class _Watch(Callback):
    """Stops models 0-2 after epoch 1 and keeps what on_steps_end gets."""

    def __init__(self):
        self.seen = []

    def on_steps_end(self, run, epoch, losses, lo, hi):
        self.seen.append((epoch, sorted(losses), {i: tuple(v.shape) for i, v in losses.items()},
                          hi - lo))

    def on_epoch_end(self, run, epoch, logs):
        return [0, 1, 2] if epoch == 1 else None


def test_callbacks_get_losses_by_model_after_compaction(tiny, tiny_cfg):
    watch = _Watch()
    results = train_many(tiny_cfg, tiny, [Variant(s) for s in range(4)], device="cpu",
                         progress=False, callbacks=[watch])
    assert [r.status for r in results] == ["stopped_early"] * 3 + ["completed"]
    steps = 512 // 32
    assert watch.seen[0] == (1, [0, 1, 2, 3], {i: (steps,) for i in range(4)}, steps)
    assert all(s == (e, [3], {3: (steps,)}, steps) for s, e in zip(watch.seen[1:], (2, 3)))
    assert results[3].epochs_run == 3 and results[0].epochs_run == 1

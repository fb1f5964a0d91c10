import json
import math

import pytest
import torch

from dnnlab.config import OptimConfig, ScheduleConfig
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.optim import make_optimizer, make_schedule


def _setup(steps_per_epoch=4, epochs=6, opt="sgd", lr=0.1, momentum=0.0, **sched):
    cfg = OptimConfig(name=opt, lr=lr, momentum=momentum, schedule=ScheduleConfig(**sched))
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    return optimizer, make_schedule(optimizer, cfg, steps_per_epoch, epochs)


def _run(schedule, steps_per_epoch, epochs, val_losses=None):
    """The lr used by every step, driving the hooks as the trainer does."""
    used = []
    for e in range(epochs):
        for _ in range(steps_per_epoch):
            used.append(schedule.lr())
            schedule.optimizer.step()
            schedule.on_batch_end()
        schedule.on_epoch_end({"val_loss": val_losses[e] if val_losses else 1.0})
    return used


def test_none_keeps_the_rate():
    _, s = _setup(name="none")
    assert _run(s, 4, 6) == [0.1] * 24


def test_power_by_epoch_and_by_step():
    _, s = _setup(name="power", decay_steps=2, power=1.5)
    expected = [0.1 / (1 + e / 2) ** 1.5 for e in range(6) for _ in range(4)]
    assert _run(s, 4, 6) == pytest.approx(expected, rel=1e-12)
    _, s = _setup(name="power", decay_steps=10, power=1.0, unit="step")
    assert _run(s, 4, 6) == pytest.approx([0.1 / (1 + t / 10) for t in range(24)], rel=1e-12)


def test_exponential_by_epoch_and_by_step():
    _, s = _setup(name="exponential", decay_steps=3)
    expected = [0.1 * 0.1 ** (e / 3) for e in range(6) for _ in range(4)]
    assert _run(s, 4, 6) == pytest.approx(expected, rel=1e-12)
    _, s = _setup(name="exponential", decay_steps=8, unit="step")
    assert _run(s, 4, 6) == pytest.approx([0.1 * 0.1 ** (t / 8) for t in range(24)], rel=1e-12)


def test_piecewise_as_the_books_piecewise_constant():
    _, s = _setup(name="piecewise", boundaries=[2, 5], values=[0.01, 0.005, 0.001])
    def book(epoch):
        return 0.01 if epoch < 2 else 0.005 if epoch < 5 else 0.001
    assert _run(s, 4, 6) == [book(e) for e in range(6) for _ in range(4)]


def test_performance_is_keras_reduce_on_plateau():
    _, s = _setup(name="performance", factor=0.5, patience=2)
    # improves, then 2 epochs without (reduce), 1 more bad, improves, 2 bad (reduce)
    losses = [1.0, 1.0, 1.00005, 0.99999, 0.5, 0.6, 0.7, 0.8]
    seen = []
    for v in losses:
        s.on_epoch_end({"val_loss": v})
        seen.append(s.lr())
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025])


def test_performance_needs_val_loss():
    _, s = _setup(name="performance")
    with pytest.raises(DnnlabError, match="valid_size"):
        s.on_epoch_end({"val_loss": math.nan})


def _one_cycle_by_hand(t, total, max_lr, pct, div, final_div):
    """The book's OneCycleScheduler shape in torch's step convention."""
    start, end = max_lr / div, max_lr / div / final_div
    up, down = pct * total - 1, 2 * pct * total - 2
    if t <= up:
        return start + (max_lr - start) * t / up
    if t <= down:
        return max_lr + (start - max_lr) * (t - up) / (down - up)
    return start + (end - start) * (t - down) / (total - 1 - down)


def test_one_cycle_lr_and_momentum():
    opt, s = _setup(steps_per_epoch=10, epochs=4, momentum=0.9, name="1cycle", max_lr=0.5,
                    pct_start=0.45, div_factor=10.0, final_div_factor=1000.0)
    used, momenta = [], []
    for e in range(4):
        for _ in range(10):
            used.append(s.lr())
            momenta.append(opt.param_groups[0]["momentum"])
            opt.step()
            s.on_batch_end()
        s.on_epoch_end({"val_loss": 1.0})
    expected = [_one_cycle_by_hand(t, 40, 0.5, 0.45, 10.0, 1000.0) for t in range(40)]
    assert used == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert max(used) == pytest.approx(0.5) and used[-1] == pytest.approx(0.5 / 10 / 1000)
    assert momenta[0] == pytest.approx(0.95) and momenta[17] == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95)
    for _ in range(5):                      # a step past the end keeps the final rate
        s.on_batch_end()
    assert s.lr() == pytest.approx(0.5 / 10 / 1000)


def test_one_cycle_defaults_to_optim_lr_and_leaves_adam_betas():
    opt, s = _setup(steps_per_epoch=10, epochs=2, opt="adam", lr=0.01, name="1cycle")
    assert s.lr() == pytest.approx(0.001)
    _run(s, 10, 2)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_one_cycle_pct_start_must_leave_room():
    with pytest.raises(ConfigError, match="0.5"):
        _setup(name="1cycle", pct_start=0.6)


@pytest.mark.parametrize("sched", [
    dict(name="power", decay_steps=3, unit="step"),
    dict(name="piecewise", boundaries=[1, 3], values=[0.3, 0.2, 0.1]),
    dict(name="performance", patience=1, factor=0.5),
    dict(name="1cycle", max_lr=1.0),
])
def test_state_round_trips_through_json_and_resumes_identically(sched):
    losses = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85]
    _, full = _setup(**sched)
    expected = _run(full, 4, 6, losses)
    opt1, first = _setup(**sched)
    used = []
    for e in range(3):
        for _ in range(4):
            used.append(first.lr())
            opt1.step()
            first.on_batch_end()
        first.on_epoch_end({"val_loss": losses[e]})
    state = json.loads(json.dumps(first.state_dict()))
    opt_state = opt1.state_dict()
    opt2, second = _setup(**sched)                    # a fresh process: new optimizer and schedule
    opt2.load_state_dict(opt_state)
    second.load_state_dict(state)
    for e in range(3, 6):
        for _ in range(4):
            used.append(second.lr())
            opt2.step()
            second.on_batch_end()
        second.on_epoch_end({"val_loss": losses[e]})
    assert used == pytest.approx(expected, rel=1e-12)


def test_state_from_another_schedule_is_refused():
    _, a = _setup(name="power")
    _, b = _setup(name="exponential")
    with pytest.raises(DnnlabError, match="config"):
        b.load_state_dict(a.state_dict())


def test_tensor_lr_is_updated_in_place():
    p = torch.nn.Parameter(torch.zeros(2))
    lr = torch.tensor(0.1)
    opt = torch.optim.SGD([p], lr=lr)
    cfg = OptimConfig(name="sgd", lr=0.1, schedule=ScheduleConfig(name="exponential", decay_steps=1))
    s = make_schedule(opt, cfg, 2, 3)
    s.on_epoch_end({})
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.01)


def test_multiplicative_schedules_keep_each_groups_ratio():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    cfg = OptimConfig(name="sgd", lr=0.1, schedule=ScheduleConfig(name="exponential", decay_steps=1))
    opt = make_optimizer([{"params": [a]}, {"params": [b], "lr": 0.01}], cfg)
    s = make_schedule(opt, cfg, 1, 2)
    s.on_epoch_end({})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.001])

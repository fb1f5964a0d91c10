"""The schedules in closed form: the book's formulas, torch's OneCycleLR, Keras' plateau."""

import json
import math

import numpy as np
import pytest
import torch

from dnnlab.config import OptimConfig, ScheduleConfig
from dnnlab.errors import ConfigError, DnnlabError
from dnnlab.optim.schedules import Plateau, check_schedule, rates


def _cfg(opt="sgd", lr=0.1, momentum=0.0, **sched):
    return OptimConfig(name=opt, lr=lr, momentum=momentum, schedule=ScheduleConfig(**sched))


def _run(cfg, steps_per_epoch, epochs, val_losses=None, plateau=None, start=0):
    """The lr used by every step, as the trainer computes it: the closed form for the epoch's
    steps times the plateau multiplier, which moves after each epoch."""
    check_schedule(cfg, steps_per_epoch, epochs)
    plateau = plateau or Plateau(cfg)
    used = []
    for e in range(start, epochs):
        steps = e * steps_per_epoch + np.arange(steps_per_epoch)
        used += list(rates(cfg, steps, e, steps_per_epoch, epochs)[0] * plateau.multiplier)
        plateau.update(val_losses[e] if val_losses else 1.0)
    return used


def test_none_keeps_the_rate():
    assert _run(_cfg(name="none"), 4, 6) == [0.1] * 24


def test_power_by_epoch_and_by_step():
    expected = [0.1 / (1 + e / 2) ** 1.5 for e in range(6) for _ in range(4)]
    assert _run(_cfg(name="power", decay_steps=2, power=1.5), 4, 6) == pytest.approx(expected,
                                                                                     rel=1e-12)
    got = _run(_cfg(name="power", decay_steps=10, power=1.0, unit="step"), 4, 6)
    assert got == pytest.approx([0.1 / (1 + t / 10) for t in range(24)], rel=1e-12)


def test_exponential_by_epoch_and_by_step():
    expected = [0.1 * 0.1 ** (e / 3) for e in range(6) for _ in range(4)]
    assert _run(_cfg(name="exponential", decay_steps=3), 4, 6) == pytest.approx(expected, rel=1e-12)
    got = _run(_cfg(name="exponential", decay_steps=8, unit="step"), 4, 6)
    assert got == pytest.approx([0.1 * 0.1 ** (t / 8) for t in range(24)], rel=1e-12)


def test_piecewise_as_the_books_piecewise_constant():
    def book(epoch):
        return 0.01 if epoch < 2 else 0.005 if epoch < 5 else 0.001
    got = _run(_cfg(name="piecewise", boundaries=[2, 5], values=[0.01, 0.005, 0.001]), 4, 6)
    assert got == [book(e) for e in range(6) for _ in range(4)]


def test_performance_is_keras_reduce_on_plateau():
    p = Plateau(_cfg(name="performance", factor=0.5, patience=2))
    # improves, then 2 epochs without (reduce), 1 more bad, improves, 2 bad (reduce)
    losses = [1.0, 1.0, 1.00005, 0.99999, 0.5, 0.6, 0.7, 0.8]
    seen = []
    for v in losses:
        p.update(v)
        seen.append(0.1 * p.multiplier)
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025])


def test_performance_needs_val_loss():
    with pytest.raises(DnnlabError, match="valid_size"):
        Plateau(_cfg(name="performance")).update(math.nan)


def test_other_schedules_ignore_the_plateau():
    p = Plateau(_cfg(name="none"))
    for v in (1.0, 2.0, 3.0, math.nan):
        p.update(v)
    assert p.multiplier == 1.0


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
    cfg = _cfg(momentum=0.9, name="1cycle", max_lr=0.5, pct_start=0.45, div_factor=10.0,
               final_div_factor=1000.0)
    used, momenta = rates(cfg, np.arange(40), 0, 10, 4)
    expected = [_one_cycle_by_hand(t, 40, 0.5, 0.45, 10.0, 1000.0) for t in range(40)]
    assert list(used) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert max(used) == pytest.approx(0.5) and used[-1] == pytest.approx(0.5 / 10 / 1000)
    assert momenta[0] == pytest.approx(0.95) and momenta[17] == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95)
    past, _ = rates(cfg, np.arange(40, 45), 4, 10, 4)   # past the end: the final rate
    assert list(past) == pytest.approx([0.5 / 10 / 1000] * 5)


def test_one_cycle_equals_torchs_one_cycle_lr():
    cfg = _cfg(momentum=0.9, name="1cycle", max_lr=0.3, pct_start=0.3, div_factor=20.0)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.3, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.3, total_steps=50, pct_start=0.3, anneal_strategy="linear",
        three_phase=True, div_factor=20.0, final_div_factor=1000.0, base_momentum=0.85,
        max_momentum=0.95)
    lrs, moms = [], []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        if ref.last_epoch < 49:
            ref.step()
    got, got_m = rates(cfg, np.arange(50), 0, 10, 5)
    assert list(got) == pytest.approx(lrs, rel=1e-12)
    assert list(got_m) == pytest.approx(moms, rel=1e-12)


def test_one_cycle_defaults_to_optim_lr_and_cycles_no_adam_momentum():
    lr, mom = rates(_cfg(opt="adam", lr=0.01, name="1cycle"), np.arange(20), 0, 10, 2)
    assert lr[0] == pytest.approx(0.001) and max(lr) == pytest.approx(0.01) and mom is None


def test_schedule_mistakes_are_refused():
    """Rules of the config alone are checked when it is built; the one that needs the data's
    size (steps in all) when training starts."""
    from dnnlab.config import RunConfig, replace

    def build(**s):
        return replace(RunConfig(), **{f"optim.schedule.{k}": v for k, v in s.items()})
    with pytest.raises(ConfigError, match="0.5"):
        build(name="1cycle", pct_start=0.6)
    with pytest.raises(ConfigError, match="3 steps"):
        check_schedule(_cfg(name="1cycle"), 1, 2)
    with pytest.raises(ConfigError, match="increasing"):
        build(name="piecewise", boundaries=[3, 1], values=[1, 2, 3])
    with pytest.raises(ConfigError, match="decay_steps"):
        build(name="power", decay_steps=0)


def test_plateau_state_round_trips_through_json_and_resumes_identically():
    losses = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85]
    cfg = _cfg(name="performance", patience=1, factor=0.5)
    expected = _run(cfg, 4, 6, losses)
    first = Plateau(cfg)
    used = _run(cfg, 4, 3, losses, plateau=first)
    second = Plateau(cfg)                             # a fresh process
    second.load(json.loads(json.dumps(first.state())))
    used += _run(cfg, 4, 6, losses, plateau=second, start=3)
    assert used == pytest.approx(expected, rel=1e-12)

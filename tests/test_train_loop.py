import csv
import json
import re

import pytest
import torch

from dnnlab.config import replace
from dnnlab.errors import DnnlabError
from dnnlab.train import Callback, fit
from dnnlab.train.checkpoint import load, load_model


def test_fit_learns_and_writes_run_dir(tiny, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, **{"train.epochs": 6, "train.checkpoint_every": 2})
    res = fit(cfg, tiny, tmp_path / "run")
    assert res.status == "completed"
    assert res.history["val_accuracy"][-1] > 0.6  # chance is 1/3
    assert res.history["loss"][-1] < res.history["loss"][0]
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert list(rows[0])[:7] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 6
    assert 0 <= summary["test_accuracy"] <= 1
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.safetensors", "epoch_0002.safetensors", "epoch_0004.safetensors",
                     "epoch_0006.safetensors", "last.safetensors", "start.json"]
    start = json.loads((run / "checkpoints" / "start.json").read_text())
    assert start["data"] == tiny.fingerprint()          # what the run trained on, per split
    assert set(start["data"]) == {"train", "valid", "test"}
    model = load_model(run / "model.safetensors")
    x = torch.as_tensor(tiny.test.x)
    torch.testing.assert_close(model.eval()(x), res.model.eval()(x))


def test_restore_best_at_last_epoch_copies_weights(tiny, tiny_cfg):
    cfg = replace(tiny_cfg, **{"train.epochs": 4, "optim.lr": 0.05, "optim.name": "sgd",
                               "train.monitor": "val_accuracy"})
    seen = {}

    class Snap(Callback):
        def on_epoch_end(self, run, epoch, logs):
            seen[epoch] = {k: v.clone() for k, v in run.model(0).state_dict().items()}

    res = fit(cfg, tiny, callbacks=[Snap()])
    best = seen[res.best_epoch]
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(v, best[k])
    accs = res.history["val_accuracy"]
    assert res.best == max(accs) and res.best_epoch == accs.index(max(accs)) + 1


def test_early_stopping_stops_after_patience(tiny, tiny_cfg):
    cfg = replace(tiny_cfg, **{"train.epochs": 50, "train.patience": 2, "train.min_delta": 10.0,
                               "optim.name": "sgd"})
    res = fit(cfg, tiny)
    assert res.status == "stopped_early"
    assert res.epochs_run == 3 and res.best_epoch == 1


def test_nan_loss_stops_with_last_good_weights(tiny, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, **{"optim.name": "sgd", "optim.lr": 10.0,
                               "model.activation": "linear"})   # a linear net explodes at lr 10
    res = fit(cfg, tiny, tmp_path / "run")
    assert res.status == "diverged"
    assert "epoch 1, step" in res.message and "optim.lr" in res.message
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("fast", [True, False], ids=["stacked", "module"])
def test_divergence_is_checked_before_anything_is_kept(tiny, tiny_cfg, tmp_path, fast):
    """One step per epoch: the only step of epoch 2 blows the weights up (its own loss is still
    finite). Neither the good weights, the best weights, a checkpoint nor the final model may
    take them: what is kept is the model before that step."""
    from dnnlab.train.checkpoint import load_model
    cfg = replace(tiny_cfg, **{"optim.name": "sgd", "optim.lr": 1e-3, "train.batch_size": 512,
                               "train.epochs": 4, "train.checkpoint_every": 1, "train.fast": fast,
                               "optim.schedule.name": "piecewise",
                               "optim.schedule.boundaries": [1], "optim.schedule.values": [1e-3, 10.0],
                               "model.activation": "linear", "model.depth": 8,
                               "train.restore_best": False})
    res = fit(cfg, tiny, tmp_path / "run")
    assert res.status == "diverged", res.message
    bad = int(re.search(r"at epoch (\d+)", res.message).group(1))
    assert bad >= 2 and res.epochs_run == bad - 1
    assert "schedule raises the rate to 10" in res.message      # the cause, not the lr
    # the kept weights are those after the last good epoch's single step: before the bad step
    ref = fit(replace(cfg, **{"train.epochs": bad - 1}), tiny).model.state_dict()
    for path in (tmp_path / "run" / "model.safetensors",
                 tmp_path / "run" / "checkpoints" / f"epoch_{bad - 1:04d}.safetensors"):
        kept = load_model(path).state_dict()
        for k, v in ref.items():
            assert torch.allclose(kept[k], v, atol=1e-6), (path.name, k)
    assert not (tmp_path / "run" / "checkpoints" / f"epoch_{bad:04d}.safetensors").exists()
    for k, v in res.model.state_dict().items():
        assert torch.allclose(v, ref[k], atol=1e-6), k


def test_frozen_parameters_are_not_trained(tiny, tiny_cfg):
    from dnnlab.nn.mlp import build_mlp
    model = build_mlp(tiny_cfg.model, tiny.n_features, tiny.n_classes, seed=1)
    for p in model.hidden.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.hidden.state_dict().items()}
    fit(tiny_cfg, tiny, model=model)
    for k, v in model.hidden.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_resume_continues_to_same_weights(tiny, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, **{"train.epochs": 4, "model.dropout": 0.2, "train.deterministic": True})
    full = fit(cfg, tiny, tmp_path / "full")
    part = fit(replace(cfg, **{"train.epochs": 2}), tiny, tmp_path / "part")
    assert part.epochs_run == 2
    resumed = fit(cfg, tiny, tmp_path / "part", resume=True)
    assert resumed.epochs_run == 4
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert resumed.history["loss"] == pytest.approx(full.history["loss"])


def test_checkpoint_refuses_pickle_without_running_it(tmp_path):
    import pickle
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "last.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    from dnnlab.errors import DnnlabError
    with pytest.raises(DnnlabError, match="not a safetensors checkpoint"):
        load(path)
    assert not marker.exists()


def test_resuming_a_finished_run_trains_nothing_more(tiny, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, **{"train.epochs": 50, "train.patience": 2, "train.min_delta": 10.0,
                               "optim.name": "sgd"})
    first = fit(cfg, tiny, tmp_path / "run")
    assert first.status == "stopped_early"
    again = fit(cfg, tiny, tmp_path / "run", resume=True)
    assert again.status == "stopped_early" and again.epochs_run == first.epochs_run
    assert again.history == first.history


def test_transfer_study_resume_reloads_finished_runs(tiny, tiny_cfg, tmp_path):
    from dnnlab.studies.transfer import train_seeds
    cfg = replace(tiny_cfg, **{"train.epochs": 2})
    a = train_seeds(cfg, tiny, [0, 1], tmp_path, lambda m: None)
    b = train_seeds(cfg, tiny, [0, 1], tmp_path, lambda m: None, resume=True)
    assert [r["history"] for r in a] == [r["history"] for r in b]
    assert [r["test_accuracy"] for r in a] == [r["test_accuracy"] for r in b]


def test_a_divergence_names_its_first_cause_before_the_learning_rate(tiny, tiny_cfg):
    """Issue 18: a checkpoint with scaled weights, a huge penalty or a schedule peak were all
    blamed on the learning rate."""
    from dnnlab.nn.mlp import build_mlp
    from dnnlab.train.driver import divergence_cause
    base = replace(tiny_cfg, **{"optim.name": "sgd", "optim.lr": 10.0,
                                "model.activation": "linear"})
    model = build_mlp(base.model, tiny.n_features, tiny.n_classes, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e4)                                  # a damaged / scaled checkpoint
    res = fit(base, tiny, model=model)
    assert res.status == "diverged" and "already huge before the first step" in res.message
    assert "optim.lr" not in res.message
    assert "model.l2 = 1 is so large" in divergence_cause(replace(base, **{"model.l2": 1.0}), 0.5)
    assert "schedule raises the rate to 8" in divergence_cause(
        replace(base, **{"optim.lr": 0.01, "optim.schedule.name": "piecewise",
                         "optim.schedule.boundaries": [1], "optim.schedule.values": [0.01, 8.0]}), 0.5)
    assert divergence_cause(base, 0.5).startswith("Try a lower optim.lr (now 10)")


def test_a_batch_larger_than_the_data_is_refused(tiny, tiny_cfg):
    with pytest.raises(DnnlabError, match="train.batch_size = 600 is larger than the 512"):
        fit(replace(tiny_cfg, **{"train.batch_size": 600}), tiny)


def test_a_resumed_performance_schedule_goes_on_reducing_the_rate(tiny, tiny_cfg, tmp_path):
    """The plateau schedule's state (best, wait, multiplier) resumes with each model's own
    factor and patience: a resumed run's rates equal an uninterrupted run's."""
    cfg = replace(tiny_cfg, **{"train.epochs": 8, "optim.lr": 1.0, "optim.name": "sgd",
                               "optim.schedule.name": "performance",
                               "optim.schedule.patience": 1, "optim.schedule.factor": 0.5})
    whole = fit(cfg, tiny, tmp_path / "whole")
    fit(replace(cfg, **{"train.epochs": 3}), tiny, tmp_path / "part")
    resumed = fit(cfg, tiny, tmp_path / "part", resume=True)
    assert len(set(whole.history["lr"])) > 2                # the rate was cut more than once
    assert resumed.history["lr"] == whole.history["lr"]
    assert resumed.history["val_loss"] == pytest.approx(whole.history["val_loss"], rel=1e-6)


def test_fit_tensors_refuses_non_finite_values_before_any_step(tiny, tiny_cfg):
    """Tensors that did not come from a Dataset (cached features, a user's own) are checked by
    fit_tensors itself; the message counts them."""
    from dnnlab.errors import DataError
    from dnnlab.nn.mlp import build_mlp
    from dnnlab.train.driver import fit_tensors
    x, y = tiny.train.tensors()
    x = x.clone()
    x[3, 2] = float("nan")
    x[5, 0] = float("inf")
    model = build_mlp(tiny_cfg.model, tiny.n_features, tiny.n_classes, seed=0)
    with pytest.raises(DataError, match="training data holds 2 non-finite values"):
        fit_tensors(tiny_cfg, model, (x, y))


def test_a_deterministic_run_keeps_its_thread_count_whatever_the_load(tiny, tiny_cfg,
                                                                       monkeypatch):
    """The thread policy changes torch's threads as the machine's load changes, and a matrix
    product's rounding changes with them; train.deterministic keeps the count the run started
    with, so a rerun gives the same bits."""
    import dnnlab.train.threads as threads
    flips = []

    def loaded_machine():                       # the load changes at every host sync
        torch.set_num_threads(1 if torch.get_num_threads() > 1 else 2)
        flips.append(torch.get_num_threads())
        return torch.get_num_threads()

    cfg = replace(tiny_cfg, **{"train.epochs": 2, "train.batch_size": 8})
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        steady = fit(replace(cfg, **{"train.deterministic": True}), tiny, evaluate_test=False)
        monkeypatch.setattr(threads, "adjust", loaded_machine)
        again = fit(replace(cfg, **{"train.deterministic": True}), tiny, evaluate_test=False)
        assert flips == [] and torch.get_num_threads() == 1        # the policy never ran
        fit(cfg, tiny, evaluate_test=False)                        # without: it adapts
        assert flips
    finally:
        torch.set_num_threads(before)
    assert again.history["loss"] == steady.history["loss"]
    for a, b in zip(again.model.parameters(), steady.model.parameters()):
        assert torch.equal(a, b)

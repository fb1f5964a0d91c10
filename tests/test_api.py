"""The Python API: ``import dnnlab`` exposes the workflow, typed and documented, and changes nothing."""

import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import dnnlab
from dnnlab.studies.explain import load_topic

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_import_changes_no_global_state():
    """In a fresh interpreter: backend unresolved, pyplot not loaded, torch and warnings as they were."""
    code = textwrap.dedent("""
        import logging, sys, warnings
        import matplotlib, torch
        def rc():   # every setting but the backend, which reading would resolve
            return {k: matplotlib.rcParams[k] for k in matplotlib.rcParams if k != "backend"}
        before = dict(backend=matplotlib.rcParams._get_backend_or_none(),
                      rc=rc(), threads=torch.get_num_threads(),
                      rng=torch.get_rng_state().clone(), dtype=torch.get_default_dtype(),
                      det=torch.are_deterministic_algorithms_enabled(),
                      filters=list(warnings.filters), handlers=list(logging.getLogger().handlers))
        import dnnlab
        assert dnnlab.__file__.startswith(sys.argv[1]), dnnlab.__file__
        after = dict(backend=matplotlib.rcParams._get_backend_or_none(),
                     rc=rc(), threads=torch.get_num_threads(),
                     rng=torch.get_rng_state().clone(), dtype=torch.get_default_dtype(),
                     det=torch.are_deterministic_algorithms_enabled(),
                     filters=list(warnings.filters), handlers=list(logging.getLogger().handlers))
        assert before["backend"] is None and after["backend"] is None, after["backend"]
        assert "matplotlib.pyplot" not in sys.modules
        assert torch.equal(before.pop("rng"), after.pop("rng"))
        changed = [k for k in before if before[k] != after[k]]
        assert not changed, changed
        print("unchanged")
    """)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = SRC
    out = subprocess.run([sys.executable, "-c", code, SRC], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "unchanged"


def test_every_public_name_exists_is_documented_and_typed():
    missing = [n for n in dnnlab.__all__ if not hasattr(dnnlab, n)]
    assert not missing
    for name in dnnlab.__all__:
        obj = getattr(dnnlab, name)
        if inspect.isfunction(obj):
            assert obj.__doc__ and len(obj.__doc__.strip()) > 20, f"{name} has no docstring"
            sig = inspect.signature(obj)
            untyped = [p for p, v in sig.parameters.items()
                       if v.annotation is inspect.Parameter.empty
                       and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
            assert not untyped, f"{name}: parameters without a type: {untyped}"
            assert sig.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
        elif inspect.isclass(obj):
            assert obj.__doc__, f"{name} has no docstring"


def _data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    y = rng.integers(0, 3, 600)
    x = (centres[y] + rng.normal(size=(600, 8))).astype(np.float32)
    return dnnlab.from_arrays(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:])


def _cfg(**kw):
    settings = {"model.depth": 2, "model.width": 16, "train.epochs": 3, "train.batch_size": 32,
                "train.progress": False, "train.device": "cpu", "train.patience": None, **kw}
    return dnnlab.replace(dnnlab.RunConfig(), **settings)


def test_fit_train_many_and_plots_from_the_top_level(tmp_path):
    data = _data()
    cfg = _cfg()
    res = dnnlab.fit(cfg, data)
    assert len(res.history["val_loss"]) == 3
    assert res.test["test_accuracy"] > 0.6          # three well-separated blobs
    many = dnnlab.train_many(cfg, data, [dnnlab.Variant(seed=1),
                                         dnnlab.Variant(seed=2, overrides={"optim.lr": 3e-3})],
                             device="cpu", progress=False)
    assert [m.variant.seed for m in many] == [1, 2]
    histories = {"fit": res.history, **{f"seed {m.variant.seed}": m.history for m in many}}
    fig = dnnlab.learning_curves(histories, path=tmp_path / "curves.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the best epoch of each run is starred on its validation curve, in every panel
    stars = [c for c in fig.axes[0].collections]
    assert len(stars) == 3
    best = min(range(3), key=lambda i: res.history["val_loss"][i])
    assert list(stars[0].get_offsets()[0]) == pytest.approx([best + 1, res.history["val_loss"][best]])


def test_lr_finder_layer_stats_and_save_load(tmp_path):
    data = _data()
    cfg = _cfg()
    model = dnnlab.build_mlp(cfg.model, data.n_features, data.n_classes, seed=0)
    x, y = torch.as_tensor(data.train.x), torch.as_tensor(data.train.y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = dnnlab.find_lr(model, x, y, cfg.optim, steps=40)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fig = found.plot()
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    stats = dnnlab.layer_stats(model, x[:128], y[:128])
    assert [s["layer"] for s in stats] == [1, 2, 3] and stats[-1]["output"]
    path = dnnlab.save_model(model, tmp_path / "m.safetensors")
    again = dnnlab.load_model(path)
    assert torch.equal(again.module(x[:5]), model.eval()(x[:5]))


def test_studies_and_topics_by_name_refuse_unknown_names(tmp_path):
    with pytest.raises(dnnlab.DnnlabError, match="unknown study 'cifar100'.*transfer, cifar10, "
                                                 "ablation"):
        dnnlab.run_study("cifar100", tmp_path)
    with pytest.raises(dnnlab.DnnlabError, match="needs config="):
        dnnlab.run_study("ablation", tmp_path)
    with pytest.raises(dnnlab.DnnlabError, match="unknown topic 'symetry'"):
        dnnlab.explain("symetry", tmp_path)
    assert "symmetry" in dnnlab.TOPICS and dnnlab.STUDIES == ("transfer", "cifar10", "ablation")


@pytest.mark.parametrize("topic", dnnlab.TOPICS)
def test_every_explain_topic_draws_its_figure_as_a_figure(topic):
    """Each topic's figure function returns a Figure (a notebook shows it); _plot only saves it."""
    module = load_topic(topic)
    sig = inspect.signature(module.figure)
    assert "path" not in sig.parameters and sig.return_annotation in (Figure, "Figure")
    assert module.figure.__doc__


def test_every_study_is_one_registered_study_with_one_run_signature(monkeypatch, tmp_path):
    """run_study and `dnnlab study` read one registry (studies/cli.py): each entry's package
    declares its Study (name, parts, entries), and run_study calls every one the same way."""
    from dnnlab.studies import cli as study_cli
    from dnnlab.studies.study import Study
    for name in dnnlab.STUDIES:
        study = study_cli.load(name)
        assert isinstance(study, Study) and study.name == name and study.help
        params = inspect.signature(study.run).parameters
        assert {"quick", "seeds", "data_dir", "device", "progress"} <= set(params), name
        assert (next(iter(params)) == "config") == study.takes_config, name
    seen = []
    transfer = study_cli.load("transfer")
    monkeypatch.setattr("dnnlab.studies.transfer.STUDY", dataclasses.replace(
        transfer, run=lambda *a, **kw: seen.append((a, kw)) or {"ok": 1}))
    assert dnnlab.run_study("transfer", tmp_path, quick=True, progress=False, resume=True) == {"ok": 1}
    assert seen == [((tmp_path,), {"quick": True, "seeds": 3, "data_dir": None, "device": "auto",
                                   "progress": False, "resume": True})]
    with pytest.raises(dnnlab.DnnlabError, match="takes no config="):
        dnnlab.run_study("transfer", tmp_path, config=dnnlab.RunConfig())

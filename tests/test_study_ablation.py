"""``dnnlab study ablation``: the exercise's ladder and a user variant on the user's own data file
(data.name = "file"), end to end on a small .npz; its report's numbers; bad [[variant]] tables
as one line, exit 2."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from dnnlab import cli
from dnnlab.analysis.stats import compare
from dnnlab.errors import ConfigError
from dnnlab.studies.ablation import command, run
from dnnlab.studies.ablation.plan import VARIANTS, variant_config
from dnnlab.studies.ablation.stages import Setup, data_for, stages
from dnnlab.studies.engine import Say


def _npz(path, n_train=320, n_test=120, features=12, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, 3))

    def draw(n):
        x = rng.normal(size=(n, features)).astype("float32")
        return x, np.argmax(x @ w + 0.3 * rng.normal(size=(n, 3)), axis=1).astype("int64")

    (xt, yt), (xs, ys) = draw(n_train), draw(n_test)
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return path


CONFIG = """
name = "mine"
[data]
name = "file"
path = "{path}"
valid_size = 80
[model]
depth = 3
width = 16
[train]
epochs = 4
patience = 2
batch_size = 32

[[variant]]
name = "wide"
"model.width" = 48
"""


@pytest.fixture
def config(tmp_path):
    path = _npz(tmp_path / "mine.npz")
    cfg = tmp_path / "ablation.toml"
    cfg.write_text(CONFIG.format(path=path))
    return cfg


def test_ladder_and_a_user_variant_on_a_data_file(config, tmp_path):
    out = tmp_path / "out"
    res = run(config, out, quick=True, seeds=2, device="cpu", progress=False, workers=1)
    saved = json.loads((out / "results.json").read_text())
    assert saved["train_images"] == 240 and saved["valid_images"] == 80    # the file's splits
    assert saved["warnings"] == ["the validation split has 80 rows: an accuracy measured on it is "
                                 "uncertain by up to ±0.11 (95%)"]          # data.caveats
    for name in (*VARIANTS, "wide"):
        r = saved[name]
        assert len(r["per_seed"]) == 2 and 0.0 <= r["val_accuracy_mean"] <= 1.0
        assert r["seconds_per_epoch"] > 0
        assert set(r["val_vs_baseline"]) == {"difference", "t", "p", "beyond_noise", "test"}
        assert "doctor" in r and (r["doctor"] is None or "title" in r["doctor"]), r["doctor"]
    assert saved["baseline"]["val_vs_baseline"]["difference"] == 0.0
    wide = json.loads((out / "stages" / "wide.json").read_text())["record"]
    assert wide["final"]["config"]["model"]["width"] == 48            # the user's override
    assert wide["final"]["config"]["model"]["depth"] == 3             # the rest is the base's
    assert wide["search"]["key"] == "optim.lr"                        # its rate was searched
    assert res["wide"]["lr"] == wide["lr"]
    html = (out / "report.html").read_text()
    assert "wide" in html and "vs baseline" in html and "doctor" in html
    assert "statistics of the 3 hidden layers" in html and "layer 20" not in html   # depth 3
    assert (out / "runs" / "mine-wide-seed0" / "config.toml").is_file()


def test_user_variants_are_stages_declared_once():
    names = [s.name for s in stages(("wide",))]
    assert names.count("wide") == 1 and names[-1] == "timing"
    timing = stages(("wide",))[-1]
    assert "wide" in timing.needs and timing.threads == 1


def test_base_config_is_the_baseline_and_rungs_override_it(config):
    base, user = command.read_config(config)
    assert user == (("wide", (("model.width", 48),)),)
    proto = command.plan.from_config(base)
    assert (proto.max_epochs, proto.patience, proto.batch_size) == (4, 2, 32)
    b = variant_config(base, "baseline", proto, lr=1e-3)
    assert (b.model.depth, b.model.width, b.data.name) == (3, 16, "file")
    s = variant_config(base, "selu", proto)
    assert (s.model.activation, s.model.init, s.data.standardize) == ("selu", "lecun_normal", True)


@pytest.mark.parametrize("variant, message", [
    ('[[variant]]\n"model.width" = 4', "name"),
    ('[[variant]]\nname = "selu"\n"model.width" = 4', "taken"),
    ('[[variant]]\nname = "x"', "changes nothing"),
    ('[[variant]]\nname = "x"\n"model.widht" = 4', "widht"),
    # before: accepted, and the study's own settings overwrote them (train refuses lr = 1e30)
    ('[[variant]]\nname = "x"\n"optim.lr" = 1e30',
     "[[variant]] 'x' sets optim.lr, which the study sets itself (the study searches each "
     "variant's learning rate"),
    ('[[variant]]\nname = "x"\n"train.device" = "cuda"', "sets train.device, which the study sets"),
    # before: accepted and ignored (every number bit-identical to the baseline's)
    ('[[variant]]\nname = "x"\n"data.path" = "other.npz"',
     "[[variant]] 'x' sets data.path, which would change the validation and test rows"),
    ('[[variant]]\nname = "x"\n"data.valid_size" = 10', "sets data.valid_size, which would change"),
    ('[[variant]]\nname = "x"\n"data.limit" = 0', "[[variant]] 'x': data.limit = 0 is out of range"),
    ('[[variant]]\nname = "x"\n"optim.momentum" = 5', "[[variant]] 'x': optim.momentum = 5"),
    ('[[variant]]\nname = "x"\n"tune.trials" = 3', "sets tune.trials, which changes nothing"),
    ('[[variant]]\nname = "x"\n"model.width" = 16', "sets only what the base config already has"),
    ('[[variant]]\nname = "x"\n"data.seed" = 3', "without data.per_class it changes nothing"),
])
def test_bad_variant_tables_are_one_line(tmp_path, capsys, variant, message):
    path = _npz(tmp_path / "d.npz")
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.format(path=path).split("[[variant]]")[0] + variant)
    with pytest.raises(ConfigError, match=re.escape(message)):
        command.read_config(cfg)
    code = cli.main(["study", "ablation", str(cfg), "--out", str(tmp_path / "o"), "--quick"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_a_search_candidate_that_blew_up_does_not_flatten_the_plot():
    """A 1cycle peak whose loss reached 4.8e11 sat on a linear axis that made every other
    candidate a flat line at 0: the axis stops at 10x the median loss and the outlier is a
    labelled triangle on its top edge; a rate too low to learn (1.5) stays on the plot."""
    from matplotlib.figure import Figure

    from dnnlab.studies.ablation.report import SEARCH_CAP, _cap_outliers
    ax = Figure().subplots()
    ax.plot([1e-5, 1e-4, 1e-3, 1e-2], [1.5, 0.9, 0.35, 0.4])
    ax.plot([0.1, 0.3, 1.0, 3.0], [0.8, 0.41, 0.27, 4.8e11])
    _cap_outliers(ax)
    low, top = ax.get_ylim()
    assert top == pytest.approx(SEARCH_CAP * 0.8) and low < 0.27      # median of the 8 losses
    marks = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [3.0]
    assert [t.get_text() for t in ax.texts] == ["4.8e+11"]
    calm = Figure().subplots()
    calm.plot([1e-5, 1e-4], [1.5, 0.3])
    _cap_outliers(calm)
    assert not [line for line in calm.get_lines() if line.get_marker() == "^"]


def test_a_search_whose_best_is_the_end_of_its_grid_says_so():
    """A kept rate at the end of the grid means the search may have stopped short: results.json,
    the report's table and the terminal say so. A candidate that diverged was tried: a best just
    below it is not an end."""
    from dnnlab.studies.ablation.answers import edge_note, grid_edge

    def search(best, losses):
        return {"best": best, "rows": [{"value": v, "val_loss": l}
                                       for v, l in zip((1e-4, 1e-3, 1e-2), losses)]}
    assert grid_edge(search(1e-2, (0.9, 0.5, 0.4))) == "largest"
    assert grid_edge(search(1e-4, (0.4, 0.5, 0.9))) == "smallest"
    assert grid_edge(search(1e-3, (0.9, 0.4, 0.5))) is None
    assert grid_edge(search(1e-3, (0.9, 0.4, None))) is None          # 1e-2 was tried: diverged
    assert grid_edge(None) is None
    assert edge_note("largest") == "the largest rate tried: a larger one may be better"
    results = {"baseline": {"lr": 0.01, "search_edge": "largest", "val_accuracy_mean": 0.9,
                            "val_accuracy_std": 0.01, "test_accuracy_mean": 0.9,
                            "test_accuracy_std": 0.01, "best_epoch_mean": 2.0,
                            "seconds_per_epoch": 0.1, "doctor": None,
                            "val_vs_baseline": compare([0.9, 0.91], [0.9, 0.91])},
               "shortened": False, "wall_seconds": 1.0, "device": "cpu",
               "answers": {k: {"text": k} for k in ("batchnorm", "selu", "mc_dropout")}}
    text = command.summary_text(results, ["baseline"])
    assert ("note: baseline's rate 0.01 is the largest rate tried: a larger one may be better "
            "(the search stopped at its edge)") in text


def test_a_variant_that_sets_data_limit_trains_on_its_own_rows_and_is_measured_on_the_bases(config, tmp_path):
    """Before: data.* overrides of a [[variant]] were ignored (the base's data, numbers
    bit-identical to the baseline's)."""
    base, _ = command.read_config(config)
    setup = Setup(base=base, proto=command.plan.from_config(base), seeds=1, device="cpu",
                  out=tmp_path, say=Say("ablation", False),
                  user=(("few", (("data.limit", 50), ("data.standardize", True))),))
    full, few = data_for(setup.config("baseline"), setup), data_for(setup.config("few"), setup)
    assert (len(full.train), len(few.train)) == (240, 50) and few.mean is not None
    assert few.class_names == full.class_names
    for split in ("valid", "test"):                 # the rows every variant is compared on
        np.testing.assert_array_equal(getattr(few, split).y, getattr(full, split).y)
    with pytest.raises(ConfigError, match="sets data.classes, which would change"):
        run(base, tmp_path / "o", variants=(("two", (("data.classes", [0, 1]),)),), quick=True)


def test_a_batch_larger_than_a_variants_training_rows_is_refused_before_any_stage(config, tmp_path):
    """Before: refused only once the variant's stage trained (after the LR finder had run)."""
    base, _ = command.read_config(config)
    with pytest.raises(ConfigError, match="variant 'big': train.batch_size = 1000 is larger than "
                       "its 240 training examples"):
        run(base, tmp_path / "o", variants=(("big", (("train.batch_size", 1000),)),), quick=False,
            seeds=1, device="cpu", progress=False, workers=1)
    assert not (tmp_path / "o" / "stages").exists()


def test_the_protocols_batches_fit_a_small_table_and_say_so(tmp_path, capsys):
    """The study chose batch 128 for 1cycle: on a 114-row table it was refused as if the user
    had set it; it becomes a quarter of the rows (four steps an epoch), the book's 32 stays."""
    from dnnlab.config import RunConfig
    from dnnlab.studies import engine
    from dnnlab.studies.ablation import plan
    from dnnlab.studies.ablation.stages import Setup
    setup = Setup(base=RunConfig(), proto=plan.protocol(quick=True), seeds=3, device="cpu",
                  out=tmp_path, say=engine.Say("ablation", True))
    cut = command.fit_batches(setup, 114)
    assert (cut.proto.batch_size, cut.proto.onecycle_batch) == (32, 28)
    assert "cut to the 114 training rows (32, 1cycle 28)" in capsys.readouterr().err
    assert command.fit_batches(setup, 20).proto.batch_size == 5
    assert command.fit_batches(setup, 600) is setup

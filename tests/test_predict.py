"""A model the user can take away: the run records its preprocessing (feature names, scale,
standardization statistics of the training split, class names) in the run directory and in
model.safetensors; ``dnnlab predict`` and ``dnnlab.load_model(...).predict`` apply it to raw
rows; the ONNX export carries it in the graph, so onnxruntime on raw CSV rows predicts what
``dnnlab predict`` does on every row."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

import dnnlab
from cli_helpers import run_cli
from dnnlab.config import ModelConfig, RunConfig, replace
from dnnlab.data import load_dataset
from dnnlab.errors import DataError
from dnnlab.nn.mlp import build_mlp
from dnnlab.runs import train_run

RNG = np.random.default_rng(7)
NAMES = ["alpha", "beta", "gamma"]
FEATURES = [f"m{i}" for i in range(6)]


def _table(path, n=240):
    """Raw measurements far from unit scale (means 50-550, stds 10-60): a model fed them without
    the run's standardization predicts nonsense. The label column comes first, sorted by class."""
    y = np.sort(np.arange(n) % 3)
    centre = RNG.normal(size=(3, 6)) * 2
    x = (centre[y] + RNG.normal(size=(n, 6))) * np.linspace(10, 60, 6) + np.linspace(50, 550, 6)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", *FEATURES])
        for t, row in zip(y, x):
            w.writerow([NAMES[t], *(f"{v:.4f}" for v in row)])
    return x.astype(np.float32), np.array(NAMES)[y]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    x, labels = _table(tmp / "table.csv")
    cfg = replace(RunConfig(), **{"name": "t", "data.name": "file", "data.path": str(tmp / "table.csv"),
                                  "data.label": "kind", "data.standardize": True,
                                  "model.depth": 1, "model.width": 16, "train.epochs": 6,
                                  "train.progress": False, "optim.lr": 0.01})
    train_run(cfg, tmp / "run")
    return tmp, x, labels, cfg


def test_the_run_records_its_preprocessing_in_the_folder_and_the_model_file(run):
    tmp, _, _, cfg = run
    data = load_dataset("file", path=cfg.data.path, label="kind", standardize=True)
    record = json.loads((tmp / "run" / "preprocessing.json").read_text())
    assert record["class_names"] == NAMES and record["feature_names"] == FEATURES
    assert record["label"] == "kind" and record["scale"] == 1.0
    np.testing.assert_allclose(record["mean"], data.mean, rtol=1e-6)
    np.testing.assert_allclose(record["std"], data.std, rtol=1e-6)
    with safe_open(tmp / "run" / "model.safetensors", "pt") as f:
        meta = json.loads(f.metadata()["dnnlab"])       # safetensors metadata: str -> JSON text
    assert meta["preprocessing"] == record


def test_load_model_predicts_raw_rows_as_the_trained_module_does_on_prepared_ones(run):
    tmp, x, labels, cfg = run
    model = dnnlab.load_model(tmp / "run")
    assert list(model.classes_) == NAMES and list(model.feature_names_in_) == FEATURES
    data = load_dataset("file", path=cfg.data.path, label="kind", standardize=True)
    prepared = (x - data.mean) / data.std
    logits = model.module(torch.as_tensor(prepared)).detach().numpy()
    np.testing.assert_allclose(model.decision_function(x), logits, rtol=1e-5, atol=1e-5)
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), 3) and np.allclose(proba.sum(axis=1), 1)
    pred = model.predict(x)
    assert list(pred) == [NAMES[i] for i in logits.argmax(axis=1)]
    assert np.mean(pred == labels) > 0.9          # it learned, and raw rows are prepared right
    with pytest.raises(DataError, match="the input has 5 features per row but the model takes 6 "
                                        r"\(the columns 'm0', 'm1'"):
        model.predict(x[:, :5])


def test_predict_command_matches_columns_by_name_and_refuses_other_columns(run):
    tmp, x, labels, _ = run
    order = [3, 0, 5, 1, 4, 2]                   # another column order, no label column
    with open(tmp / "new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([FEATURES[j] for j in order])
        w.writerows([[f"{v:.4f}" for v in row[order]] for row in x[:50]])
    code, out, err = run_cli(["predict", str(tmp / "run"), str(tmp / "new.csv"),
                              "--out", str(tmp / "p.csv")])
    assert code == 0, err
    assert out.startswith("predicted 50 rows (") and "p.csv" in out
    rows = list(csv.DictReader(open(tmp / "p.csv")))
    assert list(rows[0]) == ["prediction", "p_alpha", "p_beta", "p_gamma"]
    assert [r["prediction"] for r in rows] == list(dnnlab.load_model(tmp / "run").predict(x[:50]))
    # the training table itself (label column included) gives the accuracy too
    code, out, _ = run_cli(["predict", str(tmp / "run"), str(tmp / "table.csv"),
                            "--out", str(tmp / "q.csv")])
    assert code == 0 and "accuracy 0.9" in out and next(csv.reader(open(tmp / "q.csv")))[0] == "label"
    (tmp / "bad.csv").write_text("m0,m1,m2,m3,m4,height\n" + "1,2,3,4,5,6\n")
    code, out, err = run_cli(["predict", str(tmp / "run"), str(tmp / "bad.csv"),
                              "--out", str(tmp / "bad-out.csv")])
    assert code == 2 and err.count("\n") == 1
    assert "lacks the column 'm5' and has the column 'height' the model was not trained on" in err
    assert not (tmp / "bad-out.csv").exists()
    np.savez(tmp / "narrow.npz", x=x[:, :4])
    code, _, err = run_cli(["predict", str(tmp / "run"), str(tmp / "narrow.npz"),
                            "--out", str(tmp / "n.csv")])
    assert code == 2 and "has 4 features per row but the model takes 6" in err


def test_onnx_export_takes_raw_rows_and_names_the_classes(run):
    pytest.importorskip("onnx", reason="the export extra is not installed: pip install -e '.[export]'")
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    tmp, x, _, _ = run
    code, _, err = run_cli(["export", str(tmp / "run"), "--out", str(tmp / "m.onnx")])
    assert code == 0, err
    session = ort.InferenceSession(str(tmp / "m.onnx"), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"]) == NAMES
    assert json.loads(props["feature_names"]) == FEATURES
    # raw CSV rows, as a user reads them, straight into the graph
    with open(tmp / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    raw = np.array([[float(r[c]) for c in FEATURES] for r in table], dtype=np.float32)
    logits = session.run(["logits"], {"input": raw})[0]
    run_cli(["predict", str(tmp / "run"), str(tmp / "table.csv"), "--out", str(tmp / "o.csv")])
    predicted = [r["prediction"] for r in csv.DictReader(open(tmp / "o.csv"))]
    assert [NAMES[i] for i in logits.argmax(axis=1)] == predicted     # every row


def test_a_bare_model_file_takes_rows_as_given(tmp_path):
    model = build_mlp(ModelConfig(depth=1, width=4), 3, 2, seed=0)
    clf = dnnlab.load_model(dnnlab.save_model(model, tmp_path / "m.safetensors"))
    assert list(clf.classes_) == ["0", "1"] and clf.feature_names_in_ is None
    x = RNG.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(clf.decision_function(x), model.eval()(torch.as_tensor(x))
                               .detach().numpy(), rtol=0, atol=0)


def test_predict_a_built_in_datasets_test_split_with_the_runs_own_data_options(tmp_path):
    cfg = replace(RunConfig(), **{"name": "s", "data.name": "synthetic", "data.limit": 300,
                                  "data.valid_size": 100, "data.classes": [2, 0],
                                  "data.standardize": True, "model.depth": 1, "model.width": 8,
                                  "train.epochs": 2, "train.progress": False})
    train_run(cfg, tmp_path / "run")
    code, out, err = run_cli(["predict", str(tmp_path / "run"), "synthetic",
                              "--out", str(tmp_path / "p.csv")])
    assert code == 0, err
    test = load_dataset("synthetic", classes=[2, 0], valid_size=100, limit=300).test
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == len(test) and list(rows[0]) == ["label", "prediction", "p_class 2", "p_class 0"]
    assert {r["label"] for r in rows} == {"class 2", "class 0"} and "accuracy" in out


class _Frame:
    """What load_model reads of a pandas DataFrame (pandas is not a dependency): named columns,
    positional selection, to_numpy."""

    def __init__(self, columns, values):
        self.columns, self.values = list(columns), np.asarray(values)

    @property
    def iloc(self):
        frame = self

        class _ILoc:
            def __getitem__(self, key):
                rows, cols = key
                return _Frame([frame.columns[c] for c in cols], frame.values[rows][:, cols])
        return _ILoc()

    def to_numpy(self):
        return self.values


def test_a_data_frame_is_read_by_column_name(run):
    tmp, x, _, _ = run
    model = dnnlab.load_model(tmp / "run")
    order = [5, 2, 0, 4, 1, 3]
    frame = _Frame([FEATURES[j] for j in order], x[:20][:, order])
    assert list(model.predict(frame)) == list(model.predict(x[:20]))
    with pytest.raises(DataError, match="the DataFrame lacks the column 'm3'"):
        model.predict(_Frame([f for f in FEATURES if f != "m3"], np.delete(x[:5], 3, axis=1)))


def test_predict_reads_a_run_only_as_it_recorded_itself(run, tmp_path):
    """predict goes through the one run-folder check (train.state.check_run): an edited
    config.toml or a missing start record is refused in one line and nothing is written."""
    tmp = run[0]
    src, table = tmp / "run", tmp / "table.csv"
    edited = tmp_path / "edited"
    shutil.copytree(src, edited)
    text = (edited / "config.toml").read_text()
    (edited / "config.toml").write_text(text.replace("standardize = true", "standardize = false"))
    code, _, err = run_cli(["predict", str(edited), str(table), "--out", str(tmp_path / "p.csv")])
    assert code == 2 and "differs from the config the run recorded" in err and "\n" not in err.strip()
    assert not (tmp_path / "p.csv").exists()
    legacy = tmp_path / "legacy"
    shutil.copytree(src, legacy)
    (legacy / "checkpoints" / "start.json").unlink()
    code, _, err = run_cli(["predict", str(legacy), str(table), "--out", str(tmp_path / "q.csv")])
    assert code == 2 and "start.json is missing" in err and "--accept-legacy" in err
    code, _, err = run_cli(["predict", str(legacy), str(table), "--out", str(tmp_path / "q.csv"),
                            "--accept-legacy"])
    assert code == 0, err

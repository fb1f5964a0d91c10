"""Your own data from a file (issue 20 point 1): .npz, .csv and .parquet read into the book's
splits, with the same options as the built-in datasets and one-line errors for malformed files."""

import io
import json
import sys
import zipfile

import numpy as np
import pytest

from cli_helpers import run_cli
from dnnlab.config import from_dict
from dnnlab.data import formats, from_arrays, load_dataset
from dnnlab.data.files import SPLIT_SEED, TEST_SIZE, split_order
from dnnlab.errors import ConfigError, DataError

RNG = np.random.default_rng(3)


def table(n=40, n_features=3, n_classes=3):
    """Features (float32) and integer labels with every class present, sorted by class."""
    y = np.sort(np.arange(n) % n_classes)
    x = (RNG.normal(size=(n, n_features)) + y[:, None]).astype(np.float32)
    return x, y


def write_csv(path, x, y, names=None, label="label"):
    names = names or [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join([*names, label])]
    lines += [",".join([*(repr(float(v)) for v in row), str(t)]) for row, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path, **options):
    options.setdefault("valid_size", 4)
    return load_dataset("file", path=path, **options)


# -- .npz -------------------------------------------------------------------------------------------

def test_npz_keeps_its_splits_and_order_like_the_book(tmp_path):
    x = RNG.integers(0, 256, (30, 4, 4), dtype=np.uint8)
    y = np.arange(30) % 3
    xt, yt = RNG.integers(0, 256, (9, 4, 4), dtype=np.uint8), np.arange(9) % 3
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    ds = load(tmp_path / "mine.npz", valid_size=6)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (24, 6, 9)
    assert ds.image_shape == (4, 4) and ds.n_features == 16 and ds.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(ds.valid.x, x[:6].reshape(6, -1) / np.float32(255))  # first rows
    np.testing.assert_array_equal(ds.train.y, y[6:])
    np.testing.assert_array_equal(ds.test.y, yt)
    assert ds.name == "mine.npz" and ds.source == str(tmp_path / "mine.npz")


def test_npz_float_features_are_kept_as_given_and_keras_column_labels_accepted(tmp_path):
    x = RNG.normal(size=(20, 5)) * 100          # float64, far outside [0, 1]
    np.savez(tmp_path / "f.npz", x_train=x, y_train=(np.arange(20) % 2).reshape(-1, 1))
    ds = load(tmp_path / "f.npz", valid_size=2)
    assert ds.train.x.dtype == np.float32 and np.abs(ds.train.x).max() > 50
    assert ds.train.y.dtype == np.int64 and ds.n_classes == 2


def test_npz_without_a_test_split_is_carved_like_a_table(tmp_path):
    x, y = table(n=50)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y)
    write_csv(tmp_path / "a.csv", x, y)
    a, b = load(tmp_path / "a.npz"), load(tmp_path / "a.csv")
    assert len(a.test) == round(50 * TEST_SIZE)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, split).x, getattr(b, split).x)
        np.testing.assert_array_equal(getattr(a, split).y, getattr(b, split).y)


def test_npz_string_labels_are_mapped_in_sorted_order(tmp_path):
    x = RNG.normal(size=(12, 2))
    y = np.array(["dog", "cat", "bird"] * 4)
    np.savez(tmp_path / "s.npz", x_train=x, y_train=y, x_test=x[:3], y_test=y[:3])
    ds = load(tmp_path / "s.npz", valid_size=3)
    assert ds.class_names == ["bird", "cat", "dog"]
    assert ds.valid.y.tolist() == [2, 1, 0]      # dog, cat, bird
    assert ds.test.y.tolist() == [2, 1, 0]


# -- .csv -------------------------------------------------------------------------------------------

def test_csv_split_is_a_fixed_shuffle_the_label_column_named_and_the_rest_features(tmp_path):
    x, y = table(n=40, n_features=3)
    path = write_csv(tmp_path / "t.csv", x, y, names=["a", "b", "c"], label="kind")
    ds = load(path, label="kind", valid_size=8)
    n_test = round(40 * TEST_SIZE)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (40 - n_test - 8, 8, n_test)
    order = split_order(y, SPLIT_SEED)
    np.testing.assert_array_equal(ds.test.y, y[order[:n_test]])
    np.testing.assert_array_equal(ds.valid.x, x[order[n_test:n_test + 8]])
    np.testing.assert_array_equal(ds.train.x, x[order[n_test + 8:]])
    # the shuffle does not depend on data.seed: every run sees the same split
    other = load(path, label="kind", valid_size=8, seed=99)
    np.testing.assert_array_equal(other.test.x, ds.test.x)


def test_csv_label_defaults_to_the_last_column_and_can_be_any_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("species,w,h\ncat,1,2\ndog,3,4\ncat,5,6\ndog,7,8\ncat,9,10\ndog,11,12\n")
    ds = load(path, label="species", valid_size=1)
    assert ds.class_names == ["cat", "dog"] and ds.n_features == 2
    assert sorted(np.concatenate([ds.train.x[:, 0], ds.valid.x[:, 0], ds.test.x[:, 0]])) == \
        [1, 3, 5, 7, 9, 11]
    # without data.label the last column (h) is the label, and the words are features
    with pytest.raises(DataError, match="line 2, column 'species': 'cat' is not a number"):
        load(path, valid_size=1)


def test_csv_quoted_and_integral_float_labels(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('x,y\n1,"1.0"\n2,0\n3," 1 "\n4,0.0\n5,1\n')
    ds = load(path, valid_size=1)
    assert ds.class_names == ["0", "1"]
    labels = sorted(np.concatenate([ds.train.y, ds.valid.y, ds.test.y]).tolist())
    assert labels == [0, 0, 1, 1, 1]


def test_options_work_as_for_the_built_in_datasets(tmp_path):
    x, y = table(n=90, n_features=2, n_classes=3)
    path = write_csv(tmp_path / "t.csv", x, y)
    ds = load(path, classes=[2, 0], per_class=5, standardize=True, valid_size=10)
    assert ds.class_names == ["2", "0"] and len(ds.train) == 10
    assert np.bincount(ds.train.y).tolist() == [5, 5]
    np.testing.assert_allclose(ds.train.x.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.train.x.std(axis=0), 1, atol=1e-4)
    assert ds.mean is not None
    assert len(load(path, limit=7).train) == 7


def test_relative_paths_are_taken_from_the_current_directory(tmp_path, monkeypatch):
    x, y = table()
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "t.csv", x, y)
    monkeypatch.chdir(tmp_path)
    assert load("data/t.csv").source == str(tmp_path / "data" / "t.csv")
    monkeypatch.chdir(tmp_path / "data")
    with pytest.raises(DataError, match=r"data/data/t.csv: cannot read it \(No such file or "
                                        r"directory\); a relative data.path is taken from the "
                                        "current directory"):
        load("data/t.csv")


def test_a_changed_file_is_read_again(tmp_path):
    x, y = table()
    path = write_csv(tmp_path / "t.csv", x, y)
    first = load(path)
    write_csv(path, x + 100, y)
    assert load(path).train.x.min() > first.train.x.max()


@pytest.mark.parametrize("text, options, message", [
    ("a,b,y\n1,2,0\n3,4,1\n5,6\n7,8,1\n", {},
     "line 4 has 2 fields but the header names 3 columns (ragged rows)"),
    ("a,b,y\n1,2,0\n3,4,1,9\n5,6,1\n7,8,1\n", {},
     "line 3 has 4 fields but the header names 3 columns (ragged rows)"),
    ("a,b,y\n1,2,0\n3,4,1\n5,6,1\n7,8,1\n9,10,1,11\n", {},
     "line 6 has 4 fields but the header names 3 columns (ragged rows)"),
    ("a,b,y\n1,2,0\n3,abc,1\n5,6,1\n", {},
     "line 3, column 'b': 'abc' is not a number (every column but the label is a feature)"),
    ("a,b,y\n1,2,0\n3,,1\n5,6,1\n", {}, "line 3, column 'b' is empty (a missing value)"),
    ("a,b,y\n1,2,0\n3,4,\n5,6,1\n", {}, "line 3, column 'y' is empty (the label)"),
    ("a,b,y\n", {}, "has a header but no rows"),
    ("\n\n", {}, "has no header row; the first line must name the columns"),
    ("y\n1\n0\n", {}, "has 1 column; it needs a label column and at least one feature column"),
    ("a,b,y\n1,2,0\n3,4,1\n", {"label": "kind"},
     "has no column 'kind' (data.label); its columns are 'a', 'b', 'y'"),
    ("a,y,y\n1,2,0\n3,4,1\n", {"label": "y"}, "has 2 columns named 'y'; rename all but one"),
    ("a,y\n1,0.5\n2,1\n3,0\n", {}, "the labels hold 0.5; labels must be integers 0..n-1 or strings"),
    ("a,y\n1,1\n2,2\n3,1\n4,1\n5,2\n", {}, "the labels run 1..2 but class 0 has no example"),
    # the line of the file, not the row numpy counts (from 0, blank lines skipped)
    ("a,y\n1,0\n\n2,-1\n3,1\n4,-2\n5,1\n", {},
     "2 labels below 0 (the first, -1, at line 4); integer labels run 0..n-1"),
    ("a,b,y\n1,2,0\n\n3,4,1\n5,1_000,1\n6,7,0\n8,9,1\n", {},
     "line 5, column 'b': could not convert string '1_000' to float32"),
    # a label used as a count of classes: one wrong value, refused without allocating 1e11 of anything
    ("a,y\n1,0\n2,1\n3,100000000000\n4,1\n5,0\n", {},
     "the labels run 0..100000000000 but class 2 has no example (99999999998 of those"),
    ("a,y\n1,0\n2,1\n3,1\n4,0\n", {},
     "has 4 rows; a file without a test split of its own needs at least 5"),
])
def test_malformed_csv_is_one_line_naming_the_file_and_the_problem(tmp_path, text, options, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load(path, valid_size=0, **options)
    assert str(e.value).startswith(str(path)) and message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((4, 2))}, "lacks y_train; a data .npz holds x_train, y_train"),
    ({"x_train": np.zeros((4, 2)), "y_train": [0, 1, 0, 1], "x_test": np.zeros((2, 2))},
     "lacks y_test"),
    ({"x_train": np.zeros(4), "y_train": [0, 1, 0, 1]},
     r"x_train has shape (4,); expected (N, features) or images (N, H, W[, C])"),
    ({"x_train": np.zeros((4, 2)), "y_train": [0, 1, 0]}, "x_train has 4 rows but y_train has 3 labels"),
    ({"x_train": np.zeros((0, 2)), "y_train": np.zeros(0, int)}, "x_train has no rows"),
    ({"x_train": np.zeros((4, 0)), "y_train": [0, 1, 0, 1]}, "x_train has no features"),
    ({"x_train": np.array([["a", "b"]] * 4), "y_train": [0, 1, 0, 1]},
     "x_train has dtype <U1; features must be numbers"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros((4, 2))},
     "y_train has shape (4, 2); labels must be one per row"),
    ({"x_train": np.zeros((4, 2)), "y_train": [0, 1, 0, 1], "x_test": np.zeros((2, 3)),
      "y_test": [0, 1]}, "x_train rows have shape (2,) but x_test rows (3,)"),
    ({"x_train": np.zeros((4, 2)), "y_train": [0.0, 1.0, 2.5, 1.0]}, "the labels hold 2.5"),
    ({"x_train": np.zeros((6, 2)), "y_train": [0, 1, 0, 1, 0, 1], "x_test": np.zeros((3, 2)),
      "y_test": [0, -1, -1]}, "2 labels below 0 (the first, -1, at y_test row 1)"),
])
def test_malformed_npz_is_one_line_naming_the_file_and_the_problem(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as e:
        load(path, valid_size=0)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_unreadable_files_are_one_line(tmp_path):
    (tmp_path / "latin1.csv").write_bytes(b"a,y\n1,0\n2,caf\xe9\n3,1\n4,0\n5,1\n")
    with pytest.raises(DataError, match=r"latin1.csv: line 3 is not UTF-8 text \(byte 0xe9 at "
                       r"column 6\); save the file as UTF-8"):
        load(tmp_path / "latin1.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    (tmp_path / "t.txt").write_text("a,b\n")
    (tmp_path / "dir.csv").mkdir()
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=[0, 1, 0, 1])
    cases = {"empty.csv": "empty.csv is empty (0 bytes)",
             "junk.npz": "junk.npz is not a readable .npz file",
             "obj.npz": "holds pickled objects (never loaded)",
             "t.txt": "t.txt': expected a file ending in .npz, .csv, .parquet",
             "dir.csv": "dir.csv is not a file",
             "missing.parquet": "missing.parquet: cannot read it (No such file or directory)",
             "two\nlines.csv": "data.path = '.*two\\\\nlines.csv' holds control characters"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load(tmp_path / name)


def test_path_and_label_are_refused_where_they_would_be_ignored(tmp_path):
    """One rule (config.source_problem) for the config, load_dataset and load_file: the same
    message from each."""
    x, y = table()
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y)
    with pytest.raises(DataError, match="data.label = 'y' names the label column of a .csv or "
                       ".parquet data.path; a .npz holds its labels in y_train and y_test"):
        load(tmp_path / "a.npz", label="y")
    with pytest.raises(DataError, match="data.path is read only when data.name = 'file' "
                       r"\(it is 'mnist'\)"):
        load_dataset("mnist", path=tmp_path / "a.npz")
    with pytest.raises(DataError, match="data.name = 'file' needs data.path"):
        load_dataset("file")
    with pytest.raises(DataError, match="data.label = 'y' names .*; dataset 'synthetic' has none"):
        load_dataset("synthetic", label="y")
    with pytest.raises(ConfigError, match="data.label = 'y' names .*; dataset 'synthetic' has none"):
        from_dict({"data": {"name": "synthetic", "label": "y"}})


# -- .parquet ---------------------------------------------------------------------------------------

def test_parquet_reads_like_the_same_csv(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is the optional 'files' extra (pip install "
                             "-e '.[files]'); without it .parquet is refused with that hint")
    pq = pytest.importorskip("pyarrow.parquet")
    x, y = table(n=40, n_features=2)
    names = np.array(["low", "mid", "high"])[y]
    pq.write_table(pa.table({"w": x[:, 0], "h": x[:, 1].astype(np.float64),
                             "kind": pa.array(names).dictionary_encode()}), tmp_path / "t.parquet")
    write_csv(tmp_path / "t.csv", x, names, names=["w", "h"], label="kind")
    a, b = load(tmp_path / "t.parquet", label="kind"), load(tmp_path / "t.csv", label="kind")
    assert a.class_names == b.class_names == ["high", "low", "mid"]
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(a, split).x, getattr(b, split).x)
        np.testing.assert_array_equal(getattr(a, split).y, getattr(b, split).y)


def test_malformed_parquet_is_one_line(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is the optional 'files' extra")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"a": ["x", "y", "z"], "y": [0, 1, 0]}), tmp_path / "s.parquet")
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "y": [0, 1, 0]}), tmp_path / "n.parquet")
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "y": [0, None, 1]}), tmp_path / "l.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 nothing here")
    cases = {"s.parquet": "column 'a' has type string; every column but the label is a feature",
             "n.parquet": "column 'a' has 1 missing values (null); fill or drop them",
             "l.parquet": "column 'y' has 1 missing labels (null)",
             "junk.parquet": "junk.parquet is not a readable parquet file"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load(tmp_path / name, valid_size=0)


# -- from the command line --------------------------------------------------------------------------

def test_dnnlab_train_on_an_npz_named_by_the_config(tmp_path, monkeypatch):
    x, y = table(n=120, n_features=6, n_classes=3)
    order = RNG.permutation(120)                      # a .npz keeps its order: mix the classes
    x, y = x[order], y[order]
    np.savez(tmp_path / "mine.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    (tmp_path / "c.toml").write_text(
        '[data]\nname = "file"\npath = "mine.npz"\nvalid_size = 20\nstandardize = true\n'
        '[model]\ndepth = 1\nwidth = 8\n[train]\nepochs = 2\nbatch_size = 16\nprogress = false\n')
    monkeypatch.chdir(tmp_path)                       # data.path is relative to the current folder
    code, out, err = run_cli(["train", "c.toml", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    # a malformed file is one line and exit code 2, never a traceback
    np.savez(tmp_path / "mine.npz", x_train=x[:100], y_train=y[:90])
    code, out, err = run_cli(["train", "c.toml", "--out", str(tmp_path / "run2"), "--device", "cpu"])
    assert code == 2 and "Traceback" not in err
    assert err.strip() == f"dnnlab: error: {tmp_path / 'mine.npz'}: x_train has 100 rows but " \
                          "y_train has 90 labels"


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)          # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"t.parquet: reading .parquet needs pyarrow: pip install "
                                        r"-e '\.\[files\]' in the dnnlab checkout \(or save the "
                                        r"table as .csv\)"):
        load(tmp_path / "t.parquet")


def npy_header(shape, descr="<f4"):
    """The bytes of a .npy file's header announcing ``shape`` (numpy's own writer)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": tuple(shape)})
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(10**7, 10**6), (10**5, 10**5), (3, 2**62)])
def test_a_shape_an_npy_header_declares_is_checked_against_its_bytes_before_allocating(tmp_path, shape):
    """Before: numpy allocated the declared shape first (MemoryError: 36.4 TiB)."""
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", npy_header(shape) + bytes(24))
        z.writestr("y_train.npy", npy_header((3,), "<i8") + bytes(24))
    with pytest.raises(DataError, match=rf"big.npz: x_train declares shape \({shape[0]}, "
                       r"\d+\) of float32 \(\d+ bytes\) but holds 24 bytes"):
        load(path, valid_size=1)


def test_an_npz_larger_than_the_memory_available_is_refused_before_it_is_read(tmp_path, monkeypatch):
    x, y = table(n=50)
    np.savez_compressed(tmp_path / "t.npz", x_train=x, y_train=y)
    monkeypatch.setattr(formats, "available_bytes", lambda: 100)
    with pytest.raises(DataError, match=r"t.npz: x_train \(shape \(50, 3\)\) needs 0.0 GiB of "
                       "memory but 0.0 GiB are available"):
        load(tmp_path / "t.npz")


def test_a_label_used_as_a_class_count_is_refused_in_from_arrays_too():
    """Before: from_arrays built 1e11 class names (minutes, then the memory)."""
    x = np.zeros((4, 2))
    with pytest.raises(DataError, match="the labels reach 100000000000 but there are 6 of them: at "
                       "least 99999999995 of those 100000000001 classes have no example"):
        from_arrays(x, [0, 1, 0, 10**11], x[:2], [0, 1])


def test_a_file_split_is_stratified_and_takes_fractions(tmp_path):
    """Sorted by class (as tables often are), 3 classes of 30/60/90 rows: test and validation
    hold each class in its share, and fractions of rows work for both splits."""
    y = np.repeat([0, 1, 2], [30, 60, 90])
    x = RNG.normal(size=(180, 2)) + y[:, None]
    path = write_csv(tmp_path / "sorted.csv", x, y)
    ds = load(path, valid_size=0.25, test_size=0.2)
    assert (len(ds.test), len(ds.valid), len(ds.train)) == (36, 36, 108)
    assert np.bincount(ds.test.y).tolist() == [6, 12, 18]
    assert np.bincount(ds.valid.y).tolist() == [6, 12, 18]
    with pytest.raises(DataError, match=r"data.valid_size = 1.5: a fraction must lie in \(0, 1\)"):
        load(path, valid_size=1.5)
    with pytest.raises(DataError, match=r"data.test_size = 0.999 gives 180 test rows of 180"):
        load(path, test_size=0.999)

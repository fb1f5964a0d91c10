"""The book's splits and the data-layer options: classes, per_class, limit, standardize; from_arrays."""

import numpy as np
import pytest

from dnnlab.config import DataConfig
from dnnlab.data import from_arrays, load_dataset, load_from_config, standardized, synthetic
from dnnlab.errors import DataError


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A 200/50 image 'mnist.npz' (6x6) in its own folder, labels shuffled, 20 per class."""
    monkeypatch.setenv("DNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DNNLAB_DATA_DIR", raising=False)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (250, 6, 6), dtype=np.uint8)
    x[:, 0, 0] = 17                                              # a constant pixel
    y = np.concatenate([rng.permutation(np.arange(200) % 10), np.arange(50) % 10]).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return tmp_path, x, y


def test_valid_is_the_first_images_and_test_the_official_test_set(tiny):
    folder, x, y = tiny
    ds = load_dataset("mnist", data_dir=folder, valid_size=50)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (150, 50, 50)
    np.testing.assert_array_equal(ds.valid.x, x[:50].reshape(50, 36) / np.float32(255))
    np.testing.assert_array_equal(ds.train.x, x[50:200].reshape(150, 36) / np.float32(255))
    np.testing.assert_array_equal(ds.test.y, y[200:])
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64
    assert ds.train.x.flags.c_contiguous and ds.mean is None and ds.std is None
    assert ds.image_shape == (6, 6) and ds.n_features == 36 and ds.n_classes == 10
    ds.train.x[0, 0] = -1.0          # the in-process cache hands out fresh float arrays
    again = load_dataset("mnist", data_dir=folder, valid_size=50)
    assert again.train.x[0, 0] == x[50, 0, 0] / np.float32(255)


def test_class_subset_is_kept_in_every_split_and_relabelled_in_order(tiny):
    folder, x, y = tiny
    ds = load_dataset("mnist", data_dir=folder, valid_size=20, classes=[7, 2, 5])
    assert ds.class_names == ["7", "2", "5"] and ds.n_classes == 3
    kept = np.flatnonzero(np.isin(y[:200], [7, 2, 5]))      # classes first, then validation
    assert len(ds.valid) == 20
    np.testing.assert_array_equal(ds.train.x, x[kept[20:]].reshape(-1, 36) / np.float32(255))
    for split, labels in ((ds.train, y[kept[20:]]), (ds.valid, y[kept[:20]]), (ds.test, y[200:])):
        expected = [{7: 0, 2: 1, 5: 2}[v] for v in labels if v in (7, 2, 5)]
        np.testing.assert_array_equal(split.y, expected)
    with pytest.raises(DataError, match=r"label 12 does not exist; labels run 0..9"):
        load_dataset("mnist", data_dir=folder, valid_size=50, classes=[1, 12])
    with pytest.raises(DataError, match="2 or more distinct labels"):
        load_dataset("mnist", data_dir=folder, valid_size=50, classes=[3, 3])


def test_per_class_draws_k_per_class_reproducibly_and_leaves_valid_and_test(tiny):
    folder, x, y = tiny
    a = load_dataset("mnist", data_dir=folder, valid_size=50, per_class=4, seed=1)
    b = load_dataset("mnist", data_dir=folder, valid_size=50, per_class=4, seed=1)
    c = load_dataset("mnist", data_dir=folder, valid_size=50, per_class=4, seed=2)
    assert np.bincount(a.train.y).tolist() == [4] * 10
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.x, c.train.x)
    assert (len(a.valid), len(a.test)) == (50, 50)
    # every drawn image is a training image (never one of the first 50, the validation set)
    train_rows = {r.tobytes() for r in (x[50:200].reshape(150, 36) / np.float32(255))}
    assert all(r.tobytes() in train_rows for r in a.train.x)
    sub = load_dataset("mnist", data_dir=folder, valid_size=50, classes=[5, 6, 7, 8, 9], per_class=3)
    assert np.bincount(sub.train.y).tolist() == [3] * 5
    with pytest.raises(DataError, match=r"per_class = 40, but class '\d' has only 1\d training images"):
        load_dataset("mnist", data_dir=folder, valid_size=50, per_class=40)


def test_limit_keeps_the_first_training_images_only(tiny):
    folder, x, _ = tiny
    ds = load_dataset("mnist", data_dir=folder, valid_size=50, limit=7)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (7, 50, 50)
    np.testing.assert_array_equal(ds.train.x, x[50:57].reshape(7, 36) / np.float32(255))


def test_standardize_uses_training_statistics_only(tiny):
    folder, x, _ = tiny
    ds = load_dataset("mnist", data_dir=folder, valid_size=50, standardize=True)
    np.testing.assert_allclose(ds.train.x.mean(axis=0), 0, atol=1e-5)
    std = ds.train.x.std(axis=0)
    np.testing.assert_allclose(std[1:], 1, atol=1e-4)
    assert std[0] == 0 and ds.std[0] == 1 and np.all(ds.train.x[:, 0] == 0)   # constant pixel: std floor
    train = x[50:200].reshape(150, 36) / 255.0
    np.testing.assert_allclose(ds.mean, train.mean(axis=0), rtol=1e-6)
    expected_test = (x[200:].reshape(50, 36) / 255.0 - train.mean(axis=0)) / np.where(
        train.std(axis=0) < 1e-8, 1, train.std(axis=0))
    np.testing.assert_allclose(ds.test.x, expected_test, rtol=1e-4, atol=1e-5)
    assert abs(ds.valid.x.mean()) > 1e-4     # valid was scaled with train's numbers, not its own


def test_standardized_copy_leaves_the_original_alone():
    ds = synthetic(n_train=50, n_valid=10, n_test=10, seed=4)
    before = ds.train.x.copy()
    st = standardized(ds)
    np.testing.assert_array_equal(ds.train.x, before)
    assert ds.mean is None and st.mean.shape == (20,)
    np.testing.assert_allclose(st.train.x.std(axis=0), 1, atol=1e-5)
    with pytest.raises(DataError, match="already standardized"):
        standardized(st)


def test_option_errors_are_clear(tiny):
    folder, _, _ = tiny
    with pytest.raises(DataError, match=r"data.valid_size = 200 asks for 200 validation images but "
                                        r"the mnist training set has 200 images, .*set "
                                        r"data.valid_size = 0.2 \(a fraction\) or a count below 200"):
        load_dataset("mnist", data_dir=folder, valid_size=200)
    ds = load_dataset("mnist", data_dir=folder, valid_size=0.25)       # a fraction of 200
    assert len(ds.valid) == 50 and len(ds.train) == 150
    with pytest.raises(DataError, match="unknown dataset 'fashion_mnist'; choose one of: mnist, "
                                        "fashion-mnist, cifar10, synthetic"):
        load_dataset("fashion_mnist")


def test_load_from_config_passes_every_option(tiny):
    folder, _, _ = tiny
    cfg = DataConfig(name="mnist", classes=[0, 1, 2, 3, 4], per_class=2, valid_size=40,
                     standardize=True, limit=6, data_dir=str(folder), seed=3)
    ds = load_from_config(cfg)
    direct = load_dataset("mnist", data_dir=folder, classes=[0, 1, 2, 3, 4], per_class=2,
                          valid_size=40, standardize=True, limit=6, seed=3)
    assert len(ds.train) == 6 and ds.n_classes == 5 and ds.mean is not None
    np.testing.assert_array_equal(ds.train.x, direct.train.x)
    np.testing.assert_array_equal(ds.valid.y, direct.valid.y)


def test_synthetic_is_deterministic_balanced_and_learnable():
    a, b = synthetic(seed=5), synthetic(seed=5)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert not np.array_equal(a.train.x, synthetic(seed=6).train.x)
    assert (len(a.train), len(a.valid), len(a.test), a.n_features, a.n_classes) == (1000, 200, 200, 20, 3)
    assert a.source == "generated" and a.train.x.dtype == np.float32
    assert np.bincount(a.train.y).min() >= 300
    # nearest class mean, fitted on train, is far above chance (1/3) on test
    means = np.stack([a.train.x[a.train.y == c].mean(axis=0) for c in range(3)])
    pred = ((a.test.x[:, None, :] - means) ** 2).sum(-1).argmin(1)
    assert (pred == a.test.y).mean() > 0.8
    ds = load_dataset("synthetic", valid_size=1000, classes=[2, 0], per_class=50, standardize=True)
    assert len(ds.train) == 100 and len(ds.valid) == 1000 and set(ds.valid.y) == {0, 1}
    assert ds.class_names == ["class 2", "class 0"] and ds.source == "generated"


def test_from_arrays_builds_a_dataset_and_flattens_images():
    rng = np.random.default_rng(1)
    ds = from_arrays(rng.random((8, 2, 3)), [0, 1, 2, 0, 1, 2, 0, 1], rng.random((4, 2, 3)),
                     np.array([2, 1, 0, 1]), name="mine", class_names=["a", "b", "c"])
    assert ds.image_shape == (2, 3) and ds.n_features == 6 and ds.n_classes == 3
    assert ds.train.x.dtype == np.float32 and ds.valid.y.dtype == np.int64
    assert len(ds.test) == 0 and ds.test.x.shape == (0, 6)
    assert from_arrays(np.zeros((3, 4)), [0, 1, 1], np.zeros((2, 4)), [1, 0]).class_names == ["0", "1"]


@pytest.mark.parametrize("args, message", [
    ((np.zeros((3, 4)), [0, 1], np.zeros((2, 4)), [0, 1]),
     "y_train has 2 labels but its features have 3 rows"),
    ((np.zeros((3, 4)), [0, 1, 1], np.zeros((2, 5)), [0, 1]),
     "x_valid has 5 features per row but x_train has 4; all splits need the same features"),
    ((np.zeros((0, 4)), [], np.zeros((2, 4)), [0, 1]),
     "x_train is empty; a dataset needs training and validation examples"),
    ((np.zeros((3, 4)), [0, -1, 1], np.zeros((2, 4)), [0, 1]),
     "y_train holds the negative label -1"),
    ((np.zeros((3, 4)), [0.5, 1, 1], np.zeros((2, 4)), [0, 1]),
     "y_train has dtype float64; labels must be integers"),
    ((np.zeros(3), [0, 1, 1], np.zeros((2, 1)), [0, 1]),
     r"x_train has shape \(3,\); expected \(N, features\)"),
    ((np.zeros((3, 4)), [0, 0, 0], np.zeros((2, 4)), [0, 0]),
     "from_arrays: the training split holds class '0' only; a classifier needs examples of 2 or "
     "more classes"),
    ((np.zeros((3, 4)), [1, 1, 1], np.zeros((2, 4)), [0, 1]),
     "from_arrays: the training split holds class '1' only"),
])
def test_from_arrays_errors_name_the_problem(args, message):
    with pytest.raises(DataError, match=message):
        from_arrays(*args)


def test_from_arrays_reports_non_finite_values_per_split_with_the_first_position():
    x = np.zeros((5, 3), np.float32)
    x[2, 1], x[4, 0] = np.nan, np.inf
    test = np.zeros((2, 3))
    test[1, 2] = -np.inf
    with pytest.raises(DataError, match=r"^from_arrays: 3 non-finite values \(NaN or inf\): 0 in "
                                        r"train, 2 in valid, 1 in test \(the first at valid row 2, "
                                        r"column 1\); clean or impute them first$"):
        from_arrays(np.zeros((4, 3)), [0, 1, 0, 1], x, [0, 1, 0, 1, 0], test, [0, 1])
    big = np.zeros((4, 3))
    big[3, 0] = 1e39                  # finite in float64, inf once float32
    with pytest.raises(DataError, match="1 non-finite values .*: 1 in train, 0 in valid, 0 in test"):
        from_arrays(big, [0, 1, 0, 1], np.zeros((2, 3)), [0, 1])
    with pytest.raises(DataError, match="y_test holds label 2 but class_names lists 2 classes"):
        from_arrays(np.zeros((2, 3)), [0, 1], np.zeros((2, 3)), [0, 1], np.zeros((1, 3)), [2],
                    class_names=["no", "yes"])


def test_split_tensors_share_the_arrays_on_the_cpu():
    import torch

    from dnnlab.data import Split
    split = Split(np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 2, 1], dtype=np.int64))
    x, y = split.tensors("cpu")
    assert (x.dtype, y.dtype, tuple(x.shape)) == (torch.float32, torch.int64, (3, 2))
    assert y.tolist() == [0, 2, 1]
    split.x[0, 0] = 7.0                       # one copy of the data, not two
    assert float(x[0, 0]) == 7.0


def test_non_finite_values_in_a_file_are_counted_per_split_naming_the_file(tmp_path):
    x = np.ones((10, 3))
    x[1, 2] = np.nan          # valid (the first 3 rows)
    x[5, 0] = x[6, 1] = np.inf
    xt = np.ones((4, 3))
    xt[3, 0] = -np.inf
    np.savez(tmp_path / "n.npz", x_train=x, y_train=np.arange(10) % 2, x_test=xt, y_test=[0, 1, 0, 1])
    with pytest.raises(DataError, match=rf"^{tmp_path / 'n.npz'}: 4 non-finite values \(NaN or inf\): "
                                        r"2 in train, 1 in valid, 1 in test \(the first at train row 2, "
                                        r"column 0\); clean or impute them first$"):
        load_dataset("file", path=tmp_path / "n.npz", valid_size=3)


def test_a_training_split_of_one_class_is_refused_at_load(tmp_path, tiny):
    (tmp_path / "one.csv").write_text("a,kind\n" + "".join(f"{i},cat\n" for i in range(10)))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'one.csv'}: the training split holds class "
                                        "'cat' only; a classifier needs examples of 2 or more classes"):
        load_dataset("file", path=tmp_path / "one.csv", valid_size=2)
    folder, x, y = tiny          # a limit that leaves one image leaves one class
    with pytest.raises(DataError, match=rf"the training split holds class '{y[50]}' only"):
        load_dataset("mnist", data_dir=folder, valid_size=50, limit=1)


def test_fingerprint_is_per_split_equal_for_equal_arrays_and_changes_with_one_pixel(tiny):
    folder, x, y = tiny
    a = load_dataset("mnist", data_dir=folder, valid_size=50)
    b = load_dataset("mnist", data_dir=folder, valid_size=50)
    fa = a.fingerprint()
    assert set(fa) == {"train", "valid", "test"} and fa == b.fingerprint()
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in fa.values())
    assert len(set(fa.values())) == 3
    xs = x.copy()
    xs[120, 3, 4] ^= 1                                   # one pixel of one training image
    np.savez(folder / "mnist.npz", x_train=xs[:200], y_train=y[:200], x_test=xs[200:], y_test=y[200:])
    c = load_dataset("mnist", data_dir=folder, valid_size=50)
    fc = c.fingerprint()
    assert fc["train"] != fa["train"] and (fc["valid"], fc["test"]) == (fa["valid"], fa["test"])
    # the labels count too, and so do dtype and shape
    assert from_arrays(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1]).fingerprint() != \
        from_arrays(np.zeros((4, 2)), [1, 0, 0, 1], np.zeros((2, 2)), [0, 1]).fingerprint()
    assert from_arrays(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1]).fingerprint() != \
        from_arrays(np.zeros((2, 4)), [0, 1], np.zeros((1, 4)), [0]).fingerprint()


def test_fingerprint_is_cached_and_follows_standardization(tiny):
    folder, _, _ = tiny
    ds = load_dataset("mnist", data_dir=folder, valid_size=50)
    first = ds.fingerprint()
    ds.train.x[0, 1] = 5.0                 # the cache: the splits are final once fingerprinted
    assert ds.fingerprint() == first
    std = standardized(ds)                  # a new Dataset: its own fingerprint
    assert std.fingerprint()["train"] != first["train"]
    standardized(ds, inplace=True)          # the arrays rewritten in place: computed again
    assert ds.fingerprint() == std.fingerprint()

"""The real datasets: the embedded MNIST always, Fashion-MNIST and CIFAR-10 from ../shared/data.

Besides shapes and the reference statistics, the official raw files are rebuilt from the arrays
and hashed: that pins the IDX/CIFAR encoders, the CHW/HWC ordering and the registry's checksums
to the published values all at once.
"""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from dnnlab.data import dataset_status, load_dataset
from dnnlab.data.formats import encode_cifar, encode_idx, read_npz
from dnnlab.data.registry import SPECS, embedded_path

SHARED = Path(os.environ.get("DNNLAB_DATA_DIR") or Path(__file__).parents[1].parent / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "cifar10.npz").is_file(),
                                  reason=f"real datasets not found in {SHARED} (set DNNLAB_DATA_DIR "
                                         "to a folder holding fashion_mnist.npz and cifar10.npz)")


def channel_stats(*splits, channels):
    """Mean and std per channel (HWC: the channel is the fastest axis) over all rows of all splits."""
    total, sq, n = np.zeros(channels), np.zeros(channels), 0
    for x in splits:
        for s in range(0, len(x), 2048):
            v = x[s:s + 2048].reshape(-1, channels).astype(np.float64)
            total += v.sum(axis=0)
            sq += np.einsum("ij,ij->j", v, v)
            n += len(v)
    mean = total / n
    return mean, np.sqrt(sq / n - mean**2)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("DNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DNNLAB_MIRROR", "http://127.0.0.1:1/")


def test_embedded_mnist_matches_the_book_splits_and_reference_statistics(monkeypatch):
    monkeypatch.delenv("DNNLAB_DATA_DIR", raising=False)
    ds = load_dataset("mnist", download=False)
    assert ds.source == str(embedded_path("mnist"))
    assert (ds.train.x.shape, ds.valid.x.shape, ds.test.x.shape) == ((55000, 784), (5000, 784), (10000, 784))
    mean, std = channel_stats(ds.valid.x, ds.train.x, channels=1)
    assert abs(mean[0] - 0.1307) < 1e-3 and abs(std[0] - 0.3081) < 1e-3
    counts = np.bincount(np.concatenate([ds.valid.y, ds.train.y]))
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    a = load_dataset("mnist", classes=[0, 1, 2, 3, 4], download=False)
    b = load_dataset("mnist", classes=[5, 6, 7, 8, 9], per_class=100, seed=0, download=False)
    assert a.n_classes == b.n_classes == 5 and set(np.unique(a.test.y)) == {0, 1, 2, 3, 4}
    assert len(b.train) == 500 and np.bincount(b.train.y).tolist() == [100] * 5


def test_embedded_mnist_rebuilds_the_official_idx_files():
    arrays = read_npz(embedded_path("mnist"), "mnist.npz")
    spec = SPECS["mnist"]
    for name, key in zip(spec.checksums, ("x_train", "y_train", "x_test", "y_test")):
        assert hashlib.sha256(encode_idx(arrays[key])).hexdigest() == spec.checksums[name], name


@needs_shared
@pytest.mark.realdata
def test_fashion_mnist_from_the_shared_folder():
    ds = load_dataset("fashion-mnist", data_dir=SHARED, download=False)
    assert (len(ds.train), len(ds.valid), len(ds.test), ds.n_features) == (55000, 5000, 10000, 784)
    mean, std = channel_stats(ds.valid.x, ds.train.x, channels=1)
    assert abs(mean[0] - 0.2860) < 1e-3 and abs(std[0] - 0.3530) < 1e-3
    assert ds.class_names[9] == "Ankle boot"
    assert np.bincount(np.concatenate([ds.valid.y, ds.train.y])).tolist() == [6000] * 10


@needs_shared
@pytest.mark.realdata
@pytest.mark.slow
def test_fashion_mnist_idx_files_load_like_the_npz(tmp_path):
    """The four official .gz files (rebuilt byte-exact from the npz) give the same dataset."""
    arrays = read_npz(SHARED / "fashion_mnist.npz", "fashion_mnist.npz")
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name, key in zip(SPECS["fashion-mnist"].checksums, ("x_train", "y_train", "x_test", "y_test")):
        (folder / f"{name}.gz").write_bytes(gzip.compress(encode_idx(arrays[key]), compresslevel=1))
    from_idx = load_dataset("fashion-mnist", data_dir=tmp_path, limit=1000, download=False)
    from_npz = load_dataset("fashion-mnist", data_dir=SHARED, limit=1000, download=False)
    np.testing.assert_array_equal(from_idx.train.x, from_npz.train.x)
    np.testing.assert_array_equal(from_idx.test.y, from_npz.test.y)
    row = next(r for r in dataset_status(tmp_path) if r["name"] == "fashion-mnist")
    assert (row["checksum"], row["format"]) == ("ok", "idx")


@needs_shared
@pytest.mark.realdata
@pytest.mark.slow
def test_cifar10_from_the_shared_folder():
    ds = load_dataset("cifar10", data_dir=SHARED, download=False)
    shapes = (ds.train.x.shape, ds.valid.x.shape, ds.test.x.shape)
    assert shapes == ((45000, 3072), (5000, 3072), (10000, 3072))
    assert ds.image_shape == (32, 32, 3)
    mean, std = channel_stats(ds.valid.x, ds.train.x, channels=3)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-3)
    np.testing.assert_allclose(std, [0.2470, 0.2435, 0.2616], atol=1e-3)
    del ds
    st = load_dataset("cifar10", data_dir=SHARED, standardize=True, download=False)
    mean, std = channel_stats(st.train.x, channels=3072)
    np.testing.assert_allclose(mean, 0, atol=1e-4)
    np.testing.assert_allclose(std, 1, atol=1e-3)


@needs_shared
@pytest.mark.realdata
@pytest.mark.slow
def test_cifar10_rebuilds_the_official_binary_batches_and_status_is_ok():
    arrays = read_npz(SHARED / "cifar10.npz", "cifar10.npz")
    spec = SPECS["cifar10"]
    for i in range(5):
        part = slice(10000 * i, 10000 * (i + 1))
        data = encode_cifar(arrays["x_train"][part], arrays["y_train"][part])
        assert hashlib.md5(data).hexdigest() == spec.checksums[f"data_batch_{i + 1}.bin"]
    test_bytes = encode_cifar(arrays["x_test"], arrays["y_test"])
    assert hashlib.md5(test_bytes).hexdigest() == spec.checksums["test_batch.bin"]
    rows = {r["name"]: r for r in dataset_status(SHARED)}
    assert [rows[n]["checksum"] for n in ("mnist", "fashion-mnist", "cifar10")] == ["ok"] * 3

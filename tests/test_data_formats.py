"""Reading the official formats (IDX, CIFAR-10 binary, Keras npz) from a folder the user names."""

import gzip
import io
import struct
import tarfile

import numpy as np
import pytest

from dnnlab.data import dataset_status, formats, load_dataset
from dnnlab.data.formats import (
    check_tar_members,
    encode_cifar,
    encode_idx,
    gunzip,
    parse_cifar,
    parse_idx,
    read_cifar_tar,
)
from dnnlab.errors import DataError

RNG = np.random.default_rng(7)
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
BINS = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user cache, no env data dir, no network: only what each test puts in tmp_path."""
    monkeypatch.setenv("DNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("DNNLAB_MIRROR", "http://127.0.0.1:1/")


def tiny_images(n_train=40, n_test=20, shape=(5, 4)):
    """Labels cycle 0..9 so every class is present; non-square images catch H/W mix-ups."""
    return (RNG.integers(0, 256, (n_train, *shape), dtype=np.uint8), np.arange(n_train, dtype=np.uint8) % 10,
            RNG.integers(0, 256, (n_test, *shape), dtype=np.uint8), np.arange(n_test, dtype=np.uint8) % 10)


def write_idx(folder, arrays, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX_NAMES, arrays):
        data = encode_idx(arr)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


def cifar_bins(n_per_batch=3):
    x = RNG.integers(0, 256, (6 * n_per_batch, 32, 32, 3), dtype=np.uint8)
    y = np.arange(6 * n_per_batch, dtype=np.uint8) % 10
    part = [slice(i * n_per_batch, (i + 1) * n_per_batch) for i in range(len(BINS))]
    bins = {name: encode_cifar(x[part[i]], y[part[i]]) for i, name in enumerate(BINS)}
    return x, y, bins


def tar_bytes(members):
    """A tar.gz of {name: bytes}; a value ("symlink", target) makes a symbolic link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- the format codecs ---------------------------------------------------------------------------

def test_idx_round_trip_and_header():
    x = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    data = encode_idx(x)
    assert data[:4] == bytes([0, 0, 0x08, 3]) and data[4:8] == (3).to_bytes(4, "big")
    np.testing.assert_array_equal(parse_idx(data, "x"), x)
    f = np.array([1.5, -2.0], dtype=np.float32)
    np.testing.assert_array_equal(parse_idx(encode_idx(f), "f"), f)


def test_idx_truncated_or_foreign_is_rejected():
    data = encode_idx(np.zeros((3, 5, 4), np.uint8))
    with pytest.raises(DataError, match=r"announces shape \(3, 5, 4\) \(76 bytes\) but the file has 75"):
        parse_idx(data[:-1], "images")
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"PK\x03\x04" + data, "images")


def test_cifar_records_are_chw_and_become_hwc():
    x = RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    data = encode_cifar(x, [3, 9])
    assert len(data) == 2 * 3073 and data[0] == 3
    # the record stores the red plane first: byte 1 + c*1024 + h*32 + w is pixel (h, w, c)
    assert data[1 + 2 * 1024 + 5 * 32 + 7] == x[0, 5, 7, 2]
    images, labels = parse_cifar(data, "batch")
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, [3, 9])
    with pytest.raises(DataError, match="not a whole number of CIFAR-10 records"):
        parse_cifar(data[:-10], "batch")


@pytest.mark.parametrize("member", ["../evil.bin", "/etc/evil.bin", "a/../../evil.bin"])
def test_tar_paths_escaping_the_folder_are_refused(member):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes({member: b"x"}))) as tar:
        with pytest.raises(DataError, match="unsafe path"):
            check_tar_members(tar, "archive")


def test_tar_links_escaping_the_folder_are_refused_but_inner_links_pass():
    escaping = tar_bytes({"cifar-10-batches-bin/a.bin": ("symlink", "../../etc/passwd")})
    with tarfile.open(fileobj=io.BytesIO(escaping)) as tar:
        with pytest.raises(DataError, match="pointing outside the archive"):
            check_tar_members(tar, "archive")
    inner = tar_bytes({"d/a.bin": b"1", "d/b.bin": ("symlink", "a.bin")})
    with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
        assert [m.name for m in check_tar_members(tar, "archive")] == ["d/a.bin", "d/b.bin"]


def test_cifar_archive_missing_a_batch_is_rejected(tmp_path):
    _, _, bins = cifar_bins()
    del bins["test_batch.bin"]
    path = tmp_path / "cifar-10-binary.tar.gz"
    path.write_bytes(tar_bytes({f"cifar-10-batches-bin/{k}": v for k, v in bins.items()}))
    with pytest.raises(DataError, match="lacks test_batch.bin"):
        read_cifar_tar(path, tuple(BINS), "archive")


# -- loading from a user folder ------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["flat-gz", "subfolder-raw"])
def test_idx_files_load_from_data_dir(tmp_path, layout):
    arrays = tiny_images()
    folder = tmp_path / "data" / ("fashion-mnist" if layout == "subfolder-raw" else "")
    write_idx(folder, arrays, gz=layout == "flat-gz")
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "data", valid_size=10)
    assert ds.image_shape == (5, 4) and ds.n_features == 20 and ds.n_classes == 10
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (30, 10, 20)
    np.testing.assert_array_equal(ds.valid.x, arrays[0][:10].reshape(10, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.train.y, arrays[1][10:])
    np.testing.assert_array_equal(ds.test.y, arrays[3])
    assert ds.class_names[0] == "T-shirt/top" and ds.source == str(folder).rstrip("/")


def test_truncated_gzip_in_data_dir_is_a_clear_error(tmp_path):
    write_idx(tmp_path, tiny_images())
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is not a complete gzip file"):
        load_dataset("fashion-mnist", data_dir=tmp_path, valid_size=10)


def test_cifar_binary_archive_and_extracted_folder_give_the_keras_layout(tmp_path):
    x, y, bins = cifar_bins()
    archive = tmp_path / "a" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(tar_bytes({f"cifar-10-batches-bin/{k}": v for k, v in bins.items()}))
    extracted = tmp_path / "b" / "cifar10" / "cifar-10-batches-bin"
    extracted.mkdir(parents=True)
    for k, v in bins.items():
        (extracted / k).write_bytes(v)
    for folder in (tmp_path / "a", tmp_path / "b"):
        ds = load_dataset("cifar10", data_dir=folder, valid_size=5)
        assert ds.image_shape == (32, 32, 3) and ds.n_features == 3072
        assert (len(ds.train), len(ds.valid), len(ds.test)) == (10, 5, 3)
        # flattening is HWC, exactly like the Keras npz's x.reshape(N, -1)
        np.testing.assert_array_equal(ds.valid.x, x[:5].reshape(5, -1) / np.float32(255))
        np.testing.assert_array_equal(ds.test.x, x[15:].reshape(3, -1) / np.float32(255))
        np.testing.assert_array_equal(ds.train.y, y[5:15])
    assert ds.source == str(extracted)


def test_npz_with_unknown_hash_is_loaded_and_reported_not_checked(tmp_path):
    xtr, ytr, xte, yte = tiny_images(shape=(28, 28))
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ds = load_dataset("mnist", data_dir=tmp_path, valid_size=10)
    assert len(ds.train) == 30 and ds.source == str(tmp_path / "mnist.npz")
    row = next(r for r in dataset_status(tmp_path) if r["name"] == "mnist")
    assert (row["found"], row["checksum"], row["place"]) == (True, "not checked", "data_dir")
    assert row["size"] == (tmp_path / "mnist.npz").stat().st_size


def test_npz_with_pickled_objects_or_float_pixels_is_refused(tmp_path):
    xtr, ytr, xte, yte = tiny_images()
    np.savez(tmp_path / "mnist.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=ytr,
             x_test=xte, y_test=yte)
    with pytest.raises(DataError, match="holds pickled objects"):
        load_dataset("mnist", data_dir=tmp_path, valid_size=10)
    np.savez(tmp_path / "cifar10.npz", x_train=xtr.astype(np.float32), y_train=ytr, x_test=xte,
             y_test=yte)
    with pytest.raises(DataError, match="x_train has dtype float32, expected uint8"):
        load_dataset("cifar10", data_dir=tmp_path, valid_size=10)


def test_labels_beyond_the_classes_are_refused(tmp_path):
    xtr, ytr, xte, yte = tiny_images()
    ytr = ytr.copy()
    ytr[3] = 12
    write_idx(tmp_path, (xtr, ytr, xte, yte))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: the fashion-mnist train split "
                       r"\(y_train\): 1 of its 40 labels lies outside 0..9 \(the first, 12, at row 3\)"):
        load_dataset("fashion-mnist", data_dir=tmp_path, valid_size=10)


@pytest.mark.parametrize("classes", [None, [0, 9]])
def test_negative_labels_in_an_idx_file_are_refused_not_read_from_the_end(tmp_path, classes):
    """Before: int8 IDX labels of -1 loaded; with classes = [0, 9] they trained as class 9."""
    xtr, ytr, xte, yte = tiny_images()
    yte = yte.astype(np.int8)
    yte[[4, 6, 7]] = [-1, -2, 10]
    write_idx(tmp_path, (xtr, ytr, xte, yte))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: the mnist test split \(y_test\): "
                       r"3 of its 20 labels lie outside 0..9 \(the first, -1, at row 4\)"):
        load_dataset("mnist", data_dir=tmp_path, valid_size=10, classes=classes)


def test_cifar_labels_are_counted_per_split(tmp_path):
    x, y, bins = cifar_bins()
    bad = bytearray(bins["test_batch.bin"])
    bad[0] = 200                                   # the first record's label byte
    bins["test_batch.bin"] = bytes(bad)
    for k, v in bins.items():
        (tmp_path / k).write_bytes(v)
    with pytest.raises(DataError, match=r"the cifar10 test split \(y_test\): 1 of its 3 labels lies "
                       r"outside 0..9 \(the first, 200, at row 0\)"):
        load_dataset("cifar10", data_dir=tmp_path, valid_size=5)


def test_declared_sizes_are_checked_against_the_memory_before_allocating(tmp_path, monkeypatch):
    """An IDX header whose dims overflow int64, a gzip stream inflating past the memory, a tar
    member declaring more than the memory: each one line, nothing that size allocated."""
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)
    with pytest.raises(DataError, match=r"announces shape \(4294967295, 4294967295, 4294967295\)"):
        parse_idx(header + bytes(8), "f")              # np.prod in int64 wrapped around here
    monkeypatch.setattr(formats, "available_bytes", lambda: 10**6)
    with pytest.raises(DataError, match="bomb.gz inflates to more than the 0.0 GiB of memory available"):
        gunzip(gzip.compress(bytes(3 * 10**6)), "bomb.gz")
    _, _, bins = cifar_bins()
    bins["data_batch_1.bin"] = bytes(1001 * 3073)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(tar_bytes(bins))
    with pytest.raises(DataError, match="data_batch_1.bin needs 0.0 GiB of memory but 0.0 GiB"):
        read_cifar_tar(archive, tuple(BINS), "archive")

"""Download -> verify -> cache, against tiny official-format files served from 127.0.0.1.

The registry's checksums are swapped for the tiny files' own (``monkeypatch.setitem(SPECS, ...)``),
so the real code path runs: mirror URL, streaming with a length check, checksum before anything
lands in the cache, atomic writes, strict re-verification of cached files on every load.
"""

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from dnnlab.data import dataset_status, load_dataset
from dnnlab.data.formats import encode_cifar, encode_idx
from dnnlab.data.registry import CIFAR_FILES, IDX_FILES, SPECS
from dnnlab.errors import DataError

RNG = np.random.default_rng(3)


class Handler(SimpleHTTPRequestHandler):
    """Serves the mirror folder; records paths; can announce a longer body than it sends."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path in self.server.short:
            body = (self.server.root / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    server.root, server.requests, server.short = root, [], set()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("DNNLAB_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("DNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DNNLAB_DATA_DIR", raising=False)
    yield server
    server.shutdown()
    server.server_close()


def serve_fashion(server, monkeypatch):
    """Tiny Fashion-MNIST IDX .gz files on the mirror, with the registry trusting their sha256."""
    arrays = (RNG.integers(0, 256, (30, 6, 6), dtype=np.uint8), np.arange(30, dtype=np.uint8) % 10,
              RNG.integers(0, 256, (10, 6, 6), dtype=np.uint8), np.arange(10, dtype=np.uint8) % 10)
    folder = server.root / "fashion-mnist"
    folder.mkdir()
    sums = {}
    for name, arr in zip(IDX_FILES, arrays):
        raw = encode_idx(arr)
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        sums[name] = hashlib.sha256(raw).hexdigest()
    monkeypatch.setitem(SPECS, "fashion-mnist", dataclasses.replace(SPECS["fashion-mnist"], checksums=sums))
    return arrays


def cifar_archive(bins, extra=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = {**{f"cifar-10-batches-bin/{k}": v for k, v in bins.items()}, **(extra or {})}
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def serve_cifar(server, monkeypatch, extra=None):
    x = RNG.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    y = np.arange(12, dtype=np.uint8) % 10
    bins = {name: encode_cifar(x[2 * i:2 * i + 2], y[2 * i:2 * i + 2]) for i, name in enumerate(CIFAR_FILES)}
    (server.root / "cifar10").mkdir()
    (server.root / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(cifar_archive(bins, extra))
    sums = {k: hashlib.md5(v).hexdigest() for k, v in bins.items()}
    monkeypatch.setitem(SPECS, "cifar10", dataclasses.replace(SPECS["cifar10"], checksums=sums))
    return x, y


def test_idx_download_verifies_caches_and_is_reused(mirror, monkeypatch, tmp_path):
    arrays = serve_fashion(mirror, monkeypatch)
    ds = load_dataset("fashion-mnist", valid_size=10, progress=False)
    assert sorted(mirror.requests) == sorted(f"/fashion-mnist/{n}.gz" for n in IDX_FILES)
    cached = tmp_path / "cache" / "fashion-mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f"{n}.gz" for n in IDX_FILES)
    assert ds.source == str(cached) and (len(ds.train), len(ds.valid), len(ds.test)) == (20, 10, 10)
    np.testing.assert_array_equal(ds.test.x, arrays[2].reshape(10, -1) / np.float32(255))
    again = load_dataset("fashion-mnist", valid_size=10, progress=False)
    assert len(mirror.requests) == 4          # the second load came from the cache
    np.testing.assert_array_equal(again.train.x, ds.train.x)
    row = next(r for r in dataset_status() if r["name"] == "fashion-mnist")
    assert (row["checksum"], row["place"], row["location"]) == ("ok", "cache", str(cached))


def test_cifar_download_reads_the_binary_archive_and_caches_the_batches(mirror, monkeypatch, tmp_path):
    x, y = serve_cifar(mirror, monkeypatch)
    ds = load_dataset("cifar10", valid_size=4, progress=False)
    assert mirror.requests == ["/cifar10/cifar-10-binary.tar.gz"]
    folder = tmp_path / "cache" / "cifar10" / "cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CIFAR_FILES)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (6, 4, 2)
    np.testing.assert_array_equal(ds.train.x, x[4:10].reshape(6, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.test.y, y[10:])


@pytest.mark.parametrize("damage", ["tampered", "truncated-file", "short-body"])
def test_a_damaged_download_raises_and_caches_nothing(mirror, monkeypatch, tmp_path, damage):
    serve_fashion(mirror, monkeypatch)
    target = mirror.root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    if damage == "tampered":
        target.write_bytes(gzip.compress(encode_idx(np.full(10, 3, np.uint8))))
        expected = (r"t10k-labels-idx1-ubyte.gz from http://127.0.0.1:\d+/fashion-mnist/.* failed its "
                    "sha256 check")
    elif damage == "truncated-file":
        target.write_bytes(target.read_bytes()[:-8])
        expected = "not a complete gzip file"
    else:
        mirror.short.add("/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        expected = r"is truncated \(\d+ of \d+ bytes\); nothing was cached"
    with pytest.raises(DataError, match=expected):
        load_dataset("fashion-mnist", valid_size=10, progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_a_tampered_cifar_batch_caches_nothing(mirror, monkeypatch, tmp_path):
    serve_cifar(mirror, monkeypatch)
    spec = SPECS["cifar10"]
    monkeypatch.setitem(SPECS, "cifar10", dataclasses.replace(
        spec, checksums={**spec.checksums, "data_batch_3.bin": "0" * 32}))
    with pytest.raises(DataError, match="data_batch_3.bin in .* failed its md5 check"):
        load_dataset("cifar10", valid_size=4, progress=False)
    assert not any((tmp_path / "cache").rglob("*.bin"))


def test_an_archive_with_an_escaping_member_is_refused(mirror, monkeypatch, tmp_path):
    serve_cifar(mirror, monkeypatch, extra={"../../escaped.txt": b"gotcha"})
    with pytest.raises(DataError, match=r"unsafe path '../../escaped.txt'"):
        load_dataset("cifar10", valid_size=4, progress=False)
    assert not list(tmp_path.rglob("escaped.txt")) and not any((tmp_path / "cache").rglob("*.bin"))


def test_cached_files_are_verified_again_on_every_load(mirror, monkeypatch, tmp_path):
    serve_fashion(mirror, monkeypatch)
    load_dataset("fashion-mnist", valid_size=10, progress=False)
    cached = tmp_path / "cache" / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(cached.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10                       # one label changed, still a valid file
    cached.write_bytes(gzip.compress(bytes(raw)))
    st = cached.stat()
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte in .* does not match its official "
                                        r"sha256 checksum .* delete .* and load again"):
        load_dataset("fashion-mnist", valid_size=10, progress=False)
    row = next(r for r in dataset_status() if r["name"] == "fashion-mnist")
    assert row["checksum"] == "mismatch"


def test_offline_error_names_every_place_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DNNLAB_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("DNNLAB_MIRROR", "http://127.0.0.1:1/")       # nothing listens on port 1
    with pytest.raises(DataError, match=r"data_dir .*mine is not a folder; fix the path or leave it out"):
        load_dataset("mnist", data_dir=tmp_path / "mine")            # a typo is not papered over
    (tmp_path / "mine").mkdir()
    (tmp_path / "env").mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "mine", progress=False)
    msg = str(err.value)
    for part in ("dataset 'cifar10' not found", f"{tmp_path / 'mine'} (data_dir)",
                 f"{tmp_path / 'env'} ($DNNLAB_DATA_DIR)", f"{tmp_path / 'cache'} (cache)",
                 "the download failed: http://127.0.0.1:1/cifar10/cifar-10-binary.tar.gz could not be "
                 "reached",
                 "pass --data-dir DIR or set DNNLAB_DATA_DIR", "cifar10.npz or cifar-10-binary.tar.gz"):
        assert part in msg
    with pytest.raises(DataError, match=r"\$DNNLAB_DATA_DIR \(not set\).*downloading is turned off"):
        monkeypatch.delenv("DNNLAB_DATA_DIR")
        load_dataset("fashion-mnist", download=False)
    assert not (tmp_path / "cache").exists()


def test_lookup_order_prefers_data_dir_then_env_then_cache_then_package(monkeypatch, tmp_path):
    monkeypatch.setenv("DNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DNNLAB_MIRROR", "http://127.0.0.1:1/")
    monkeypatch.delenv("DNNLAB_DATA_DIR", raising=False)
    assert load_dataset("mnist", limit=10, download=False).source.endswith("embedded/mnist.npz")
    x = RNG.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = np.arange(20, dtype=np.uint8) % 10
    for where in ("cache", "env", "mine"):
        (tmp_path / where).mkdir()
        np.savez(tmp_path / where / "mnist.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    monkeypatch.setenv("DNNLAB_DATA_DIR", str(tmp_path / "env"))
    mine = load_dataset("mnist", data_dir=tmp_path / "mine", valid_size=5)
    assert mine.source == str(tmp_path / "mine" / "mnist.npz")
    assert load_dataset("mnist", valid_size=5).source == str(tmp_path / "env" / "mnist.npz")
    monkeypatch.delenv("DNNLAB_DATA_DIR")
    with pytest.raises(DataError, match="mnist.npz does not match its known sha256"):
        load_dataset("mnist", valid_size=5)     # the cache is strict: only verified copies live there

"""Readers (and writers) of the file formats the datasets come in. No pickle, ever.

- IDX (MNIST, Fashion-MNIST): a big-endian header (magic, dims) then raw values; gzip or not.
- CIFAR-10 *binary* release: records of 1 label byte + 3,072 pixel bytes in CHW order. The
  Python release is pickled and is never read: unpickling a downloaded file runs its code.
- Keras-style ``.npz``: ``x_train, y_train, x_test, y_test`` as uint8, read with
  ``allow_pickle=False``.

Every reader returns uint8 arrays in the Keras layout (images N x H x W or N x H x W x C, HWC)
and raises ``DataError`` naming the file when the bytes do not make sense. A size a file
declares (an IDX header's dims, an ``.npy`` header's shape, a tar member's size, what a gzip
stream inflates to) is checked against the bytes it holds and the memory available
(:func:`check_fits`) *before* anything that size is allocated, so a damaged or hostile header is
one line, not a ``MemoryError``; labels are checked against the classes by :func:`check_labels`.
The writers exist so tests can build tiny archives in the official formats and so the real
``.npz`` copies can be checked against the official raw-file checksums (by rebuilding the raw bytes).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from dnnlab.config import available_bytes
from dnnlab.errors import DataError

# IDX type codes -> numpy dtype (the values are big-endian)
IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"),
                                   0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
                                   0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
CIFAR_RECORD = 1 + 3 * 32 * 32
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
GIB = 2**30
_GUNZIP_CHUNK = 2**24   # gzip is inflated this many bytes at a time, counted against the memory


def check_fits(nbytes: int, what: str) -> None:
    """Refuse ``nbytes`` (a size a file declares) beyond the memory available, before allocating."""
    have = available_bytes()
    if have is not None and nbytes > have:
        raise DataError(f"{what} needs {nbytes / GIB:.1f} GiB of memory but {have / GIB:.1f} GiB "
                        "are available; it is damaged, or too large for this machine")


def check_labels(y: np.ndarray, n_classes: int, what: str) -> None:
    """Refuse labels outside 0..n_classes-1 (or fractional), counted, with the first one's row.

    Unchecked, a negative label indexes the class table from its end (it trains as another
    class) and one beyond the classes crashes the loss mid-run. ``what`` names the file and split.
    """
    ok = (y >= 0) & (y < n_classes)
    if y.dtype.kind == "f":
        ok &= y == np.floor(y)             # NaN compares False: counted as bad too
    bad = len(y) - int(np.count_nonzero(ok))
    if bad:
        first = int(np.argmin(ok))
        value = y[first].item()
        verb = "lies" if bad == 1 else "lie"
        raise DataError(f"{what}: {bad} of its {len(y)} labels {verb} outside 0..{n_classes - 1} "
                        f"(the first, {value!r}, at row {first}); it has {n_classes} classes, so "
                        "the file is damaged or holds another dataset")


def digest(data: bytes | memoryview, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def gunzip(data: bytes, what: str) -> bytes:
    """Decompress ``data`` if it is gzip (by its magic bytes), else return it unchanged.

    Inflated a chunk at a time and counted against the memory available: a few kilobytes of
    gzip may inflate to terabytes, and the stream says how much only at its end.
    """
    if data[:2] != b"\x1f\x8b":
        return data
    have = available_bytes()
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
            while chunk := g.read(_GUNZIP_CHUNK):
                out += chunk
                if have is not None and len(out) > have:
                    raise DataError(f"{what} inflates to more than the {have / GIB:.1f} GiB of "
                                    "memory available; it is damaged, or too large for this "
                                    "machine")
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{what} is not a complete gzip file ({e}); it is truncated or damaged, "
                        "delete it and fetch it again") from None
    return bytes(out)


def read_file(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when compressed."""
    try:
        check_fits(path.stat().st_size, str(path))
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return gunzip(data, str(path))


def parse_idx(data: bytes, what: str) -> np.ndarray:
    """Decode one IDX file; the result is a read-only view of ``data`` (no copy for uint8)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{what} is not an IDX file (bad magic number {data[:4].hex()})")
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{what}: IDX header is truncated or has no dimensions")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims) * dtype.itemsize    # exact: np.prod would wrap around
    if len(data) != expected:
        raise DataError(f"{what}: IDX header announces shape {dims} ({expected} bytes) but the file "
                        f"has {len(data)} bytes; it is truncated or damaged")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr if dtype == np.uint8 else arr.astype(dtype.newbyteorder("="))


def encode_idx(arr: np.ndarray) -> bytes:
    """The IDX bytes of ``arr`` (inverse of :func:`parse_idx`)."""
    for code, dtype in IDX_DTYPES.items():  # noqa: B007 (the code found is used after the loop)
        if (arr.dtype.kind, arr.dtype.itemsize) == (dtype.kind, dtype.itemsize):
            break
    else:
        raise DataError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def parse_cifar(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode CIFAR-10 binary records into (images N x 32 x 32 x 3 HWC, labels N)."""
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DataError(f"{what} has {len(data)} bytes, not a whole number of CIFAR-10 records of "
                        f"{CIFAR_RECORD} bytes; it is truncated or damaged")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)   # CHW -> HWC (a view)
    return x, rec[:, 0]


def encode_cifar(x: np.ndarray, y: np.ndarray) -> bytes:
    """CIFAR-10 binary records from HWC images (inverse of :func:`parse_cifar`)."""
    x = np.asarray(x, dtype=np.uint8).reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2)
    rec = np.concatenate([np.asarray(y, np.uint8).reshape(-1, 1), x.reshape(len(x), -1)], axis=1)
    return rec.tobytes()


def join_cifar(batches: list[bytes], what: str) -> dict[str, np.ndarray]:
    """The six CIFAR-10 batches (5 train, then test) as Keras-layout arrays."""
    train = [parse_cifar(b, f"{what} data_batch_{i + 1}") for i, b in enumerate(batches[:-1])]
    x_test, y_test = parse_cifar(batches[-1], f"{what} test_batch")
    return {"x_train": np.concatenate([x for x, _ in train]),
            "y_train": np.concatenate([y for _, y in train]),
            "x_test": np.ascontiguousarray(x_test), "y_test": y_test.copy()}


def read_npz(path: Path | io.BytesIO, what: str) -> dict[str, np.ndarray]:
    """A Keras-style ``.npz`` (uint8 arrays, no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{what} lacks {', '.join(missing)}; a dataset .npz needs "
                                f"{', '.join(NPZ_KEYS)} (the Keras layout)")
            arrays = {k: npz_array(z, k, what) for k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{what} is not a readable .npz file ({e}); it is truncated, damaged or "
                        "holds pickled objects (never loaded)") from None
    for k, v in arrays.items():
        if v.dtype != np.uint8:
            raise DataError(f"{what}: {k} has dtype {v.dtype}, expected uint8 (the Keras layout); "
                            "for other data use [data] name = \"file\" with path = this file")
    return arrays


def npz_array(z: np.lib.npyio.NpzFile, key: str, what: str) -> np.ndarray:
    """``z[key]``, once the shape its ``.npy`` header declares is checked against the bytes the
    member holds and the memory available: numpy allocates the declared shape before reading."""
    archive = z.zip
    assert archive is not None               # open until the NpzFile is closed
    name = f"{key}.npy" if f"{key}.npy" in archive.namelist() else key
    size = archive.getinfo(name).file_size   # what the member inflates to (zipfile stops there)
    with archive.open(name) as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        start = f.tell()
    if not dtype.hasobject:                  # object arrays are refused by allow_pickle=False
        need = math.prod(shape) * dtype.itemsize
        if need != size - start:
            raise DataError(f"{what}: {key} declares shape {shape} of {dtype} ({need} bytes) but "
                            f"holds {size - start} bytes; the file is truncated or damaged")
        check_fits(need, f"{what}: {key} (shape {shape})")
    return z[key]


def check_tar_members(tar: tarfile.TarFile, what: str) -> list[tarfile.TarInfo]:
    """All members, after refusing any that could write outside the extraction folder."""
    members = tar.getmembers()
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or m.name.startswith(("/", "\\")):
            raise DataError(f"{what} holds the unsafe path {m.name!r} (absolute or with '..'); "
                            "refusing to extract it")
        if m.issym() or m.islnk():
            target = PurePosixPath(m.linkname)
            resolved = target if m.islnk() else p.parent / target
            if target.is_absolute() or ".." in _normalise(resolved).parts:
                raise DataError(f"{what} holds a link {m.name!r} -> {m.linkname!r} pointing "
                                "outside the archive; refusing to extract it")
        elif m.isdev() or m.isfifo():
            raise DataError(f"{what} holds the device or fifo {m.name!r}; refusing to extract it")
    return members


def _normalise(p: PurePosixPath) -> PurePosixPath:
    """Resolve '.' and '..' lexically; a path that climbs out keeps a leading '..'."""
    out: list[str] = []
    for part in p.parts:
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            else:
                out.append("..")
        elif part != ".":
            out.append(part)
    return PurePosixPath(*out) if out else PurePosixPath(".")


def read_cifar_tar(source: Path | io.IOBase, names: tuple[str, ...], what: str) -> dict[str, bytes]:
    """The named ``.bin`` members of a CIFAR-10 binary archive, read in memory (never extracted)."""
    try:
        tar = tarfile.open(source, "r:*") if isinstance(source, Path) else \
            tarfile.open(fileobj=source, mode="r:*")
        with tar:
            found = {}
            for m in check_tar_members(tar, what):
                base = PurePosixPath(m.name).name
                if m.isfile() and base in names:
                    check_fits(m.size, f"{what}: {m.name}")
                    f = tar.extractfile(m)
                    assert f is not None
                    found[base] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{what} is not a readable tar.gz archive ({e}); it is truncated or "
                        "damaged, delete it and fetch it again") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{what} lacks {', '.join(missing)}; it is not the CIFAR-10 binary release")
    return found

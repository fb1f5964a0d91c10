"""Find a dataset's files, fetch them when absent, and decode them once per process.

Lookup order: an explicit ``data_dir``, ``$DNNLAB_DATA_DIR``, the user cache, the copy embedded
in the package (MNIST only), then a download into the cache. In each folder, and in a subfolder
named after the dataset (``mnist/``, ``fashion-mnist/``, ``cifar10/`` ...), the first of these
wins: the Keras ``.npz``; the four IDX files (``.gz`` or not); ``cifar-10-batches-bin/`` (or the
six ``.bin`` files themselves); ``cifar-10-binary.tar.gz``.

Files in the cache and the embedded copy are *ours*: their checksums are verified on every
decode and a mismatch is an error. Files a user points at are used as they are (they may be
their own data in the official format); ``dnnlab datasets`` shows whether they are the official
release. Decoded arrays are kept read-only in an LRU cache keyed on the files' mtime and size,
so a study loading CIFAR-10 five times decodes it once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dnnlab.data.download import Unreachable, download_dataset
from dnnlab.data.formats import (
    check_labels,
    digest,
    file_digest,
    join_cifar,
    parse_idx,
    read_cifar_tar,
    read_file,
    read_npz,
)
from dnnlab.data.registry import (
    CIFAR_ARCHIVE,
    CIFAR_FILES,
    CIFAR_FOLDER,
    IDX_FILES,
    SPECS,
    Spec,
    cache_root,
    download_files,
    embedded_path,
    file_url,
    search_dirs,
)
from dnnlab.errors import DataError


@dataclass(frozen=True)
class Found:
    """Where a dataset was found. ``strict``: checksums must match (our downloads, the package)."""
    spec: Spec
    kind: str                  # "npz" | "idx" | "cifar-folder" | "cifar-archive"
    path: Path                 # the .npz, the archive, or the folder holding the raw files
    files: tuple[Path, ...]    # every file that is read
    place: str                 # "data_dir" | "$DNNLAB_DATA_DIR" | "cache" | "package"
    strict: bool


class Raw(NamedTuple):
    """A dataset as released: uint8 images (N x H x W[x C]) and labels, read-only."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _labels_of_another_dataset(labels: Path, spec: Spec) -> bool:
    """MNIST and Fashion-MNIST share file names; a flat folder's train labels tell them apart."""
    try:
        h = digest(read_file(labels), "sha256")
    except DataError:
        return False
    return any(h == other.checksums[IDX_FILES[1]] for other in SPECS.values()
               if other.name != spec.name and other.format == "idx")


def find_in(folder: Path, spec: Spec, place: str, strict: bool) -> Found | None:
    """The first recognised copy of ``spec`` in ``folder`` or a subfolder named after it."""
    if not folder.is_dir():
        return None
    for d in (folder, *(folder / sub for sub in spec.folders)):
        if not d.is_dir():
            continue
        if (d / spec.npz).is_file():
            return Found(spec, "npz", d / spec.npz, (d / spec.npz,), place, strict)
        if spec.format == "idx":
            files = [f for n in IDX_FILES if (f := _idx_file(d, n)) is not None]
            if len(files) == len(IDX_FILES) and not (
                    d == folder and _labels_of_another_dataset(files[1], spec)):
                return Found(spec, "idx", d, tuple(files), place, strict)
        else:
            for bins in (d / CIFAR_FOLDER, d):
                if all((bins / n).is_file() for n in CIFAR_FILES):
                    return Found(spec, "cifar-folder", bins, tuple(bins / n for n in CIFAR_FILES),
                                 place, strict)
            if (d / CIFAR_ARCHIVE).is_file():
                return Found(spec, "cifar-archive", d / CIFAR_ARCHIVE, (d / CIFAR_ARCHIVE,),
                             place, strict)
    return None


def locate(spec: Spec, data_dir: str | Path | None = None) -> tuple[Found | None, list[str]]:
    """The first copy of ``spec`` in lookup order (no download), and the places looked at."""
    looked = []
    for place, folder in search_dirs(data_dir):
        if folder is None:
            if place != "data_dir":
                looked.append(f"{place} (not set)")
            continue
        if place != "cache" and not folder.is_dir():
            raise DataError(f"{place} {folder} is not a folder; fix the path or leave it out")
        found = find_in(folder, spec, place, strict=place == "cache")
        if found:
            return found, looked
        looked.append(f"{folder} ({place})")
    embedded = embedded_path(spec.name)
    if embedded is not None and embedded.is_file():
        return Found(spec, "npz", embedded, (embedded,), "package", True), looked
    return None, looked


def obtain(spec: Spec, data_dir: str | Path | None = None, *, download: bool = True,
           progress: bool = True) -> Found:
    """Locate ``spec``, downloading it into the cache when it is nowhere to be found."""
    found, looked = locate(spec, data_dir)
    if found:
        return found
    if download:
        try:
            folder = download_dataset(spec, cache_root(), progress=progress)
        except Unreachable as e:
            reason = f"the download failed: {e}"
        else:
            found = find_in(folder.parent, spec, "cache", strict=True)
            if found:
                return found
            reason = f"the download to {folder} left no readable copy"
    else:
        reason = "downloading is turned off (download=False)"
    official = ("cifar-10-binary.tar.gz" if spec.format == "cifar"
                else "the four official IDX .gz files")
    urls = ", ".join(file_url(spec, f) for f in download_files(spec))
    raise DataError(f"dataset {spec.name!r} not found: looked in {'; '.join(looked)}, and {reason}; "
                    f"pass --data-dir DIR or set DNNLAB_DATA_DIR to a folder holding {spec.npz} or "
                    f"{official} (from {urls})")


def _check(data: bytes, found: Found, name: str) -> None:
    expected = found.spec.checksums[name]
    if found.strict and digest(data, found.spec.digest) != expected:
        raise DataError(f"{name} in {found.path} does not match its official {found.spec.digest} "
                        f"checksum (damaged or altered); delete {found.path} and load again to "
                        "download a fresh copy")


def decode(found: Found) -> Raw:
    """The arrays of ``found``, decoded once per (files, mtime, size) in this process."""
    try:
        stamps = tuple((st.st_mtime_ns, st.st_size) for st in (p.stat() for p in found.files))
    except OSError as e:
        raise DataError(f"cannot read {found.path}: {e}") from None
    return _decode(found, stamps)


@functools.lru_cache(maxsize=3)
def _decode(found: Found, stamps: tuple[Any, ...]) -> Raw:
    spec, what = found.spec, str(found.path)
    if found.kind == "npz":
        if found.strict and file_digest(found.path, "sha256") != spec.npz_sha256:
            raise DataError(f"{found.path} does not match its known sha256 (damaged or altered); "
                            "reinstall dnnlab or delete the file and load again")
        arrays = read_npz(found.path, what)
    elif found.kind == "idx":
        parsed = []
        for name, path in zip(IDX_FILES, found.files):
            data = read_file(path)
            _check(data, found, name)
            parsed.append(parse_idx(data, str(path)))
        arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), parsed))
    else:
        if found.kind == "cifar-folder":
            blobs = {name: read_file(path) for name, path in zip(CIFAR_FILES, found.files)}
        else:
            blobs = read_cifar_tar(found.path, CIFAR_FILES, what)
        for name, data in blobs.items():
            _check(data, found, name)
        arrays = join_cifar([blobs[n] for n in CIFAR_FILES], what)
    raw = Raw(**arrays)
    _validate(raw, found, what)
    for a in raw:
        a.flags.writeable = False
    return raw


def _validate(raw: Raw, found: Found, what: str) -> None:
    """Shapes, counts and labels of the decoded arrays (labels named by the file that holds them)."""
    spec = found.spec
    label_files = {"train": IDX_FILES[1], "test": IDX_FILES[3]}
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.ndim < 3 or y.ndim != 1:
            raise DataError(f"{what}: x_{split} should hold images (N x H x W) and y_{split} labels "
                            f"(N), got shapes {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{what}: {len(x)} {split} images but {len(y)} {split} labels")
        if len(y) == 0:
            raise DataError(f"{what}: the {split} set is empty")
        labels = found.files[IDX_FILES.index(label_files[split])] if found.kind == "idx" else what
        check_labels(y, len(spec.class_names), f"{labels}: the {spec.name} {split} split (y_{split})")
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        raise DataError(f"{what}: train images are {raw.x_train.shape[1:]} but test images are "
                        f"{raw.x_test.shape[1:]}")

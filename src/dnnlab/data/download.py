"""Download a dataset from its official source into the user cache, verified before it lands.

Every file is fetched into memory (or an anonymous temporary file for the 170 MB CIFAR archive),
checked against the official checksum, and only when *all* files of the dataset pass is anything
written to the cache, each file atomically. A tampered, truncated or unreadable download raises
``DataError`` and leaves the cache as it was. CIFAR-10 comes as a tar.gz whose members are checked
(no absolute paths, no '..', no links leading out) and whose six ``.bin`` files are read from the
archive and written one by one: nothing is ever extracted wholesale, and nothing is unpickled.
"""

from __future__ import annotations

import http.client
import io
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tqdm import tqdm  # the plain bar: tqdm.auto warns at import in a notebook without ipywidgets

from dnnlab.data.formats import digest, gunzip, read_cifar_tar
from dnnlab.data.registry import CIFAR_FILES, CIFAR_FOLDER, Spec, download_files, file_url
from dnnlab.errors import DataError
from dnnlab.io import write_bytes

TIMEOUT_S = 30


class Unreachable(Exception):
    """The source could not be reached (offline, DNS, HTTP error): the caller reports where it looked."""


def fetch(url: str, dest: IO[bytes], *, progress: bool = True, desc: str = "") -> int:
    """Stream ``url`` into ``dest`` with a progress bar; returns the number of bytes received."""
    request = urllib.request.Request(url, headers={"User-Agent": "dnnlab"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or url,
                      disable=not progress, leave=False) as bar:
                while chunk := response.read(1 << 20):
                    dest.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise Unreachable(f"{url} answered HTTP {e.code} {e.reason}") from None
    except http.client.IncompleteRead as e:
        raise DataError(f"the download of {url} stopped early ({len(e.partial)} bytes received); "
                        "nothing was cached, try again") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise Unreachable(f"{url} could not be reached ({reason})") from None
    if total is not None and received != total:
        raise DataError(f"the download of {url} is truncated ({received} of {total} bytes); "
                        "nothing was cached, try again")
    return received


def verify(data: bytes, expected: str, algorithm: str, what: str) -> None:
    got = digest(data, algorithm)
    if got != expected:
        raise DataError(f"{what} failed its {algorithm} check (expected {expected}, got {got}): "
                        "the file is corrupt or was tampered with; nothing was cached")


def download_dataset(spec: Spec, cache_dir: Path, *, progress: bool = True) -> Path:
    """Fetch, verify and cache ``spec``'s official files; returns its folder in the cache."""
    folder = cache_dir / spec.name
    verified: dict[Path, bytes] = {}
    if spec.format == "idx":
        for file_name in download_files(spec):
            url = file_url(spec, file_name)
            buf = io.BytesIO()
            fetch(url, buf, progress=progress, desc=f"{spec.name} {file_name}")
            raw = gunzip(buf.getvalue(), f"{file_name} from {url}")
            verify(raw, spec.checksums[file_name.removesuffix(".gz")], spec.digest,
                   f"{file_name} from {url}")
            verified[folder / file_name] = buf.getvalue()
    else:
        (file_name,) = download_files(spec)
        url = file_url(spec, file_name)
        with tempfile.TemporaryFile() as tmp:
            fetch(url, tmp, progress=progress, desc=f"{spec.name} {file_name}")
            tmp.seek(0)
            members = read_cifar_tar(tmp, CIFAR_FILES, f"{file_name} from {url}")
        for name in CIFAR_FILES:
            verify(members[name], spec.checksums[name], spec.digest, f"{name} in {url}")
            verified[folder / CIFAR_FOLDER / name] = members[name]
    for path, data in verified.items():
        write_bytes(path, data)
    return folder

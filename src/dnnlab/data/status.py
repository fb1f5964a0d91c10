"""``dnnlab datasets``: which datasets are available, where, and whether they are the official release.

Unlike loading, the status check hashes every file it finds, wherever it is: "ok" means the
bytes are the official release (or the known-good Keras copy), "mismatch" means a file dnnlab
itself keeps (cache, package) is damaged, "not checked" means a file you supplied differs from
the official one (your own data in the same format is fine, it just is not vouched for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnnlab.data.formats import digest, file_digest, read_cifar_tar, read_file
from dnnlab.data.locate import Found, locate
from dnnlab.data.registry import CIFAR_FILES, IDX_FILES, SPECS, cache_root
from dnnlab.errors import DataError


def _matches(found: Found) -> bool:
    spec = found.spec
    try:
        if found.kind == "npz":
            return file_digest(found.path, "sha256") == spec.npz_sha256
        if found.kind == "idx":
            blobs = {n: read_file(p) for n, p in zip(IDX_FILES, found.files)}
        elif found.kind == "cifar-folder":
            blobs = {n: read_file(p) for n, p in zip(CIFAR_FILES, found.files)}
        else:
            blobs = read_cifar_tar(found.path, CIFAR_FILES, str(found.path))
    except (DataError, OSError):
        return False
    return all(digest(data, spec.digest) == spec.checksums[n] for n, data in blobs.items())


def dataset_status(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per dataset: name, found, location, place, format, checksum, size (bytes)."""
    rows = []
    for name, spec in SPECS.items():
        found, _ = locate(spec, data_dir)
        if found is None:
            rows.append({"name": name, "found": False, "location": "", "place": "",
                         "format": "", "checksum": "missing", "size": 0})
            continue
        ok = _matches(found)
        rows.append({"name": name, "found": True, "location": str(found.path), "place": found.place,
                     "format": found.kind,
                     "checksum": "ok" if ok else "mismatch" if found.strict else "not checked",
                     "size": sum(p.stat().st_size for p in found.files)})
    rows.append({"name": "synthetic", "found": True, "location": "generated", "place": "",
                 "format": "generated", "checksum": "not checked", "size": 0})
    return rows


def _size(n: int) -> str:
    return "-" if n == 0 else f"{n / 1e6:.1f} MB"


def format_status(rows: list[dict[str, Any]]) -> str:
    """The table ``dnnlab datasets`` prints, with a hint on how to get what is missing."""
    header = ("dataset", "found", "checksum", "size", "location")
    table = [header] + [(r["name"], "yes" if r["found"] else "no", r["checksum"], _size(r["size"]),
                         f"{r['location']} ({r['place']})" if r["place"] else r["location"] or "-")
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in table]
    missing = [r["name"] for r in rows if not r["found"]]
    if missing:
        lines.append(f"missing: {', '.join(missing)}; they are downloaded into {cache_root()} on "
                     "first use, or pass --data-dir DIR / set DNNLAB_DATA_DIR to a folder holding "
                     "the .npz or the official files")
    if any(r["checksum"] == "mismatch" for r in rows):
        lines.append("mismatch: a cached or packaged file is damaged; delete it to download it again")
    return "\n".join(lines)

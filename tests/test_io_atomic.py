import errno
import os

import pytest

from dnnlab import io
from dnnlab.errors import DnnlabError


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.json"
    io.write_json(p, {"x": 1})
    io.write_json(p, {"x": 2})
    assert io.read_json(p) == {"x": 2}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]


def test_failure_at_rename_keeps_previous_file_and_says_so(tmp_path, monkeypatch):
    p = tmp_path / "metrics.csv"
    io.write_text(p, "old\n")

    def boom(src, dst):
        raise OSError(errno.EIO, "injected failure at rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(DnnlabError, match="the previous file is intact"):
        io.write_text(p, "new\n")
    assert p.read_text() == "old\n"
    assert [f.name for f in tmp_path.iterdir()] == ["metrics.csv"]


def test_disk_full_while_writing_keeps_previous_file(tmp_path):
    p = tmp_path / "model.safetensors"
    io.write_bytes(p, b"v1")

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DnnlabError, match="No space left on device.*previous file is intact"):
        io.atomic_write(p, full)
    assert p.read_bytes() == b"v1"
    assert len(list(tmp_path.iterdir())) == 1


def test_damaged_json_is_named(tmp_path):
    p = tmp_path / "summary.json"
    p.write_text("{not json")
    with pytest.raises(DnnlabError, match="summary.json is not valid JSON"):
        io.read_json(p)

"""grownet.files: atomic writes and one-line read errors."""

from __future__ import annotations

import os
import stat

import pytest

from grownet.errors import ConfigError
from grownet.files import atomic_write_text, read_text


def test_atomic_write_replaces_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640


def test_read_text_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: no such recipe$"):
        read_text(tmp_path / "missing.toml", error=ConfigError, missing="no such recipe")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"bad\.toml: cannot read recipe \("):
        read_text(tmp_path / "bad.toml", error=ConfigError, missing="-", what=" recipe")

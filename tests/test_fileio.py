"""Atomic outputs get ordinary permissions and leave nothing behind on failure."""

import os
import stat

import pytest

from optsar_plugin.fileio import atomic_write_bytes, atomic_write_text, publish, temp_path


def test_published_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "report.html"
        atomic_write_text(target, "<html></html>")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # mkstemp alone would give 0600
        assert target.read_text() == "<html></html>"
    finally:
        os.umask(old)


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, None)  # fails inside the write, after the temporary file exists
    assert os.listdir(tmp_path) == []


def test_temp_path_without_create_is_free_for_drivers(tmp_path):
    tmp = temp_path(tmp_path / "points.gpkg", create=False)
    assert not os.path.exists(tmp) and tmp.endswith(".gpkg")
    open(tmp, "w").close()
    publish(tmp, tmp_path / "points.gpkg")
    assert os.listdir(tmp_path) == ["points.gpkg"]

"""``atomic.write_text`` and ``write_bytes``: the one atomic write the lab and its benchmarks use."""

import os

import pytest

from backdoor_core.atomic import write_text


def test_writes_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "new" / "folder" / "result.json"
    assert write_text(path, "first é") == path  # the folder is created; UTF-8
    assert path.read_text(encoding="utf-8") == "first é"
    write_text(str(path), "second")  # a str path works too; the file is replaced whole
    assert path.read_text() == "second"
    assert sorted(os.listdir(path.parent)) == ["result.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.html"
    target.mkdir()  # a folder where the file should go (e.g. a mistaken --out): refused, nothing deleted
    (target / "keep.txt").write_text("user data")
    with pytest.raises(OSError):
        write_text(target, "<html>")
    assert (target / "keep.txt").read_text() == "user data"
    assert sorted(os.listdir(tmp_path)) == ["out.html"]
    old = tmp_path / "old.json"
    old.write_text("old")
    with pytest.raises(TypeError):
        write_text(old, None)  # the text fails to write: the old file stays whole
    assert old.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["old.json", "out.html"]


def test_bytes_are_written_whole_and_a_failed_write_keeps_the_old_file(tmp_path):
    from backdoor_core.atomic import write_bytes

    path = tmp_path / "scores.npz"
    assert write_bytes(path, b"\x00\x01first") == path
    assert path.read_bytes() == b"\x00\x01first"
    with pytest.raises(TypeError):
        write_bytes(path, "not bytes")  # the data fails to write: the old file stays whole, no temporary
    assert path.read_bytes() == b"\x00\x01first" and sorted(os.listdir(tmp_path)) == ["scores.npz"]
